"""Score a recognizer on clips without speech: the share of clips it writes any word for, and which words.

A clip without speech has no reference to align against, so WER does not
apply: the right transcript is empty, and every word is a hallucination an
agent would answer. :func:`evaluate_nonspeech` decodes such a manifest
(``speechtl.data.nonspeech`` clips) and writes ``metrics.json`` and
``hypotheses.jsonl`` like :func:`speechtl.evaluate.decode.evaluate_manifest`.
A hypothesis counts as words when the scoring normalizer leaves any (so
punctuation or a music symbol alone is no word).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from speechtl.data.manifest import read_manifest, write_jsonl
from speechtl.evaluate.decode import Transcriber, transcribe_all
from speechtl.evaluate.scoring import EvaluationError, normalize_hypothesis, scoring_normalizer
from speechtl.fsio import atomic_write_text
from speechtl.text.normalize import Normalizer

TOP_WORDS = 10


def evaluate_nonspeech(transcriber: Transcriber, manifest: Path | str, out_dir: Path | str, *, lang: str,
                       normalizer: Normalizer | None = None, batch_size: int = 8, model_name: str | None = None,
                       prompt: str | None = None) -> dict[str, Any]:
    """Decode every clip of ``manifest`` (conditioned on ``prompt`` where given: a prompt can itself be
    written out on noise) and count the clips with words; returns (and writes) the metrics."""
    utts = read_manifest(manifest)
    if not utts:
        raise EvaluationError(f"manifest {manifest}: no utterances")
    speech = [u.id for u in utts if not u.extra.get("nonspeech")]
    if speech:
        raise EvaluationError(f"manifest {manifest}: utterance {speech[0]} is not a no-speech clip "
                              "(field 'nonspeech' missing)")
    normalizer = normalizer or scoring_normalizer(lang)
    hyps, timing = transcribe_all(transcriber, utts, lang, prompt, batch_size, None)
    rows, words, per_kind = [], Counter(), {}
    for utt, hyp in zip(utts, hyps, strict=True):
        said = normalize_hypothesis(hyp, utt.id, normalizer)[0].split()
        kind = str(utt.extra["nonspeech"])
        counts = per_kind.setdefault(kind, {"clips": 0, "with_words": 0})
        counts["clips"] += 1
        counts["with_words"] += bool(said)
        words.update(said)
        rows.append({"id": utt.id, "kind": kind, "audio_filepath": utt.audio_filepath, "hypothesis": hyp,
                     "words": len(said)})
    with_words = sum(c["with_words"] for c in per_kind.values())
    metrics = {
        "num_clips": len(utts), "clips_with_words": with_words, "share_with_words": with_words / len(utts),
        "num_words": sum(words.values()), "top_words": words.most_common(TOP_WORDS), "per_kind": per_kind,
        "normalizer": normalizer.name, "model": model_name or getattr(transcriber, "name", None),
        "manifest": str(manifest), "lang": lang, "prompt": prompt, **timing,
    }  # fmt: skip
    out = Path(out_dir)
    write_jsonl(out / "hypotheses.jsonl", rows)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, ensure_ascii=False, indent=2) + "\n")
    return metrics
