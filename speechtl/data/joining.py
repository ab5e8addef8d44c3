"""Utterances joined into longer audio: one recording from a group of clips, and training windows.

:func:`join_audio` writes a group of utterances as one 16 kHz recording with
pauses between them; its text is theirs, joined by spaces, and
``extra["joined_ids"]`` lists them. The long-form evaluation builds minutes
of audio with it (:mod:`speechtl.evaluate.longform`); :func:`pack_windows`
builds training windows of at most one Whisper window.

Packing is how Whisper was pretrained: 30-s segments that usually hold
several sentences. It also makes training cheaper where the encoder runs on
a full 30-s window whatever the clip's length: five 5-s clips packed into
one window cost one encoder pass instead of five. Window sizes are drawn per
window (uniform up to ``max_s``), so some windows hold one utterance and
others several, and the model still sees short single clips.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speechtl import audio
from speechtl.data.manifest import Utterance
from speechtl.levels import WINDOW_S

SAMPLE_RATE = audio.TARGET_SAMPLE_RATE


def join_audio(group: Sequence[Utterance], path: Path | str, pause_s: float,
               speeds: Sequence[float] | None = None) -> Utterance:
    """One recording at ``path`` from ``group`` (in order, ``pause_s`` of silence between clips).

    ``speeds`` plays each clip that many times faster (tempo and pitch together, by resampling: speed
    perturbation). An existing file with the very same bytes is left as it is (its size and modification
    time, which key the encoder cache, do not change when a run packs the same windows again).
    """
    if not group:
        raise ValueError(f"join_audio {path}: no utterances")
    speeds = list(speeds) if speeds is not None else [1.0] * len(group)
    if len(speeds) != len(group) or any(not 0.5 <= f <= 2.0 for f in speeds):
        raise ValueError(f"join_audio {path}: need one speed in [0.5, 2] per clip, got {speeds}")
    path = Path(path)
    pause = np.zeros(int(round(pause_s * SAMPLE_RATE)), np.float32)
    parts: list[np.ndarray] = []
    for utt, speed in zip(group, speeds, strict=True):
        samples = audio.load(utt.audio_filepath, SAMPLE_RATE)
        if speed != 1.0:
            samples = audio.resample(samples, int(round(SAMPLE_RATE * speed)), SAMPLE_RATE)
        parts += [samples, pause]
    samples = np.concatenate(parts[:-1])
    _write_if_changed(path, samples)
    speakers = {u.speaker for u in group}
    extra: dict = {"joined_ids": [u.id for u in group]}
    if any(f != 1.0 for f in speeds):
        extra["speeds"] = [round(f, 4) for f in speeds]
    return Utterance(id=path.stem, audio_filepath=str(path.resolve()), text=" ".join(u.text for u in group),
                     duration=round(len(samples) / SAMPLE_RATE, 4),
                     speaker=speakers.pop() if len(speakers) == 1 else "mixed", lang=group[0].lang, extra=extra)


def _write_if_changed(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        audio.write_audio(tmp, samples, SAMPLE_RATE)
        if path.exists() and path.read_bytes() == Path(tmp).read_bytes():
            return
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def pack_windows(utts: Sequence[Utterance], out_dir: Path | str, *, max_s: float = 28.0, pause_s: float = 0.5,
                 seed: int = 0, prefix: str = "packed", speed: tuple[float, float] | None = None) -> list[Utterance]:
    """``utts`` in a seeded order, joined into windows of at most ``max_s`` seconds.

    Each window's target length is drawn uniformly in ``(0, max_s]``; utterances join it while they fit, and
    a window always takes at least one. Every utterance lands in exactly one window; one longer than
    ``max_s`` stays alone. ``speed=(low, high)`` plays each utterance at a seeded speed drawn uniformly in
    that range (speed perturbation: new tempo and pitch, as if another speaker). Windows are written as
    ``<out_dir>/<prefix>-NNNN.wav``.
    """
    if not 0 < max_s <= WINDOW_S or pause_s < 0:
        raise ValueError(f"pack_windows: need 0 < max_s <= {WINDOW_S} and pause_s >= 0, got {max_s}, "
                         f"{pause_s}")
    missing = [u.id for u in utts if u.duration is None]
    if missing:
        raise ValueError(f"pack_windows: id={missing[0]}: field 'duration' is missing ({len(missing)} utterances)")
    if speed is not None and not 0.5 <= speed[0] <= speed[1] <= 2.0:
        raise ValueError(f"pack_windows: speed range must lie in [0.5, 2] with low <= high, got {speed}")
    order = list(utts)
    random.Random(f"{seed}:pack").shuffle(order)
    draw = random.Random(f"{seed}:pack-speeds")
    # never slower than fits one window (a margin for the resampler's whole-number rates)
    fits = WINDOW_S - 0.05
    speeds = {u.id: max(draw.uniform(*speed) if speed else 1.0, float(u.duration or 0.0) / fits) for u in order}
    rng = random.Random(f"{seed}:pack-lengths")
    groups: list[list[Utterance]] = []
    group: list[Utterance] = []
    seconds, target = 0.0, rng.uniform(0.0, max_s)
    for utt in order:
        length = float(utt.duration or 0.0) / speeds[utt.id]
        needed = seconds + (pause_s if group else 0.0) + length
        if group and needed > target:
            groups.append(group)
            group, seconds, target = [], 0.0, rng.uniform(0.0, max_s)
            needed = length
        group.append(utt)
        seconds = needed
    if group:
        groups.append(group)
    out_dir = Path(out_dir)
    return [join_audio(g, out_dir / f"{prefix}-{i:04d}.wav", pause_s, [speeds[u.id] for u in g])
            for i, g in enumerate(groups)]
