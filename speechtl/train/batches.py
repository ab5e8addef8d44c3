"""Training batches: seeded length-bucketed batches of dataset positions, and the dataset they index."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from speechtl.audio import load as load_audio
from speechtl.data.manifest import Utterance


class LengthBucketSampler:
    """Seeded batches of dataset positions, sorted by label length inside windows.

    Each epoch: a permutation drawn from ``(seed, epoch)``, cut into windows
    of ``batch_size * bucket_batches`` items; each window is sorted by length
    and cut into batches; the batch order is then shuffled. With ``groups``
    (e.g. each item's encoder window) no batch mixes two groups: each group's
    items, in the permutation's order, are cut into windows and batches
    apart. Same seed and
    epoch, same batches, on every process and after a resume. The epoch is
    set with :meth:`use_epoch` (deliberately not ``set_epoch``, which
    accelerate calls with its own counter).
    """

    drop_last = False

    def __init__(self, lengths: list[int], batch_size: int, bucket_batches: int, seed: int,
                 groups: list[float] | None = None) -> None:
        self.lengths = np.asarray(lengths)
        if groups is not None and len(groups) != len(lengths):
            raise ValueError(f"{len(groups)} groups for {len(lengths)} items")
        self.groups = np.zeros(len(lengths)) if groups is None else np.asarray(groups, dtype=float)
        self.batch_size = batch_size
        self.bucket_batches = bucket_batches
        self.seed = seed
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        window = self.batch_size * self.bucket_batches
        out: list[list[int]] = []
        for group in dict.fromkeys(self.groups[order].tolist()):  # the groups in order of first appearance
            members = order[self.groups[order] == group]
            for lo in range(0, len(members), window):
                chunk = members[lo:lo + window]
                if self.bucket_batches > 1:
                    chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                out += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        _, counts = np.unique(self.groups, return_counts=True)
        return sum(math.ceil(int(n) / self.batch_size) for n in counts)


class TrainSet:
    """Dataset of training examples for :class:`speechtl.models.whisper.WhisperCollator`."""

    def __init__(self, utts: list[Utterance], tokens: list[list[int]], rows: Any, sampler: LengthBucketSampler):
        self.utts, self.tokens, self.rows, self.sampler = utts, tokens, rows, sampler

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        source = self.rows[i] if self.rows is not None else load_audio(self.utts[i].audio_filepath)
        return {"index": i, "input": source, "tokens": self.tokens[i], "epoch": self.sampler.epoch,
                "seconds": self.utts[i].duration}
