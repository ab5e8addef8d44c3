"""Language identification before and after adaptation: does the model still hear the run's language?

A served model is often called without ``language`` (Pipecat and LiveKit leave it unset by default), and
Whisper then detects it from the first 30 s. Fine-tuning with the language token forced can move that
detection, so the report gives, per system, the share of held-out clips whose detected language is the
run's. Each clip costs one decoder step (``WhisperForConditionalGeneration.detect_language``) after its
encoder pass, which a transcriber holding the clips' encoder outputs (the evaluation's
:class:`speechtl.models.encoder_cache.CachedEncoderTranscriber`) does not repeat; the first ``max_clips``
clips of each set are used.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from speechtl import audio
from speechtl.data.manifest import read_manifest

MAX_CLIPS = 48  # per set


def language_id(detector: Any, sets: dict[str, Path], lang: str, max_clips: int = MAX_CLIPS) -> dict[str, Any]:
    """Per set: clips, how many were detected as ``lang``, the accuracy and the languages detected instead;
    empty for a model without language tokens (English-only: nothing to detect). ``detector`` is a Whisper
    :class:`speechtl.models.whisper.WhisperASR`, or a transcriber of it with ``detect_utterances(utts)``."""
    asr = getattr(detector, "asr", detector)
    if not getattr(asr.generation_config, "lang_to_id", None):
        return {}
    by_utts = getattr(detector, "detect_utterances", None)
    out = {}
    for ref, manifest in sets.items():
        utts = read_manifest(manifest)[:max_clips]
        detected = (by_utts(utts) if by_utts is not None
                    else asr.detect_languages([audio.load(u.audio_filepath) for u in utts]))
        correct = sum(d == lang for d in detected)
        out[ref] = {"clips": len(utts), "correct": correct, "accuracy": correct / len(utts) if utts else None,
                    "instead": dict(Counter(d for d in detected if d != lang).most_common())}
    return out
