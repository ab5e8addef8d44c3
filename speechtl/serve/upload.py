"""An uploaded file -> 16 kHz mono float32 audio, with the request's limits checked."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from speechtl.audio import AudioConfig, AudioRejected, decode, process, resample, to_mono
from speechtl.runtimes.transcript import RequestError


def decode_upload(data: bytes, suffix: str, name: str, max_duration_s: float) -> np.ndarray:
    """Uploaded bytes -> 16 kHz mono float32, decoded from a temporary file as ``speechtl transcribe`` does.

    Raises :class:`RequestError`: 400 for undecodable audio, 413 for audio over ``max_duration_s``.
    Digital silence is kept (it transcribes to little or nothing) rather than rejected.
    """
    fd, tmp = tempfile.mkstemp(prefix="speechtl-serve-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            samples, rate = decode(tmp)
        except AudioRejected as exc:
            raise RequestError(f"Audio file might be corrupted or unsupported: {exc.detail.replace(tmp, name)}",
                               "file") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    duration_s = len(samples) / rate
    if duration_s > max_duration_s:
        raise RequestError(f"Audio duration {duration_s:.1f} s is longer than the maximum of {max_duration_s:g} s.",
                           "file", status=413, code="audio_too_long")
    config = AudioConfig(trim=False, min_duration_s=0.0, segmentation=True, clipped_share=1.0)
    try:
        return process(samples, rate, config)
    except AudioRejected as exc:
        if exc.reason == "silent":
            return resample(to_mono(samples), rate, config.sample_rate).astype(np.float32)
        raise RequestError(f"Audio file is not usable ({name}: {exc})", "file") from exc
