"""Encoder windows sized to the clip.

Whisper was trained on 30-s windows: a 3-s clip is padded with 27 s of silence
and its encoder runs over 1500 positions, most of them padding. With a window
step (``window_step_s``, e.g. 10), a clip is encoded in a window of its length
rounded up to that step (10, 20 or 30 s: 500, 1000 or 1500 positions), which
costs about a third for the clips of a call center. ``TrainConfig.window_step_s``
trains so (the encoder cache and every step); the trained model is evaluated
and served on Whisper's own 30-s windows (``None``), like any Whisper model.

A batch holds clips of one window (:func:`window_groups`); the rows of a batch
are cut to that window's positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from speechtl.levels import WINDOW_S


def window_seconds(duration_s: float | None, step_s: float | None) -> float:
    """The window a clip of ``duration_s`` is encoded in: its length rounded up to ``step_s`` (at least one
    step), 30 s at most; 30 s when ``step_s`` is None or the length is unknown."""
    if step_s is None or duration_s is None:
        return WINDOW_S
    if not 0 < step_s <= WINDOW_S:
        raise ValueError(f"window_step_s={step_s} must be in (0, {WINDOW_S:.0f}]")
    steps = max(1, math.ceil(round(duration_s / step_s, 6)))
    return min(WINDOW_S, steps * step_s)


def window_positions(duration_s: float | None, step_s: float | None, positions: int = 1500) -> int:
    """Encoder positions of the window of a clip of ``duration_s`` (``positions`` for a whole 30-s window)."""
    return round(positions * window_seconds(duration_s, step_s) / WINDOW_S)


def window_groups(durations: Sequence[float | None], step_s: float | None, batch_size: int) -> list[list[int]]:
    """Batches of positions into ``durations``, each of one window, in order inside a window (the windows in
    order of their first clip)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    groups: dict[float, list[int]] = {}
    for i, duration in enumerate(durations):
        groups.setdefault(window_seconds(duration, step_s), []).append(i)
    return [group[lo:lo + batch_size] for group in groups.values() for lo in range(0, len(group), batch_size)]
