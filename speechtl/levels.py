"""Energy and level of audio samples: frame energies, silence trimming, the speech level and its
normalization, and cutting long audio into windows at its quietest points."""

from __future__ import annotations

import math

import numpy as np

WINDOW_S = 30.0  # one Whisper window: the longest audio the encoder reads at once
_FRAME_S = 0.010  # frame length for trimming energies
_LEVEL_FRAME = 160  # samples per frame for the level gate (10 ms at 16 kHz)
_LEVEL_ABS_GATE_DB = -70.0  # frames quieter than this (dBFS) never count as speech
_LEVEL_REL_GATE_DB = -10.0  # ... nor frames this far below the mean of the rest


def _frame_energies(samples: np.ndarray, frame: int) -> np.ndarray:
    """Mean square per frame of ``frame`` samples; the last partial frame counts as a frame."""
    full = len(samples) // frame
    body = samples[: full * frame].reshape(full, frame)
    energies = np.einsum("ij,ij->i", body, body, dtype=np.float64) / frame
    rest = samples[full * frame:]
    if len(rest):
        energies = np.append(energies, float(np.dot(rest, rest)) / len(rest))
    return energies


def window_bounds(samples: np.ndarray, sample_rate: int, max_s: float = WINDOW_S,
                  search_s: float = 6.0) -> list[tuple[int, int]]:
    """Cut long audio into windows of at most ``max_s``, each cut at the quietest 20 ms within ``search_s``
    before the limit (a pause between words, where there is one): ``[(start, stop), ...]`` in samples."""
    limit, frame = int(max_s * sample_rate), max(1, sample_rate // 50)
    if limit <= 0 or not 0 < search_s < max_s:
        raise ValueError(f"window_bounds: need max_s > 0 and 0 < search_s < max_s, got {max_s}, {search_s}")
    bounds, start = [], 0
    while len(samples) - start > limit:
        lo = start + limit - int(search_s * sample_rate)
        energies = _frame_energies(np.asarray(samples[lo:start + limit], dtype=np.float32), frame)
        energies = energies[:-1] if len(energies) > 1 else energies  # whole frames only
        quietest = len(energies) - 1 - int(np.argmin(energies[::-1]))  # of equals, the latest: longer windows
        cut = lo + quietest * frame + frame // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, len(samples)))
    return bounds


def trim_silence(samples: np.ndarray, sample_rate: int, threshold_db: float, margin_s: float) -> np.ndarray:
    """Cut leading and trailing silence, keeping ``margin_s`` on each side.

    Silence is a 10 ms frame whose energy is more than ``-threshold_db`` dB
    below the loudest frame. Returns a view of ``samples`` (empty when every
    frame is zero).
    """
    if len(samples) == 0:
        return samples
    frame = max(1, int(round(sample_rate * _FRAME_S)))
    energies = _frame_energies(samples, frame)
    loudest = energies.max()
    if loudest <= 0:
        return samples[:0]
    active = np.flatnonzero(energies >= loudest * 10.0 ** (threshold_db / 10.0))
    margin = int(round(margin_s * sample_rate))
    start = max(0, int(active[0]) * frame - margin)
    stop = min(len(samples), (int(active[-1]) + 1) * frame + margin)
    return samples[start:stop]


def power_dbfs(power: float) -> float:
    """A mean power (mean square of samples) in dBFS; -inf for silence."""
    return 10.0 * math.log10(power) if power > 0 else -math.inf


def active_rms_dbfs(samples: np.ndarray) -> float:
    """RMS (dBFS) over the non-silent frames: an absolute gate at -70 dBFS, then a relative
    gate 10 dB below the mean power of what passed (in the manner of ITU-R BS.1770)."""
    if len(samples) == 0:
        return -math.inf
    energies = _frame_energies(samples, _LEVEL_FRAME)
    gated = energies[energies >= 10.0 ** (_LEVEL_ABS_GATE_DB / 10.0)]
    if len(gated) == 0:
        return power_dbfs(float(energies.mean()))
    gated = gated[gated >= gated.mean() * 10.0 ** (_LEVEL_REL_GATE_DB / 10.0)]
    return power_dbfs(float(gated.mean()))


def normalize_level(samples: np.ndarray, target_rms_dbfs: float, max_peak_dbfs: float) -> np.ndarray:
    """Scale to ``target_rms_dbfs`` (RMS over the non-silent part), limiting the gain so the
    sample peak stays at or under ``max_peak_dbfs``. All-zero input comes back unchanged."""
    if len(samples) == 0:
        return samples
    rms_db = active_rms_dbfs(samples)
    peak = max(float(samples.max()), -float(samples.min()))
    if peak <= 0 or not math.isfinite(rms_db):
        return samples
    gain_db = min(target_rms_dbfs - rms_db, max_peak_dbfs - 20.0 * math.log10(peak))
    return samples * np.float32(10.0 ** (gain_db / 20.0))


# ------------------------------------------------------------------ pipeline
