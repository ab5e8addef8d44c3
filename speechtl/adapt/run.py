"""``speechtl adapt``: data -> baseline evaluation -> training -> adapted evaluation -> report -> export.

A :class:`Run` is resolved once (normalizer, terms, model, route, evaluation sets) and then goes through
its stages; :func:`adapt` is the job. Everything of a run lives in ``runs/<name>/``: ``config.yaml`` (the
resolved recipe), ``data/<source>/`` (prepared manifests and splits, :mod:`speechtl.adapt.data`),
``checkpoints/``, ``eval/<system>/<set>/``, ``report.{json,md,html}`` and ``export/{hf,ct2}``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from speechtl.adapt import heldout
from speechtl.adapt.ctc import beam_decoder, hf_baseline, transcriber
from speechtl.adapt.data import RunData, prepare_data
from speechtl.adapt.exporting import export_all
from speechtl.adapt.progress import progress_printer
from speechtl.adapt.prompting import choose_prompt, without_prompt
from speechtl.audio import load as load_audio
from speechtl.cache import encoder_cache_dir
from speechtl.config import RecipeConfig
from speechtl.data.manifest import read_manifest, write_jsonl
from speechtl.evaluate.decode import evaluate_manifest
from speechtl.evaluate.langid import language_id
from speechtl.evaluate.longform import PAUSE_S as LONGFORM_PAUSE_S
from speechtl.evaluate.longform import LongForm, join_utterances
from speechtl.evaluate.cached_decodes import DecodeCache, decode_cache_root, weights_key
from speechtl.evaluate.nonspeech import evaluate_nonspeech
from speechtl.evaluate.scoring import EvaluationError, read_terms, scoring_normalizer
from speechtl.evaluate.timestamps import timestamp_check, timestamp_line
from speechtl.export.parity import ExportParityError
from speechtl.fsio import atomic_write_text
from speechtl.models.encoder_cache import CachedEncoderTranscriber
from speechtl.models.registry import resolve
from speechtl.models.wav2vec2 import CtcASR, architecture
from speechtl.runtimes import load_runtime
from speechtl.models.whisper import NO_SPEECH_RULE, WhisperASR
from speechtl.report.data import enrich, eval_dir, read_history, subset_wer
from speechtl.report.write import write_report
from speechtl.text.repetition import COMPRESSION_RATIO_LIMIT
from speechtl.train.config import resolve_mixed_precision
from speechtl.train.interpolate import DevScore, Interpolator, select_alpha
from speechtl.train.loop import train
from speechtl.train.parts import TrainResult
from speechtl.train.strategies import frozen_prefix

log = logging.getLogger(__name__)

Notify = Callable[[str], None]
NONSPEECH_SET = "nonspeech/test"  # how the no-speech test set is named in the run's files and report
NONSPEECH_DEV = "nonspeech/dev"  # ... and its dev set, one of the sets alpha is chosen on


class Run:
    """One ``speechtl adapt`` run of ``recipe`` in ``runs_dir/<recipe.name>``."""

    def __init__(self, recipe: RecipeConfig, resolved: dict[str, Any], runs_dir: Path, *, main: bool = True,
                 notify: Notify = log.info) -> None:
        self.recipe, self.resolved, self.main, self.notify = recipe, resolved, main, notify
        self.run_dir = runs_dir / recipe.name
        self.normalizer = scoring_normalizer(recipe.lang)
        self.terms = read_terms(recipe.eval.terms) if recipe.eval.terms else None
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.evaluations: dict[str, Any] = {}
        self.nonspeech: dict[str, Any] = {}  # system -> evaluate_nonspeech metrics on data.nonspeech_test
        self.longform: dict[str, Any] = {}  # system -> long-form against clip-by-clip WER of the primary set
        self.langid: dict[str, Any] = {}  # system -> set -> language detected without forcing (evaluate.langid)
        self.prompting: dict[str, Any] | None = None  # the term prompt's dev choice (eval.term_prompt: dev)
        self.term_prompt = ""  # the term list as the Whisper prompt (WhisperASR.term_prompt), set by the baseline
        self.prompt_left_out: list[str] = []  # ... and the terms that did not fit in it
        self.data: RunData
        self.model: Any = None
        self.route = ""

    def _timed(self, key: str, started: float) -> None:
        self.timings[key] = time.perf_counter() - started

    # ------------------------------------------------------------------ stages

    def prepare(self) -> None:
        """Write the resolved config and prepare the data (main process; the others read its files)."""
        t = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.main:
            atomic_write_text(self.run_dir / "config.yaml",
                              yaml.safe_dump(self.resolved, sort_keys=False, allow_unicode=True))
        self.data = prepare_data(self.recipe, self.run_dir, self.notify)
        self._timed("data_s", t)

    def resolve_model(self) -> None:
        t = time.perf_counter()
        self.model = resolve(self.recipe.model)
        train_route = self.recipe.train.route
        self.route = architecture(self.model.hf_dir) if train_route == "auto" else train_route
        self.notify(f"model {self.recipe.model}: {self.model.hf_dir} ({self.model.source}); route {self.route}")
        self._timed("model_s", t)

    def baseline(self, resume: bool) -> None:
        """The unadapted model on every set (main process); a re-run trains afresh unless it resumes."""
        checkpoints = self.run_dir / "checkpoints"
        if checkpoints.exists() and not resume:
            self.notify(f"train: removing the earlier run's {checkpoints} (pass --resume to continue it)")
            shutil.rmtree(checkpoints)
        t = time.perf_counter()
        if architecture(self.model.hf_dir) == "ctc":  # a wav2vec2-family checkpoint: its own CTC head, if any
            own = hf_baseline(self.model.hf_dir, self.recipe.lang, self.notify)
            if own is not None:
                self.evaluations["baseline"] = self._evaluate_all(own, "baseline", self.data.sets, self.recipe.model)
            self._timed("baseline_eval_s", t)
            return
        # Whisper, also under the CTC route (a CTC head on its encoder): the unadapted Whisper is the baseline
        base_asr = WhisperASR.load(self.model.hf_dir)
        if self.terms:
            self.term_prompt, self.prompt_left_out = base_asr.term_prompt(self.terms)
            if self.prompt_left_out:
                self.notify(f"term prompt: {len(self.prompt_left_out)} of {len(self.terms)} terms do not fit "
                            f"Whisper's {base_asr.prompt_limit}-token prompt and are left out of it: "
                            + ", ".join(self.prompt_left_out))
        greedy = self._transcriber(base_asr, num_beams=1)  # the transcript check decodes greedily, so the sets it
        if hasattr(greedy, "prepare"):                     # keeps do not depend on eval.num_beams
            self._cache_encoder(greedy)
        greedy = self._decode_cache(greedy, base_asr)
        self._timed("encoder_cache_s", t)
        t = time.perf_counter()
        replays = heldout.verify_sources(self.recipe, greedy, self.data.sets, self.normalizer, self.notify)
        baseline = greedy
        if self.recipe.eval.num_beams > 1:  # the check's transcripts are not the baseline's beam-search ones
            baseline, replays = self._decode_cache(self._transcriber(base_asr), base_asr), {}
        self.evaluations["baseline"] = self._evaluate_all(baseline, "baseline", self.data.sets, self.recipe.model,
                                                          replays=replays)
        self._evaluate_longform(base_asr, "baseline", self.recipe.model)
        self._language_id(baseline, "baseline")
        if self.recipe.eval.prompt_with_terms and self.terms:
            # zero-shot row: what Whisper's text prompt alone buys. The term list is domain specific, so only the
            # domain sets are decoded again (the report copes with a system that lacks the other sets).
            refs = (self.recipe.eval.primary, *self.recipe.eval.test_sets)
            self.evaluations["baseline+prompt"] = self._evaluate_all(
                baseline, "baseline+prompt", {ref: self.data.sets[ref] for ref in refs}, self.recipe.model,
                prompt=self.term_prompt)
        self._tell_stores("baseline", [baseline])
        self._timed("baseline_eval_s", t)

    def _cache_encoder(self, baseline: CachedEncoderTranscriber) -> None:
        """One encoder pass for every utterance of the run."""
        paths = (self.data.train_input, self.data.dev, *self.data.sets.values())
        everything = [u for path in paths for u in read_manifest(path)]
        unique = list({u.id + "\0" + u.audio_filepath: u for u in everything}.values())
        stats = baseline.prepare(unique, progress=progress_printer("encoder cache", self.notify))
        self.notify(f"encoder cache: {len(unique)} utterances, {stats.built} computed in {stats.build_s:.0f} s "
                    f"({baseline.precision}) -> {baseline.root}")

    def train(self, resume: bool) -> TrainResult:
        t = time.perf_counter()
        recipe = self.recipe
        config = dataclasses.replace(recipe.train, lang=recipe.lang, seed=recipe.seed, route=self.route,
                                     cache_dir=str(encoder_cache_dir(recipe.train.cache_dir, self.run_dir)))
        if self.route == "seq2seq" and config.prompt_share > 0 and not config.prompt.strip():
            # the baseline built the term prompt on the main process; the other processes build it here
            prompt = self.term_prompt or WhisperASR.load(self.model.hf_dir).term_prompt(self.terms)[0]
            config = dataclasses.replace(config, prompt=prompt)
            self.notify(f"train: {config.prompt_share:.0%} of the targets conditioned on the term prompt "
                        f"({len(self.terms)} terms)")
        result = train(self.model.hf_dir, self.data.train_input, self.data.dev, self.run_dir / "checkpoints", config,
                       self.normalizer, resume=resume)
        dev = (f"best dev WER {result.best_dev_wer:.1%}" if result.best_dev_wer is not None
               else "no dev evaluation during training (the last step)")
        self.notify(f"train {config.strategy}: {result.steps} steps, {result.wall_time_s:.0f} s, {dev} -> "
                    f"{result.best_dir}")
        self._timed("train_s", t)
        return result

    def adapted(self, result: TrainResult) -> tuple[Path, dict[str, Any] | None, dict[str, Any] | None]:
        """Interpolation (Whisper) and the adapted evaluation: the adapted model's directory, the interpolation
        choice and the CTC decoding settings (None where they do not apply)."""
        interpolation = decoding = None
        adapted_dir = result.best_dir
        if result.route == "seq2seq" and self.recipe.interpolate.enabled:
            t = time.perf_counter()
            interpolation = self._interpolate(result)
            adapted_dir = Path(interpolation["model_dir"])
            self._timed("interpolate_s", t)
        t = time.perf_counter()
        if result.route == "ctc":
            decoding = self._evaluate_ctc(result)
        else:
            adapted_asr = WhisperASR.load(adapted_dir)
            adapted = self._decode_cache(self._transcriber(adapted_asr), adapted_asr)
            if self.recipe.eval.term_prompt == "dev" and self.terms:
                self.prompting = self._choose_prompt(adapted, interpolation)
            self.evaluations["adapted"] = self._evaluate_all(adapted, "adapted", self.data.sets, str(adapted_dir))
            self._evaluate_longform(adapted_asr, "adapted", str(adapted_dir))
            self._language_id(adapted, "adapted")
            if self.prompting and self.prompting["kept"]:
                self.evaluations["adapted+prompt"] = self._evaluate_all(
                    adapted, "adapted+prompt", self.data.sets, str(adapted_dir), prompt=self.term_prompt)
            self._tell_stores("adapted", [adapted])
        self._timed("adapted_eval_s", t)
        return adapted_dir, interpolation, decoding

    def report(self, result: TrainResult, adapted_dir: Path, interpolation: dict[str, Any] | None,
               decoding: dict[str, Any] | None) -> dict[str, Any]:
        """The payload, the exports with their parity checks, and the report files; returns the payload."""
        payload = {
            "recipe": self.resolved,
            "model": {"name": self.recipe.model, "hf_dir": str(self.model.hf_dir), "source": self.model.source},
            "data": {name: {k: str(v) for k, v in paths.items()} for name, paths in self.data.prepared.items()},
            "normalizer": {"name": self.normalizer.name, "settings": self.normalizer.settings},
            "primary": self.recipe.eval.primary,
            "forgetting": self.recipe.eval.forgetting,
            "evaluations": self.evaluations,
            "train": asdict(result),
            "train_history": read_history(result.history_path),
            "decoding": decoding,
            "interpolation": interpolation,
            "adapted_dir": str(adapted_dir),
            "relations": heldout.relations(self.data.train, self.data.sets),
            "nonspeech": {"manifest": str(self.data.nonspeech_test), "systems": self.nonspeech} if self.nonspeech
            else None,
            "longform": self.longform or None,
            "language_id": self.langid or None,
            "prompting": self.prompting,
        }
        # paired bootstrap comparisons, aligned examples: read back from eval/<system>/<set>/hypotheses.jsonl
        payload = enrich(payload, self.run_dir, seed=self.recipe.seed)
        t = time.perf_counter()
        payload["exports"] = export_all(self.recipe, self.run_dir, self.data.sets[self.recipe.eval.primary],
                                        result.route, adapted_dir, payload, self.notify)
        self._timed("export_s", t)
        t = time.perf_counter()
        payload["timestamps"] = self._check_timestamps(payload["exports"].get("ct2"))
        self._timed("timestamps_s", t)
        self._timed("total_s", self.started)
        payload["timings_s"] = {k: round(v, 1) for k, v in self.timings.items()}
        paths = write_report(self.run_dir, payload)
        for ref, comparisons in payload["comparisons"].items():
            for c in comparisons:
                self.notify(f"paired {c['b']} vs {c['a']} on {ref}: WER {100 * c['diff']:+.1f} pts "
                            f"[{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}], P(better) {c['prob_b_better']:.0%}")
        self.notify(f"report: {paths['md']}, {paths['html']}")
        failed = [e["error"] for e in payload["exports"].values() if e.get("error")]
        if failed:  # after the report: the run's results stand, the export does not ship
            raise ExportParityError("; ".join(failed))
        return payload

    # ------------------------------------------------------------------ pieces of the stages

    def _transcriber(self, asr: Any, num_beams: int | None = None) -> Any:
        """What evaluation decodes with: cached outputs of the encoder prefix the strategy never changes; beams of
        ``num_beams`` (default eval.num_beams; it also becomes ``asr``'s own width)."""
        train_config = self.recipe.train
        asr.num_beams = num_beams or self.recipe.eval.num_beams
        stage = frozen_prefix(train_config.strategy, len(asr.model.model.encoder.layers), train_config.top_k)
        if stage is None or stage < 1 or not train_config.cache_encoder:
            return asr
        precision = resolve_mixed_precision(train_config.mixed_precision, asr.device)
        cache_dir = encoder_cache_dir(train_config.cache_dir, self.run_dir)
        return CachedEncoderTranscriber(asr, cache_dir, precision=precision, stage=stage,
                                        batch_size=train_config.cache_batch_size,
                                        num_beams=asr.num_beams)

    def _decode_cache(self, transcriber: Any, asr: Any, **settings: Any) -> Any:
        """``transcriber`` behind the machine-wide store of the decodes of ``asr``'s weights as they are now (a re-run
        with the same weights reads them back); ``settings``: decoding settings ``transcriber`` does not carry."""
        if not self.recipe.eval.decode_cache:
            return transcriber
        settings = {"kind": type(transcriber).__name__, "no_speech_gate": getattr(asr, "no_speech_gate", None)
                    and NO_SPEECH_RULE,
                    **{k: getattr(transcriber, k, None) for k in ("stage", "precision", "num_beams", "max_new_tokens")},
                    **settings}
        if settings["num_beams"] > 1:  # beams fall back to greedy decoding on a looping transcript
            settings["loop_fallback"] = COMPRESSION_RATIO_LIMIT
        return DecodeCache(transcriber, weights_key(asr.model), settings)

    def _tell_stores(self, what: str, stores: Any) -> None:
        """How many decodes (transcripts, detected languages) of ``what`` the stores among ``stores`` read back."""
        stores = [s for s in stores if isinstance(s, DecodeCache)]
        hits, misses = sum(s.hits for s in stores), sum(s.misses for s in stores)
        if stores:
            self.notify(f"decode cache: {hits} of {hits + misses} {what} decodes read back, {misses} decoded -> "
                        f"{decode_cache_root()}")

    def _evaluate_all(self, asr: Any, system: str, sets: dict[str, Path], model_name: str, *,
                      prompt: str | None = None, replays: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Score ``asr`` on every set (``replays``: set -> a transcriber holding this very model's hypotheses)."""
        results = {}
        for ref, manifest in sets.items():
            metrics = evaluate_manifest(
                (replays or {}).get(ref, asr), manifest, eval_dir(self.run_dir, system, ref), lang=self.recipe.lang,
                normalizer=self.normalizer, prompt=prompt, terms=self.terms, batch_size=self.recipe.eval.batch_size,
                model_name=model_name,
                extra={"system": system, "encoder_cache_precision": getattr(asr, "precision", None)})
            results[ref] = metrics
            self._check_plausible(metrics, system, ref)
            recall = metrics["terms"].get("recall") if metrics.get("terms") else None
            self.notify(f"eval {system:<16} {ref:<20} WER {metrics['wer']:.1%}  CER {metrics['cer']:.1%}"
                        + (f"  term recall {recall:.1%}" if recall is not None else ""))
        if self.data.nonspeech_test is not None and system not in ("fine-tuned", "baseline+prompt"):
            self._evaluate_nonspeech(asr, system, model_name, prompt)
        return results

    def _evaluate_longform(self, asr: Any, system: str, model_name: str) -> None:
        """The primary set joined into 1-3 min recordings (the same for every system), each decoded whole."""
        ref = self.recipe.eval.primary
        if not self.recipe.eval.longform:
            return
        manifest = self.run_dir / "data" / "longform" / f"{ref.replace('/', '-')}.jsonl"
        if system == "baseline" or not manifest.is_file():  # built afresh by each run's baseline
            recordings = join_utterances(read_manifest(self.data.sets[ref]), manifest.parent / "audio",
                                         seed=self.recipe.seed)
            write_jsonl(manifest, recordings)
        longform = LongForm(asr)  # the same recordings every run (join_audio keeps their bytes): stored
        longform = self._decode_cache(longform, asr, num_beams=asr.num_beams, window_s=longform.window_s)
        m = evaluate_manifest(longform, manifest, eval_dir(self.run_dir, system, f"{ref}+longform"),
                              lang=self.recipe.lang, normalizer=self.normalizer, batch_size=self.recipe.eval.batch_size,
                              model_name=f"{model_name}, long-form")
        clip = self.evaluations[system][ref]["wer"]
        self.longform[system] = {"set": ref, "manifest": str(manifest), "recordings": m["num_utts"],
                                 "minutes": round(m["audio_duration_s"] / 60, 1), "wer": m["wer"],
                                 "wer_ci95": m["wer_ci95"], "clip_wer": clip}
        stored = f"; {longform.hits} of {m['num_utts']} decodes read back" if getattr(longform, "hits", 0) else ""
        self.notify(f"eval {system:<16} {ref + ' long-form':<20} WER {m['wer']:.1%} over {m['num_utts']} recordings "
                    f"({m['audio_duration_s'] / 60:.1f} min; clip by clip {clip:.1%}{stored})")

    def _check_timestamps(self, ct2: dict[str, Any] | None) -> dict[str, Any] | None:
        """Segment timestamps through faster-whisper on the first long-form recordings: the ct2 export and,
        where the base model has a CTranslate2 copy, the baseline (evaluate.timestamps)."""
        count = self.recipe.eval.timestamp_recordings
        manifest = Path(self.longform["baseline"]["manifest"]) if "baseline" in self.longform else None
        if not count or not ct2 or ct2.get("error") or manifest is None:
            return None
        recordings = read_manifest(manifest)[:count]
        clips = read_manifest(self.data.sets[self.recipe.eval.primary])
        systems = {"baseline": self.model.ct2_dir, "adapted": Path(ct2["path"])}
        out: dict[str, Any] = {"set": self.recipe.eval.primary, "compute_type": self.recipe.export.ct2_compute_type,
                               "systems": {}}
        for system, model_dir in systems.items():
            if model_dir is None:
                continue
            runtime = load_runtime(model_dir, lang=self.recipe.lang, compute_type=self.recipe.export.ct2_compute_type)
            try:
                check = timestamp_check(runtime, recordings, clips, lang=self.recipe.lang, pause_s=LONGFORM_PAUSE_S,
                                        load=load_audio, normalizer=self.normalizer)
            except ValueError as exc:  # e.g. a model faster-whisper takes for English-only: the run's results stand
                out["systems"][system] = {"error": str(exc)}
                self.notify(f"timestamps {system:<9} not checked: {exc}")
                continue
            ids = {i for rec in recordings for i in rec.extra["joined_ids"]}
            check["clip_wer"] = subset_wer(eval_dir(self.run_dir, system, self.recipe.eval.primary), ids)
            out["systems"][system] = check
            self.notify(f"timestamps {system:<9} {timestamp_line(check)} (PyTorch clip by clip on these "
                        f"utterances: {check['clip_wer']:.1%})")
        return out

    def _evaluate_nonspeech(self, asr: Any, system: str, model_name: str, prompt: str | None) -> None:
        """The held-out clips without speech: how many get words (each one a reply to nobody)."""
        m = evaluate_nonspeech(asr, self.data.nonspeech_test, eval_dir(self.run_dir, system, NONSPEECH_SET),
                               lang=self.recipe.lang, normalizer=self.normalizer,
                               batch_size=self.recipe.eval.batch_size, model_name=model_name, prompt=prompt)
        self.nonspeech[system] = m
        words = ", ".join(f"{w} ({n})" for w, n in m["top_words"][:5]) or "none"
        self.notify(f"eval {system:<16} {NONSPEECH_SET:<20} words on {m['clips_with_words']} of {m['num_clips']} "
                    f"clips without speech ({m['share_with_words']:.0%}); most written: {words}")

    def _check_plausible(self, metrics: dict[str, Any], system: str, ref: str) -> None:
        """Fail the run on a WER no working model gives: over ``eval.max_wer``, or not one word output."""
        limit = self.recipe.eval.max_wer
        if limit is None:
            return
        silent = metrics["hits"] + metrics["substitutions"] + metrics["insertions"] == 0
        if metrics["wer"] > limit or silent:
            where = eval_dir(self.run_dir, system, ref) / "hypotheses.jsonl"
            what = ("not one word in any hypothesis" if silent
                    else f"WER {metrics['wer']:.1%} over eval.max_wer {limit:.0%}")
            raise EvaluationError(f"eval {system} on {ref}: {what}: a broken model or cache, not a result; see "
                                  f"{where} (set eval.max_wer: null to score such a model anyway)")

    def _evaluate_ctc(self, result: TrainResult) -> dict[str, Any] | None:
        """The adapted CTC model greedy ("adapted") and with the dev-tuned LM beam search ("adapted+lm")."""
        recipe, sets, model_name = self.recipe, self.data.sets, str(result.best_dir)
        asr = CtcASR.load(result.best_dir, lang=recipe.lang)
        target = transcriber(asr, result, recipe, self.run_dir)
        self.evaluations["adapted"] = self._evaluate_all(target, "adapted", sets, model_name)
        if not recipe.decode.lm:
            return None
        decoding = beam_decoder(asr, target, recipe, self.run_dir, self.data.train, self.data.dev,
                                list(sets.values()), self.normalizer, self.terms, self.notify)
        self.evaluations["adapted+lm"] = self._evaluate_all(target, "adapted+lm", sets, model_name)
        return decoding

    def _language_id(self, detector: Any, system: str) -> None:
        """The run's language detected by ``detector`` (not forced) on the primary and forgetting sets' first clips."""
        sets = {ref: self.data.sets[ref] for ref in (self.recipe.eval.primary, self.recipe.eval.forgetting) if ref}
        self.langid[system] = found = language_id(detector, sets, self.recipe.lang)
        if found:
            self.notify(f"language id {system:<11} " + ", ".join(
                f"{ref} {m['correct']}/{m['clips']} {self.recipe.lang}" for ref, m in found.items()))

    def _interpolate(self, result: TrainResult) -> dict[str, Any]:
        """WiSE-FT: alpha chosen on the dev sets; the chosen model is written to ``checkpoints/interpolated``.

        When alpha < 1 the trained checkpoint itself is also scored, as system "fine-tuned", on the primary and
        forgetting-check sets: the report's trade-off between domain and unseen-speaker WER.
        """
        recipe, dev_sets = self.recipe, self._dev_sets()
        interpolator = Interpolator(self.model.hf_dir, result.best_dir)
        target = self._transcriber(interpolator.asr)  # the frozen prefix is the same at every alpha
        stores: dict[float, Any] = {}  # alpha -> the decode store of its weights

        def at(alpha: float) -> Any:
            interpolator.at(alpha)
            if alpha not in stores:  # hashing the weights once per alpha
                stores[alpha] = self._decode_cache(target, interpolator.asr)
            return stores[alpha]

        def dev_score(alpha: float, ref: str, manifest: Path) -> DevScore:
            out_dir = self.run_dir / "interpolate" / f"alpha-{alpha:.2f}" / ref.replace("/", "_")
            return self._dev_score(at(alpha), ref, manifest, out_dir, f"alpha {alpha}")

        choice = select_alpha(recipe.interpolate.alphas, dev_sets, dev_score, search=recipe.interpolate.search)
        alpha = choice["alpha"]
        self.notify(f"interpolate: alpha {alpha:.2f} of the adapted weights, by the WER of the dev sets "
                    f"joined ({', '.join(dev_sets)}; "
                    + ", ".join(f"{c['alpha']:.2f}: {c['pooled_dev_wer']:.1%}" for c in choice["candidates"]) + ")")
        choice["model_dir"] = str(interpolator.save(alpha, self.run_dir / "checkpoints" / "interpolated"))
        atomic_write_text(self.run_dir / "interpolate" / "choice.json", json.dumps(choice, indent=2) + "\n")
        if alpha < 1:
            tradeoff = {ref: self.data.sets[ref] for ref in (recipe.eval.primary, recipe.eval.forgetting) if ref}
            self.evaluations["fine-tuned"] = self._evaluate_all(at(1.0), "fine-tuned", tradeoff, str(result.best_dir))
        self._tell_stores("interpolation and fine-tuned", stores.values())
        return choice

    def _dev_sets(self) -> dict[str, Path]:
        """The dev sets settings are chosen on: each source's dev split and the no-speech dev clips."""
        dev_sets = dict(self.data.dev_sets)
        if self.data.nonspeech_dev is not None:  # its words count as insertions
            dev_sets[NONSPEECH_DEV] = self.data.nonspeech_dev
        return dev_sets

    def _dev_score(self, decoder: Any, ref: str, manifest: Path, out_dir: Path, label: str,
                   prompt: str | None = None) -> DevScore:
        """One dev set's errors and reference words (every word written on a clip without speech is an error)."""
        kwargs = {"lang": self.recipe.lang, "normalizer": self.normalizer, "batch_size": self.recipe.eval.batch_size,
                  "model_name": label, "prompt": prompt}
        if ref == NONSPEECH_DEV:
            m = evaluate_nonspeech(decoder, manifest, out_dir, **kwargs)
            return DevScore(m["share_with_words"], m["num_words"], 0)
        m = evaluate_manifest(decoder, manifest, out_dir, **kwargs)
        return DevScore(m["wer"], m["substitutions"] + m["deletions"] + m["insertions"], m["num_ref_words"])

    def _choose_prompt(self, adapted: Any, interpolation: dict[str, Any] | None) -> dict[str, Any]:
        """The term list as the adapted model's prompt, kept where it lowers the joined dev WER (adapt.prompting)."""
        def score(ref: str, manifest: Path, prompt: str | None) -> DevScore:
            out_dir = self.run_dir / "prompt" / ("with" if prompt else "without") / ref.replace("/", "_")
            return self._dev_score(adapted, ref, manifest, out_dir, "adapted+prompt" if prompt else "adapted", prompt)

        out = choose_prompt(self._dev_sets(), score, self.term_prompt, without_prompt(interpolation), NONSPEECH_DEV)
        out["terms_left_out"] = self.prompt_left_out
        out["text"] = self.term_prompt  # what the export's users (speechtl serve) pass as the prompt
        joined = out["pooled_dev_wer"]
        self.notify(f"term prompt: joined dev WER {joined['without']:.1%} without, {joined['with']:.1%} with the "
                    f"{len(self.terms or ())} terms as prompt -> {'kept' if out['kept'] else 'not kept'}: "
                    f"{out['reason']}")
        return out


def adapt(recipe: RecipeConfig, resolved: dict[str, Any], runs_dir: Path, *, resume: bool = False,
          notify: Notify = log.info) -> dict[str, Any]:
    """Run the whole job; returns the report payload (empty on processes other than the main one).

    Under ``accelerate launch`` every process runs this function: the main process prepares data, resolves
    the model and evaluates; the others reuse its files, and all of them train together.
    """
    from accelerate import PartialState

    state = PartialState()
    run = Run(recipe, resolved, runs_dir, main=state.is_main_process,
              notify=notify if state.is_main_process else log.debug)
    with state.main_process_first():
        run.prepare()
    with state.main_process_first():
        run.resolve_model()
    if run.main:
        run.baseline(resume)
    state.wait_for_everyone()
    result = run.train(resume)
    if not run.main:
        return {}
    adapted_dir, interpolation, decoding = run.adapted(result)
    return run.report(result, adapted_dir, interpolation, decoding)
