"""Long recordings: held-out utterances joined into minutes of audio, and a recognizer that takes them whole.

Call analytics hands the recognizer whole calls, not clips. :func:`join_utterances`
builds such recordings from a test manifest: utterances in a seeded order,
joined with short pauses into recordings of ``min_s`` to ``max_s`` seconds,
each with the joined reference (and the ids it holds). :class:`LongForm`
makes any clip recognizer (``transcribe(audios, lang)``, at most 30 s each)
take audio of any length: each recording is cut into windows of at most
30 s at its quietest points (:func:`speechtl.levels.window_bounds`), the
windows are decoded in batches, and their texts joined. Scoring the joined
recordings with :func:`speechtl.evaluate.decode.evaluate_manifest` and the
same utterances clip by clip shows what long audio costs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechtl import audio
from speechtl.data.joining import join_audio
from speechtl.data.manifest import Utterance
from speechtl.levels import WINDOW_S, window_bounds

SAMPLE_RATE = audio.TARGET_SAMPLE_RATE
PAUSE_S = 0.7  # silence between joined utterances


def join_utterances(utts: Sequence[Utterance], out_dir: Path | str, *, min_s: float = 60.0, max_s: float = 180.0,
                    pause_s: float = PAUSE_S, seed: int = 0) -> list[Utterance]:
    """Recordings of ``min_s``-``max_s`` seconds (the last may be shorter) from ``utts`` in a seeded order.

    Each recording (:func:`speechtl.data.joining.join_audio`) lists its utterances in ``extra["joined_ids"]``;
    its text is theirs, joined by spaces.
    """
    if not 0 < min_s <= max_s or pause_s < 0:
        raise ValueError(f"join_utterances: need 0 < min_s <= max_s and pause_s >= 0, got {min_s}, {max_s}, "
                         f"{pause_s}")
    order = list(utts)
    random.Random(f"{seed}:longform").shuffle(order)
    rng = random.Random(f"{seed}:longform-lengths")
    out_dir = Path(out_dir)
    recordings: list[Utterance] = []
    group: list[Utterance] = []
    target = rng.uniform(min_s, max_s)
    seconds = 0.0
    for i, utt in enumerate(order):
        group.append(utt)
        seconds += (utt.duration or 0.0) + pause_s
        if seconds >= target or i == len(order) - 1:
            recordings.append(join_audio(group, out_dir / f"longform-{len(recordings):03d}.wav", pause_s))
            group, seconds, target = [], 0.0, rng.uniform(min_s, max_s)
    return recordings


class LongForm:
    """``transcriber`` (clips of at most 30 s) on audio of any length: windows cut in pauses, texts joined."""

    def __init__(self, transcriber: Any, *, window_s: float = WINDOW_S) -> None:
        self.inner = transcriber
        self.window_s = window_s
        self.name = f"{getattr(transcriber, 'name', None) or type(transcriber).__name__}, long-form"

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:
        chunks, owner = [], []
        for i, samples in enumerate(audios):
            for lo, hi in window_bounds(samples, SAMPLE_RATE, self.window_s):
                chunks.append(samples[lo:hi])
                owner.append(i)
        texts = self.inner.transcribe(chunks, lang, prompt=prompt, batch_size=batch_size)
        joined: list[list[str]] = [[] for _ in audios]
        for i, text in zip(owner, texts, strict=True):
            if text.strip():
                joined[i].append(text.strip())
        return [" ".join(parts) for parts in joined]
