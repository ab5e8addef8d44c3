"""Decode a manifest with a recognizer and score it with :mod:`speechtl.evaluate.scoring`.

:func:`evaluate_manifest` adds the decoding, the timing and the result files
(``hypotheses.jsonl`` and ``metrics.json`` in an output folder) around the
pure scoring functions; the rules the numbers follow are in :mod:`speechtl.evaluate.scoring`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from os import PathLike
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from speechtl import audio, faults
from speechtl.data.manifest import Utterance, read_manifest, write_jsonl
from speechtl.evaluate.error_analysis import confusions, hallucinations
from speechtl.evaluate.scoring import (
    EvaluationError,
    UttScore,
    normalize_references,
    read_terms,
    score,
    scoring_normalizer,
    term_recall,
)
from speechtl.evaluate.significance import bootstrap_ci
from speechtl.fsio import atomic_write_text
from speechtl.text.normalize import Normalizer

log = logging.getLogger(__name__)

SAMPLE_RATE = audio.TARGET_SAMPLE_RATE
METRIC_KEYS = (  # every key evaluate_manifest computes; ``extra`` may not reuse one
    "wer", "cer", "num_utts", "num_ref_words", "num_ref_chars", "hits", "substitutions", "deletions",
    "insertions", "raw", "per_speaker", "rejected_hypotheses", "wer_ci95", "normalizer", "terms", "model",
    "manifest", "lang", "prompt", "batch_size", "decode_time_s", "audio_load_time_s", "audio_duration_s", "rtf",
    "hallucinations", "confusions", "empty_hypotheses",
)


class Transcriber(Protocol):
    """What :func:`evaluate_manifest` needs from a recognizer (e.g. ``WhisperASR``)."""

    def transcribe(self, audios: list[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:
        """One transcript per float32 16 kHz mono array, in order."""
        ...


# ------------------------------------------------------------------ decoding a manifest


def _load_audio(utt: Utterance) -> np.ndarray:
    try:
        return audio.load(utt.audio_filepath, SAMPLE_RATE)
    except Exception as exc:  # decoders raise several types; name the utterance and file
        raise EvaluationError(f"utterance {utt.id}: field 'audio_filepath' {utt.audio_filepath}: {exc}") from exc


def _duration_s(utt: Utterance) -> float:
    return utt.duration if utt.duration is not None else 0.0


def transcribe_all(transcriber: Transcriber, utts: list[Utterance], lang: str, prompt: str | None,
                     batch_size: int, progress: Callable[[int, int], None] | None) -> tuple[list[str], dict]:
    """Transcribe in batches of similar duration (less padding, shorter decodes); hypotheses in manifest order.

    A transcriber with ``transcribe_utterances(utts, lang, *, prompt, batch_size)`` (e.g. one reading cached
    encoder outputs) gets the utterances themselves; any other gets their decoded audio.
    """
    by_utts = getattr(transcriber, "transcribe_utterances", None)
    order = sorted(range(len(utts)), key=lambda i: _duration_s(utts[i]))
    hyps: list[str | None] = [None] * len(utts)
    decode_s = load_s = audio_s = 0.0
    done = 0
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = [utts[i] for i in indices]
        t0 = time.perf_counter()
        if by_utts is not None:
            t1 = t0
            out = by_utts(batch, lang, prompt=prompt, batch_size=batch_size)
            audio_s += sum(_duration_s(u) for u in batch)
        else:
            audios = [_load_audio(u) for u in batch]
            t1 = time.perf_counter()
            out = transcriber.transcribe(audios, lang, prompt=prompt, batch_size=batch_size)
            audio_s += sum(len(a) for a in audios) / SAMPLE_RATE
        decode_s += time.perf_counter() - t1
        load_s += t1 - t0
        out = list(out)
        if len(out) != len(batch):
            raise EvaluationError(f"transcriber returned {len(out)} transcripts for a batch of {len(batch)} "
                                  f"(utterances {batch[0].id} .. {batch[-1].id})")
        for i, utt, hyp in zip(indices, batch, out):
            if not isinstance(hyp, str):
                raise EvaluationError(f"utterance {utt.id}: transcriber returned {type(hyp).__name__}, not str")
            hyps[i] = hyp
        done += len(batch)
        faults.point("evaluation")  # a set half decoded
        if progress is not None:
            progress(done, len(utts))
        log.debug("decoded %d/%d utterances", done, len(utts))
    timing = {"decode_time_s": decode_s, "audio_load_time_s": load_s, "audio_duration_s": audio_s,
              "rtf": decode_s / audio_s if audio_s > 0 else None}
    return [h for h in hyps if h is not None], timing


def _checked_utterances(manifest: Path | str | Iterable[Utterance],
                        normalizer: Normalizer) -> tuple[str | None, list[Utterance]]:
    """The manifest's name (None in memory) and utterances: not empty, unique ids, every reference scorable
    (checked before any decode time is spent)."""
    if isinstance(manifest, str | PathLike):
        manifest_name: str | None = str(manifest)
        utts = read_manifest(manifest)
    else:
        manifest_name, utts = None, list(manifest)
    if not utts:
        raise EvaluationError(f"manifest {manifest_name or '<in memory>'}: no utterances")
    dupes = sorted(k for k, v in Counter(u.id for u in utts).items() if v > 1)
    if dupes:
        raise EvaluationError(f"manifest {manifest_name or '<in memory>'}: duplicate utterance id {dupes[0]}"
                              + (f" and {len(dupes) - 1} more" if len(dupes) > 1 else ""))
    normalize_references([u.text for u in utts], [u.id for u in utts], normalizer)
    return manifest_name, utts


def _hypothesis_row(utt: Utterance, hyp: str, s: UttScore) -> dict[str, Any]:
    return {"id": utt.id, "speaker": s.speaker, "audio_filepath": utt.audio_filepath,
            "reference": utt.text, "hypothesis": hyp,
            "reference_normalized": s.reference, "hypothesis_normalized": s.hypothesis,
            "hypothesis_rejected": s.hypothesis_rejected, "wer": s.wer, "cer": s.cer,
            **asdict(s.words), "ops": [op.to_json() for op in s.ops]}


def evaluate_manifest(
    transcriber: Transcriber,
    manifest: Path | str | Iterable[Utterance],
    out_dir: Path | str,
    *,
    lang: str,
    normalizer: Normalizer | None = None,
    prompt: str | None = None,
    terms: Sequence[str] | PathLike[str] | None = None,
    batch_size: int = 8,
    model_name: str | None = None,
    extra: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    ci_seed: int = 0,
) -> dict[str, Any]:
    """Decode every utterance of ``manifest``, score it, write ``out_dir/{hypotheses.jsonl,metrics.json}``.

    ``manifest`` is a JSONL path or utterances; ``normalizer`` defaults to
    :func:`scoring_normalizer`; ``terms`` is a list or a :func:`read_terms`
    file; ``progress(done, total)`` is called after each batch; ``extra`` is
    merged into the metrics (e.g. the resolved config), and may not reuse a
    key the metrics already have. References are checked before any decoding.
    Returns the metrics dict (also written to ``metrics.json``).
    """
    if batch_size < 1:
        raise ValueError(f"evaluate_manifest: batch_size must be >= 1, got {batch_size}")
    clash = sorted(set(extra or {}) & set(METRIC_KEYS))
    if clash:
        raise EvaluationError(f"evaluate_manifest: extra keys {clash} would overwrite computed metrics")
    if isinstance(terms, str):
        raise TypeError("evaluate_manifest: terms must be a list of terms or a Path to a terms file, not a str")
    term_list = read_terms(terms) if isinstance(terms, PathLike) else list(terms) if terms is not None else None
    normalizer = normalizer or scoring_normalizer(lang)
    manifest_name, utts = _checked_utterances(manifest, normalizer)
    ids = [u.id for u in utts]

    log.info("evaluating %d utterances of %s (lang=%s, batch_size=%d)", len(utts),
             manifest_name or "<in memory>", lang, batch_size)
    hyps, timing = transcribe_all(transcriber, utts, lang, prompt, batch_size, progress)
    refs = [u.text for u in utts]
    scores = score(refs, hyps, normalizer, ids=ids, speakers=[u.speaker for u in utts])

    metrics: dict[str, Any] = scores.to_json()
    metrics["wer_ci95"] = list(bootstrap_ci(scores.utterances, seed=ci_seed))
    metrics["normalizer"] = {"name": normalizer.name, "settings": dict(normalizer.settings)}
    metrics["hallucinations"] = hallucinations(scores.utterances)
    metrics["confusions"] = confusions(scores.utterances)
    # speech answered with nothing: the other side of the no-speech rule (a reply to a caller never given)
    metrics["empty_hypotheses"] = sum(1 for u in scores.utterances if u.reference.strip() and not u.hypothesis.strip())
    if term_list is not None:
        metrics["terms"] = term_recall(refs, hyps, term_list, normalizer, ids=ids).to_json()
    metrics.update({
        "model": model_name or getattr(transcriber, "name", None) or type(transcriber).__name__,
        "manifest": manifest_name, "lang": lang, "prompt": prompt, "batch_size": batch_size, **timing,
    })
    metrics.update(extra or {})

    out = Path(out_dir)
    write_jsonl(out / "hypotheses.jsonl", [_hypothesis_row(utt, hyp, s)
                                           for utt, hyp, s in zip(utts, hyps, scores.utterances)])
    atomic_write_text(out / "metrics.json", json.dumps(metrics, ensure_ascii=False, indent=2) + "\n")
    log.info("WER %.2f%%, CER %.2f%% over %d utterances (%s); wrote %s", 100 * scores.wer, 100 * scores.cer,
             scores.num_utts, normalizer.name, out)
    return metrics
