"""``speechtl adapt``: data -> baseline evaluation -> training -> adapted evaluation -> report -> export.

Everything of a run lives in ``runs/<name>/``: ``config.yaml`` (the resolved
recipe), ``data/<source>/`` (prepared manifests and splits), ``checkpoints/``,
``eval/<system>/<set>/``, ``report.{json,md,html}`` and ``export/{hf,ct2}``.
Prepared data is reused when its source config is unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from speechtl.adapt import heldout
from speechtl.adapt.ctc import beam_decoder, hf_baseline, transcriber
from speechtl.config import ConfigError, RecipeConfig, SourceConfig
from speechtl.data.importers import read_corpus
from speechtl.data.importers.asterisk import DEFAULT_VOICE, default_root
from speechtl.data.manifest import read_manifest, sentence_key, write_jsonl
from speechtl.data.prepare import PrepareConfig, prepare, write_splits
from speechtl.data.synth.channel import ChannelConfig
from speechtl.data.synth.corpus import SynthConfig, read_sentences, synthesize_corpus
from speechtl.evaluate.decode import evaluate_manifest
from speechtl.evaluate.scoring import read_terms, scoring_normalizer
from speechtl.export.parity import ExportParityError, export
from speechtl.fsio import atomic_write_text
from speechtl.models.encoder_cache import CachedEncoderTranscriber
from speechtl.models.registry import resolve
from speechtl.models.wav2vec2 import CtcASR, architecture
from speechtl.models.whisper import WhisperASR
from speechtl.report.data import enrich, eval_dir, read_history
from speechtl.report.write import write_report
from speechtl.train.config import resolve_mixed_precision
from speechtl.train.interpolate import Interpolator, select_alpha
from speechtl.train.loop import train
from speechtl.train.strategies import frozen_prefix

log = logging.getLogger(__name__)

DATA_VERSION = 1  # bump when prepared data from an older speechtl must not be reused

Notify = Callable[[str], None]


# source fields that only choose what the run takes from prepared data, or check it later: changing them
# re-prepares nothing
_COMBINE_FIELDS = ("use", "max_train_utterances", "drop_train_sentences", "verify_transcripts")


def _fingerprint(source: SourceConfig, lang: str, held_out: dict[str, str] | None) -> str:
    fields = {k: v for k, v in asdict(source).items() if k not in _COMBINE_FIELDS}
    if fields["sentences_from"] is None:  # fields added later stay out while unset: earlier preparations stay valid
        del fields["sentences_from"]
    key: dict[str, Any] = {"source": fields, "lang": lang, "v": DATA_VERSION}
    if held_out is not None:
        key["held_out"] = held_out
    payload = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_source(source: SourceConfig, recipe: RecipeConfig, out_dir: Path, notify: Notify,
                   prepared: dict[str, dict[str, Path]] | None = None) -> dict[str, Path]:
    """Prepare and split one source into ``out_dir``; reuse it when the config is unchanged.

    ``prepared`` holds the sources prepared before this one (what ``sentences_from`` reads).
    """

    held_out = heldout.held_out_sentences(source, prepared or {})
    fingerprint = _fingerprint(source, recipe.lang, held_out)
    stamp = out_dir / "source.json"
    splits = {name: out_dir / f"{name}.jsonl" for name in ("train", "dev", "test")}
    if stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        if all(p.is_file() for p in splits.values()):
            notify(f"data {source.name}: reusing {out_dir}")
            return splits
    started = time.perf_counter()
    if source.kind == "corpus":
        items = _corpus_items(source)
    elif held_out is not None:
        sentences = [(f"{split_name}-{i:04d}", text) for i, (text, split_name) in enumerate(held_out.items())]
        notify(f"data {source.name}: the {len(sentences)} dev and test sentences of {source.sentences_from}")
        items = _synth_items(source, recipe, out_dir, notify, sentences)
    else:
        items = _synth_items(source, recipe, out_dir, notify)
    config = PrepareConfig(lang=recipe.lang, max_reject_share=source.max_reject_share, num_workers=recipe.num_workers)
    result = prepare(items, out_dir, config, extra_summary={"source": source.name, "kind": source.kind})
    if held_out is not None:  # the splits of the source the sentences come from
        split_summary = heldout.write_splits_like(result.utterances, held_out, out_dir)
    else:
        split_summary = write_splits(result.utterances, out_dir, source.split)
    s = result.summary
    notify(
        f"data {source.name}: {s['utterances']} utterances ({s['hours']:.2f} h, {s['speakers']} speakers), "
        f"{s['rejected']} rejected -> {out_dir / 'quarantine.jsonl'}; "
        + ", ".join(f"{k} {split_summary[k]['utterances']}" for k in ("train", "dev", "test"))
    )
    atomic_write_text(
        stamp,
        json.dumps({"fingerprint": fingerprint, "seconds": round(time.perf_counter() - started, 1)}) + "\n",
    )
    return splits


def _corpus_items(source: SourceConfig) -> list:
    if source.path is None:
        if source.format != "asterisk":
            raise ConfigError(f"data.sources.{source.name}.path: required for format {source.format!r}")

        path: Path = default_root(source.options.get("voice", DEFAULT_VOICE))
    else:
        path = Path(source.path)
    return list(read_corpus(path, format=source.format, **source.options))


def pick_sentences(sentences: list[tuple[str, str]], source: SourceConfig, seed: int) -> list[tuple[str, str]]:
    """The seeded subset of ``source.max_sentences`` sentences, in file order.

    With ``source.terms``, sentences holding each term (matched as whole
    words, case and accents aside) are taken first, in seeded order, until the
    term has ``min_term_sentences`` of them or none are left; random sentences
    fill the rest. A subset too small for that is an error, not a silent cut.
    """
    n = source.max_sentences
    rng = random.Random(f"{seed}:{source.name}")
    if not source.terms or not source.min_term_sentences:
        keep = set(rng.sample(range(len(sentences)), n))
        return [s for i, s in enumerate(sentences) if i in keep]

    order = list(range(len(sentences)))
    rng.shuffle(order)
    keys = [f" {sentence_key(text)} " for _, text in sentences]
    chosen: set[int] = set()
    for term in read_terms(source.terms):
        key = f" {sentence_key(term)} "
        have = sum(key in keys[i] for i in chosen)
        for i in order:
            if have >= source.min_term_sentences:
                break
            if i not in chosen and key in keys[i]:
                chosen.add(i)
                have += 1
    if len(chosen) > n:
        raise ConfigError(f"data.sources.{source.name}.max_sentences: {n} sentences cannot hold "
                          f"{source.min_term_sentences} sentences of each term in {source.terms} "
                          f"({len(chosen)} needed)")
    chosen.update([i for i in order if i not in chosen][: n - len(chosen)])
    return [s for i, s in enumerate(sentences) if i in chosen]


def _synth_items(source: SourceConfig, recipe: RecipeConfig, out_dir: Path, notify: Notify,
                 sentences: list[tuple[str, str]] | None = None) -> list:

    if sentences is None:
        sentences = [s for path in source.sentences for s in read_sentences(Path(path))]
    if source.max_sentences is not None and source.max_sentences < len(sentences):
        sentences = pick_sentences(sentences, source, recipe.seed)
    channel = None
    if source.channel is not None:
        channel = ChannelConfig(**asdict(source.channel), seed=recipe.seed)
    config = SynthConfig(
        engine=source.engine,
        lang=recipe.lang,
        num_voices=source.num_voices,
        voices_per_sentence=source.voices_per_sentence,
        seed=recipe.seed,
        num_workers=recipe.num_workers,
        channel=channel,
    )
    notify(f"data {source.name}: synthesizing {len(sentences)} sentences with {source.engine}")
    holdout = None if source.sentences_from else source.split
    return synthesize_corpus(sentences, out_dir / "raw", config, holdout=holdout)


def _combine(recipe: RecipeConfig, prepared: dict[str, dict[str, Path]], split_name: str, out: Path) -> Path:
    utts = []
    for source in recipe.sources:
        if split_name in source.use:
            part = read_manifest(prepared[source.name][split_name])
            n = source.max_train_utterances
            if split_name == "train" and n is not None and n < len(part):
                keep = set(random.Random(f"{recipe.seed}:{source.name}:train").sample(range(len(part)), n))
                part = [u for i, u in enumerate(part) if i in keep]
            utts.extend(part)
    if not utts:
        raise ConfigError(f"no source uses its {split_name} split; set data.sources.NAME.use")
    write_jsonl(out, utts)
    return out


def _dev_sets(recipe: RecipeConfig, prepared: dict[str, dict[str, Path]]) -> dict[str, Path]:
    """``<source>/dev`` -> manifest, for every source whose dev split the run uses (what alpha is chosen on)."""
    return {f"{s.name}/dev": prepared[s.name]["dev"] for s in recipe.sources if "dev" in s.use}


def _eval_sets(recipe: RecipeConfig, prepared: dict[str, dict[str, Path]]) -> dict[str, Path]:
    refs = [recipe.eval.primary, *recipe.eval.test_sets]
    if recipe.eval.forgetting:
        refs.append(recipe.eval.forgetting)
    out = {}
    for ref in dict.fromkeys(refs):
        source, _, split_name = ref.partition("/")
        out[ref] = prepared[source][split_name]
    return out


def _evaluate_all(asr: Any, system: str, sets: dict[str, Path], run_dir: Path, recipe: RecipeConfig,
                  model_name: str, prompt: str | None, notify: Notify,
                  replays: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Score ``asr`` on every set (``replays``: set -> a transcriber holding this very model's hypotheses)."""

    terms = read_terms(recipe.eval.terms) if recipe.eval.terms else None
    normalizer = scoring_normalizer(recipe.lang)
    results = {}
    for ref, manifest in sets.items():
        out_dir = eval_dir(run_dir, system, ref)
        metrics = evaluate_manifest(
            (replays or {}).get(ref, asr), manifest, out_dir, lang=recipe.lang, normalizer=normalizer, prompt=prompt,
            terms=terms, batch_size=recipe.eval.batch_size, model_name=model_name,
            extra={"system": system, "encoder_cache_precision": getattr(asr, "precision", None)},
        )  # fmt: skip
        results[ref] = metrics
        recall = metrics.get("terms", {}).get("recall") if metrics.get("terms") else None
        notify(
            f"eval {system:<16} {ref:<20} WER {metrics['wer']:.1%}  CER {metrics['cer']:.1%}"
            + (f"  term recall {recall:.1%}" if recall is not None else "")
        )
    return results


def _transcriber(asr: Any, recipe: RecipeConfig, run_dir: Path) -> Any:
    """What evaluation decodes with: cached outputs of the encoder prefix the strategy never changes."""

    train = recipe.train
    stage = frozen_prefix(train.strategy, len(asr.model.model.encoder.layers), train.top_k)
    if stage is None or stage < 1 or not train.cache_encoder:
        return asr

    precision = resolve_mixed_precision(train.mixed_precision, asr.device)
    cache_dir = Path(train.cache_dir) if train.cache_dir else run_dir / "encoder_cache"
    return CachedEncoderTranscriber(asr, cache_dir, precision=precision, stage=stage,
                                    batch_size=train.cache_batch_size, num_beams=recipe.eval.num_beams)


def adapt(recipe: RecipeConfig, resolved: dict[str, Any], runs_dir: Path, *, resume: bool = False,
          notify: Notify = log.info) -> dict[str, Any]:
    """Run the whole job; returns the report payload (empty on processes other than the main one)."""

    from accelerate import PartialState

    # Under `accelerate launch` every process runs this function: the main process prepares data, resolves
    # the model and evaluates; the others reuse its files, and all of them train together.
    state = PartialState()
    main = state.is_main_process
    if not main:
        notify = log.debug
    started = time.perf_counter()
    timings: dict[str, float] = {}
    run_dir = runs_dir / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))

    t = time.perf_counter()
    with state.main_process_first():
        prepared: dict[str, dict[str, Path]] = {}
        for s in recipe.sources:
            prepared[s.name] = prepare_source(s, recipe, run_dir / "data" / s.name, notify, prepared)
        train_manifest = _combine(recipe, prepared, "train", run_dir / "data" / "train.jsonl")
        heldout.drop_train_sentences(recipe, prepared, train_manifest, notify)
        dev_manifest = _combine(recipe, prepared, "dev", run_dir / "data" / "dev.jsonl")
        sets = _eval_sets(recipe, prepared)
        heldout.check_disjoint(train_manifest, {**sets, **_dev_sets(recipe, prepared)})
    timings["data_s"] = time.perf_counter() - t

    t = time.perf_counter()
    with state.main_process_first():
        model = resolve(recipe.model)

    route = architecture(model.hf_dir) if recipe.train.route == "auto" else recipe.train.route
    notify(f"model {recipe.model}: {model.hf_dir} ({model.source}); route {route}")
    timings["model_s"] = time.perf_counter() - t

    evaluations: dict[str, Any] = {}
    if main:
        checkpoints = run_dir / "checkpoints"
        if checkpoints.exists() and not resume:  # a re-run trains afresh; --resume continues instead
            notify(f"train: removing the earlier run's {checkpoints} (pass --resume to continue it)")
            shutil.rmtree(checkpoints)
        _baseline(recipe, model, run_dir, train_manifest, dev_manifest, sets, evaluations, timings, notify)
    state.wait_for_everyone()

    t = time.perf_counter()
    train_config = dataclasses.replace(recipe.train, lang=recipe.lang, seed=recipe.seed, route=route,
                                       cache_dir=recipe.train.cache_dir or str(run_dir / "encoder_cache"))
    result = train(
        model.hf_dir, train_manifest, dev_manifest, run_dir / "checkpoints", train_config,
        scoring_normalizer(recipe.lang), resume=resume,
    )  # fmt: skip
    notify(
        f"train {train_config.strategy}: {result.steps} steps, {result.wall_time_s:.0f} s, "
        f"best dev WER {result.best_dev_wer:.1%} -> {result.best_dir}"
    )
    timings["train_s"] = time.perf_counter() - t
    if not main:
        return {}
    return _finish(recipe, resolved, model, run_dir, prepared, (train_manifest, dev_manifest), sets, result,
                   evaluations, timings, started, notify)


def _baseline(recipe: RecipeConfig, model: Any, run_dir: Path, train_manifest: Path, dev_manifest: Path,
              sets: dict[str, Path], evaluations: dict[str, Any], timings: dict[str, float], notify: Notify) -> None:

    t = time.perf_counter()
    if architecture(model.hf_dir) == "ctc":  # a wav2vec2-family checkpoint: its own CTC head, if it has one

        own = hf_baseline(model.hf_dir, recipe.lang, notify)
        if own is not None:
            evaluations["baseline"] = _evaluate_all(own, "baseline", sets, run_dir, recipe, recipe.model, None, notify)
        timings["baseline_eval_s"] = time.perf_counter() - t
        return
    # Whisper, also under the CTC route (a CTC head on its encoder): the unadapted Whisper is the baseline
    baseline = _transcriber(WhisperASR.load(model.hf_dir), recipe, run_dir)
    if hasattr(baseline, "prepare"):  # one encoder pass for every utterance of the run
        everything = [u for path in (train_manifest, dev_manifest, *sets.values()) for u in read_manifest(path)]
        unique = list({u.id + "\0" + u.audio_filepath: u for u in everything}.values())
        stats = baseline.prepare(unique)
        notify(f"encoder cache: {len(unique)} utterances, {stats.built} computed in {stats.build_s:.0f} s "
               f"({baseline.precision}) -> {baseline.root}")
    timings["encoder_cache_s"] = time.perf_counter() - t
    t = time.perf_counter()
    replays = heldout.verify_sources(recipe, baseline, sets, notify)
    evaluations["baseline"] = _evaluate_all(baseline, "baseline", sets, run_dir, recipe, recipe.model, None, notify,
                                            replays)
    if recipe.eval.prompt_with_terms and recipe.eval.terms:
        # zero-shot row: what Whisper's text prompt alone buys. The term list is domain specific, so only the
        # primary set is decoded again (the report copes with a system that lacks the other sets).
        prompt = ", ".join(read_terms(recipe.eval.terms))
        primary = {recipe.eval.primary: sets[recipe.eval.primary]}
        evaluations["baseline+prompt"] = _evaluate_all(
            baseline, "baseline+prompt", primary, run_dir, recipe, recipe.model, prompt, notify
        )
    timings["baseline_eval_s"] = time.perf_counter() - t


def _evaluate_ctc(recipe: RecipeConfig, run_dir: Path, manifests: tuple[Path, Path], sets: dict[str, Path],
                  result: Any, evaluations: dict[str, Any], notify: Notify) -> dict[str, Any] | None:
    """The adapted CTC model greedy ("adapted") and with the dev-tuned LM beam search ("adapted+lm")."""

    asr = CtcASR.load(result.best_dir, lang=recipe.lang)
    target = transcriber(asr, result, recipe, run_dir)
    evaluations["adapted"] = _evaluate_all(target, "adapted", sets, run_dir, recipe, str(result.best_dir), None, notify)
    if not recipe.decode.lm:
        return None
    decoding = beam_decoder(asr, target, recipe, run_dir, *manifests, list(sets.values()), notify)
    evaluations["adapted+lm"] = _evaluate_all(target, "adapted+lm", sets, run_dir, recipe, str(result.best_dir),
                                              None, notify)
    return decoding


def _finish(recipe: RecipeConfig, resolved: dict[str, Any], model: Any, run_dir: Path,
            prepared: dict[str, dict[str, Path]], manifests: tuple[Path, Path], sets: dict[str, Path], result: Any,
            evaluations: dict[str, Any], timings: dict[str, float], started: float, notify: Notify) -> dict[str, Any]:
    """Adapted evaluation, export and report (main process); ``manifests`` are the train and dev manifests."""

    decoding = interpolation = None
    adapted_dir = result.best_dir
    if result.route == "seq2seq" and recipe.interpolate.enabled:
        t = time.perf_counter()
        interpolation = _interpolate(recipe, model, run_dir, result, _dev_sets(recipe, prepared), sets, evaluations,
                                     notify)
        adapted_dir = Path(interpolation["model_dir"])
        timings["interpolate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if result.route == "ctc":
        decoding = _evaluate_ctc(recipe, run_dir, manifests, sets, result, evaluations, notify)
    else:
        adapted = _transcriber(WhisperASR.load(adapted_dir), recipe, run_dir)
        evaluations["adapted"] = _evaluate_all(adapted, "adapted", sets, run_dir, recipe, str(adapted_dir), None,
                                               notify)
        del adapted
    timings["adapted_eval_s"] = time.perf_counter() - t

    normalizer = scoring_normalizer(recipe.lang)
    payload = {
        "recipe": resolved,
        "model": {"name": recipe.model, "hf_dir": str(model.hf_dir), "source": model.source},
        "data": {name: {k: str(v) for k, v in paths.items()} for name, paths in prepared.items()},
        "normalizer": {"name": normalizer.name, "settings": normalizer.settings},
        "primary": recipe.eval.primary,
        "forgetting": recipe.eval.forgetting,
        "evaluations": evaluations,
        "train": result.to_json() if hasattr(result, "to_json") else asdict(result),
        "train_history": read_history(getattr(result, "history_path", None)),
        "decoding": decoding,
        "interpolation": interpolation,
        "adapted_dir": str(adapted_dir),
        "relations": heldout.relations(manifests[0], sets),
    }
    # paired bootstrap comparisons, aligned examples: read back from eval/<system>/<set>/hypotheses.jsonl
    payload = enrich(payload, run_dir, seed=recipe.seed)
    t = time.perf_counter()
    payload["exports"] = _export_all(recipe, run_dir, result.route, adapted_dir, sets[recipe.eval.primary], payload,
                                     notify)
    timings["export_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    payload["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    paths = write_report(run_dir, payload)
    for ref, comparisons in payload["comparisons"].items():
        for c in comparisons:
            notify(f"paired {c['b']} vs {c['a']} on {ref}: WER {100 * c['diff']:+.1f} pts "
                   f"[{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}], P(better) {c['prob_b_better']:.0%}")
    notify(f"report: {paths['md']}, {paths['html']}")
    failed = [e["error"] for e in payload["exports"].values() if e.get("error")]
    if failed:  # after the report: the run's results stand, the export does not ship

        raise ExportParityError("; ".join(failed))
    return payload


def _interpolate(recipe: RecipeConfig, model: Any, run_dir: Path, result: Any, dev_sets: dict[str, Path],
                 sets: dict[str, Path], evaluations: dict[str, Any], notify: Notify) -> dict[str, Any]:
    """WiSE-FT: alpha chosen on the dev sets; the chosen model is written to ``checkpoints/interpolated``.

    When alpha < 1 the trained checkpoint itself is also scored, as system "fine-tuned", on the primary and
    forgetting-check sets: the report's trade-off between domain and unseen-speaker WER.
    """

    interpolator = Interpolator(model.hf_dir, result.best_dir)
    normalizer = scoring_normalizer(recipe.lang)
    transcriber = _transcriber(interpolator.asr, recipe, run_dir)  # the frozen prefix is the same at every alpha

    def dev_wer(alpha: float, ref: str, manifest: Path) -> float:
        interpolator.at(alpha)
        out_dir = run_dir / "interpolate" / f"alpha-{alpha:.2f}" / ref.replace("/", "_")
        return evaluate_manifest(transcriber, manifest, out_dir, lang=recipe.lang, normalizer=normalizer,
                                 batch_size=recipe.eval.batch_size, model_name=f"alpha {alpha}")["wer"]

    choice = select_alpha(recipe.interpolate.alphas, dev_sets, dev_wer)
    alpha = choice["alpha"]
    notify(f"interpolate: alpha {alpha:.2f} of the adapted weights, by mean dev WER over {', '.join(dev_sets)} ("
           + ", ".join(f"{c['alpha']:.2f}: {c['mean_dev_wer']:.1%}" for c in choice["candidates"]) + ")")
    choice["model_dir"] = str(interpolator.save(alpha, run_dir / "checkpoints" / "interpolated"))
    atomic_write_text(run_dir / "interpolate" / "choice.json", json.dumps(choice, indent=2) + "\n")
    if alpha < 1:
        interpolator.at(1.0)
        tradeoff = {ref: sets[ref] for ref in (recipe.eval.primary, recipe.eval.forgetting) if ref}
        evaluations["fine-tuned"] = _evaluate_all(transcriber, "fine-tuned", tradeoff, run_dir, recipe,
                                                  str(result.best_dir), None, notify)
    return choice


def _export_all(recipe: RecipeConfig, run_dir: Path, route: str, model_dir: Path, test_manifest: Path,
                payload: dict[str, Any], notify: Notify) -> dict[str, Any]:
    """Every format of ``export.formats`` the route supports, each with its parity check and model card."""

    exports: dict[str, Any] = {}
    for fmt in recipe.export.formats:
        if (fmt, route) in (("ct2", "ctc"), ("onnx", "seq2seq")):
            notify(f"export {fmt}: skipped, not a format of the {route} route (ct2: Whisper; onnx: CTC)")
            continue
        out = run_dir / "export" / fmt
        exports[fmt] = {"path": str(out)}
        try:
            check = export(model_dir, fmt, out=out, lang=recipe.lang, manifest=test_manifest, payload=payload,
                           quantization=recipe.export.ct2_quantization if fmt == "ct2" else None,
                           compute_type=recipe.export.ct2_compute_type,
                           margin_points=recipe.export.parity_margin_points,
                           hf_check_utts=recipe.export.hf_check_utts, check_unpadded=recipe.export.check_unpadded)
        except ExportParityError as exc:  # the other formats and the report still get written
            check = exc.result
            exports[fmt]["error"] = str(exc)
        exports[fmt]["parity"] = check
        notify(f"export {fmt}: {out}; parity WER {check['export_wer']:.1%} vs PyTorch {check['torch_wer']:.1%} "
               f"({check['diff_points']:+.2f} points, margin {check['margin_points']}"
               f"{'' if check['passed'] else ': FAILED'}), RTF {check['export_rtf'] or 0:.3f}"
               + (f"; unpadded audio {check['unpadded_wer']:.1%}" if check.get("unpadded_wer") is not None else ""))
    return exports
