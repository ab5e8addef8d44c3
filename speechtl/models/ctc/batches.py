"""Batches for CTC training: a dynamic-padding collator.

:class:`CtcCollator` pads raw 16 kHz waveforms to the longest of the batch
(after the per-utterance zero-mean, unit-variance normalization that
wav2vec2-family feature extractors apply), returns the attention mask, and
pads label ids with -100 (ignored by the CTC loss in transformers). Batches of
similar duration come from :class:`speechtl.train.strategies.LengthBucketSampler`
over the utterance durations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = -100


def pad_labels(seqs: Sequence[Sequence[int]]) -> Any:
    """Label id sequences -> a (batch, longest) long tensor padded with -100; an empty sequence is an error."""
    import torch

    labels = torch.full((len(seqs), max([len(ids) for ids in seqs] + [1])), IGNORE_INDEX, dtype=torch.long)
    for k, ids in enumerate(seqs):
        if not ids:
            raise ValueError(f"CtcCollator: item {k}: empty label sequence")
        labels[k, :len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return labels


class CtcCollator:
    """``(waveform, label ids)`` pairs -> ``input_values``, ``attention_mask``, ``labels`` tensors."""

    def __init__(self, *, normalize: bool = True, pad_to_multiple_of: int | None = None) -> None:
        self.normalize = normalize
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: Sequence[tuple[np.ndarray, Sequence[int]]]) -> dict[str, Any]:
        if not items:
            raise ValueError("CtcCollator: empty batch")
        batch = self.waveforms([wave for wave, _ in items])
        batch["labels"] = pad_labels([ids for _, ids in items])
        return batch

    def waveforms(self, waves: Sequence[np.ndarray]) -> dict[str, Any]:
        """Normalized, padded ``input_values`` and their ``attention_mask``."""
        import torch

        if not waves:
            raise ValueError("CtcCollator: empty batch")
        out = []
        for k, wave in enumerate(waves):
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1 or wave.size == 0:
                raise ValueError(f"CtcCollator: item {k}: waveform must be 1-D and non-empty, got {wave.shape}")
            if self.normalize:
                wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
            out.append(wave)
        length = max(w.size for w in out)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        values = torch.zeros(len(out), length)
        mask = torch.zeros(len(out), length, dtype=torch.long)
        for k, w in enumerate(out):
            values[k, :w.size] = torch.from_numpy(w)
            mask[k, :w.size] = 1
        return {"input_values": values, "attention_mask": mask}
