"""Seeded SpecAugment for Whisper training: time and frequency masks on log-mel features, or the same
share of the time axis and the channels on cached encoder states when the log-mels are out of reach."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Time and frequency masking of log-mel features (training only)."""

    time_masks: int = 2  # time masks per utterance
    time_mask_frames: int = 40  # widest time mask, in feature frames (10 ms each)
    freq_masks: int = 2  # frequency masks per utterance
    freq_mask_bins: int = 10  # widest frequency mask, in mel bins
    seed: int = 0  # masks are drawn from (seed, key) only: reproducible and resumable

    def __post_init__(self) -> None:
        for name in ("time_masks", "time_mask_frames", "freq_masks", "freq_mask_bins", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"SpecAugmentConfig.{name} must be an integer >= 0, got {value!r}")


def spec_augment(features: Any, num_frames: Sequence[int], config: SpecAugmentConfig,
                 keys: Sequence[Sequence[int]]) -> Any:
    """Masked copy of ``features`` (batch, mels, frames); item i uses the rng of ``(seed, *keys[i])``.

    Time masks fall inside the item's real audio (its first ``num_frames[i]``
    frames); masked cells take the item's mean feature value.
    """
    import torch

    out = features.clone()
    n_mels, total = out.shape[1], out.shape[2]
    for i, key in enumerate(keys):
        rng = np.random.default_rng([config.seed, *[int(k) for k in key]])
        fill = out[i].mean()
        frames = max(1, min(int(num_frames[i]), total))
        for _ in range(config.time_masks):
            width = int(rng.integers(0, min(config.time_mask_frames, frames) + 1))
            start = int(rng.integers(0, frames - width + 1))
            out[i, :, start:start + width] = fill
        for _ in range(config.freq_masks):
            width = int(rng.integers(0, min(config.freq_mask_bins, n_mels) + 1))
            start = int(rng.integers(0, n_mels - width + 1))
            out[i, start:start + width, :] = fill
    return out if isinstance(out, torch.Tensor) else torch.as_tensor(out)


def hidden_spec_augment(hidden: Any, seconds: Sequence[float | None], config: SpecAugmentConfig,
                        keys: Sequence[Sequence[int]], *, n_mels: int) -> Any:
    """SpecAugment on cached encoder states ``(batch, positions, channels)``, where log-mels are out of reach.

    Time masks are as long in seconds as on log-mels (a position is 20 ms, two feature frames) and fall inside
    the item's speech (``seconds``; None: anywhere); channel masks cover the share of the channels that the
    frequency masks cover of the ``n_mels`` bins.
    """
    scaled = dataclasses.replace(config, time_mask_frames=config.time_mask_frames // 2,
                                 freq_mask_bins=round(config.freq_mask_bins * hidden.shape[2] / n_mels))
    positions = [math.ceil(50 * s) if s else hidden.shape[1] for s in seconds]
    return spec_augment(hidden.transpose(1, 2), positions, scaled, keys).transpose(1, 2).contiguous()
