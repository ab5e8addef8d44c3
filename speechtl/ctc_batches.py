"""Batches for CTC training: duration buckets and a dynamic-padding collator.

* :func:`bucket_batches` groups utterances of similar length so little compute
  goes to padding: utterances are sorted by duration inside seeded shuffled
  windows, cut into batches bounded by total audio seconds (and a count), and
  the batches are shuffled. Every utterance is in exactly one batch.
* :class:`CtcCollator` pads raw 16 kHz waveforms to the longest of the batch
  (after the per-utterance zero-mean, unit-variance normalization that
  wav2vec2-family feature extractors apply), returns the attention mask, and
  pads label ids with -100 (ignored by the CTC loss in transformers).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = -100


def bucket_batches(durations: Sequence[float], *, max_batch_seconds: float, max_batch_size: int = 64,
                   seed: int = 0, window: int = 50) -> list[list[int]]:
    """Index batches over ``durations`` (seconds); each batch holds at most ``max_batch_seconds`` of
    audio (padded: the longest utterance times the count) and ``max_batch_size`` utterances."""
    if max_batch_seconds <= 0 or max_batch_size < 1 or window < 1:
        raise ValueError("bucket_batches: max_batch_seconds, max_batch_size and window must be positive")
    for i, d in enumerate(durations):
        if not d > 0:
            raise ValueError(f"bucket_batches: utterance {i}: duration {d!r} must be > 0")
        if d > max_batch_seconds:
            raise ValueError(f"bucket_batches: utterance {i}: duration {d:.2f} s exceeds max_batch_seconds "
                             f"{max_batch_seconds}")
    rng = random.Random(seed)
    order = list(range(len(durations)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    span = window * max_batch_size
    for start in range(0, len(order), span):  # sort by length inside windows: buckets, yet seeded variety
        chunk = sorted(order[start:start + span], key=lambda i: durations[i])
        batch: list[int] = []
        longest = 0.0
        for i in chunk:
            longest_next = max(longest, durations[i])
            if batch and (longest_next * (len(batch) + 1) > max_batch_seconds or len(batch) == max_batch_size):
                batches.append(batch)
                batch, longest_next = [], durations[i]
            batch.append(i)
            longest = longest_next
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


class CtcCollator:
    """``(waveform, label ids)`` pairs -> ``input_values``, ``attention_mask``, ``labels`` tensors."""

    def __init__(self, *, normalize: bool = True, pad_to_multiple_of: int | None = None) -> None:
        self.normalize = normalize
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: Sequence[tuple[np.ndarray, Sequence[int]]]) -> dict[str, Any]:
        import torch

        if not items:
            raise ValueError("CtcCollator: empty batch")
        waves = []
        for k, (wave, _) in enumerate(items):
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1 or wave.size == 0:
                raise ValueError(f"CtcCollator: item {k}: waveform must be 1-D and non-empty, got {wave.shape}")
            if self.normalize:
                wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
            waves.append(wave)
        length = max(w.size for w in waves)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        values = torch.zeros(len(waves), length)
        mask = torch.zeros(len(waves), length, dtype=torch.long)
        for k, w in enumerate(waves):
            values[k, :w.size] = torch.from_numpy(w)
            mask[k, :w.size] = 1
        label_len = max(len(ids) for _, ids in items)
        labels = torch.full((len(items), max(label_len, 1)), IGNORE_INDEX, dtype=torch.long)
        for k, (_, ids) in enumerate(items):
            if not ids:
                raise ValueError(f"CtcCollator: item {k}: empty label sequence")
            labels[k, :len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        return {"input_values": values, "attention_mask": mask, "labels": labels}
