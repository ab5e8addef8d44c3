"""Audio: decode anything, turn it into 16 kHz mono training audio, check it.

Decoding tries soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, ...)
first and falls back to an ffmpeg subprocess for what libsndfile cannot read
(m4a/aac, raw telephony codecs such as ``.g722``, video containers). Headerless
telephony files are recognized by their extension and go straight to ffmpeg
with the demuxer options they need.

:func:`process` runs the checks and the pipeline in a fixed order::

    nonfinite -> empty -> clipped (on the source) -> mono -> resample
      -> silent -> trim -> too_short / too_long -> level

and raises :class:`AudioRejected` with a short reason code and a detail that
gives the measured value and the limit. :func:`prepare_file` is the whole
decode -> process -> atomic write step for one item.

Everything is vectorized numpy; frame energies use a reshape into 10 ms frames.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from speechtl.fsio import atomic_file
from speechtl.levels import normalize_level, power_dbfs, trim_silence

log = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 16000

REASONS = ("unreadable", "empty", "nonfinite", "clipped", "silent", "too_short", "too_long")
OUTPUT_FORMATS = ("wav", "flac")

_FULL_SCALE = 0.999  # |x| at or above this counts as a full-scale (clipped) sample

# Headerless formats ffmpeg cannot probe: extension -> ffmpeg input options.
RAW_INPUTS: dict[str, list[str]] = {
    ".g722": ["-f", "g722"],  # 16 kHz mono (the g722 demuxer default)
    ".722": ["-f", "g722"],
    ".ulaw": ["-f", "mulaw", "-ar", "8000", "-ac", "1"],
    ".alaw": ["-f", "alaw", "-ar", "8000", "-ac", "1"],
    ".gsm": ["-f", "gsm"],
    ".sln": ["-f", "s16le", "-ar", "8000", "-ac", "1"],
    ".sln16": ["-f", "s16le", "-ar", "16000", "-ac", "1"],
}


class AudioRejected(Exception):
    """An audio item is unusable for training; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # keep it picklable across worker processes
        return (type(self), (self.reason, self.detail))


def _check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"AudioConfig.{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"AudioConfig.{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"AudioConfig.{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


@dataclass(frozen=True)
class AudioConfig:
    """How source audio becomes training audio."""

    sample_rate: int = TARGET_SAMPLE_RATE  # output sample rate in Hz
    min_duration_s: float = 0.3  # shorter than this after trimming -> "too_short"
    max_duration_s: float = 30.0  # longer than this after trimming -> "too_long" (Whisper's window)
    segmentation: bool = False  # True: long audio is kept (segmented later), never "too_long"
    target_rms_dbfs: float = -23.0  # level target: RMS over the non-silent part, dBFS
    max_peak_dbfs: float = -1.0  # gain is limited so the sample peak stays at or under this, dBFS
    trim: bool = True  # cut leading and trailing silence
    trim_threshold_db: float = -40.0  # frame energy relative to the loudest frame below which lead/tail is silence
    trim_margin_s: float = 0.15  # silence kept on each side after trimming, seconds
    silence_dbfs: float = -60.0  # whole-clip RMS below this (dBFS) -> "silent"
    clipped_share: float = 0.01  # share of source samples at full scale (|x| >= 0.999) above which -> "clipped"
    output_format: str = "wav"  # "wav" or "flac", both 16-bit PCM

    def __post_init__(self) -> None:
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ValueError(f"AudioConfig.sample_rate must be a positive integer (Hz), got {self.sample_rate!r}")
        _check_number("min_duration_s", self.min_duration_s, low=0.0)
        _check_number("max_duration_s", self.max_duration_s, low=0.0, low_open=True)
        if self.max_duration_s < self.min_duration_s:
            raise ValueError(
                f"AudioConfig.max_duration_s ({self.max_duration_s}) must be >= min_duration_s ({self.min_duration_s})"
            )
        for name in ("segmentation", "trim"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"AudioConfig.{name} must be true or false, got {getattr(self, name)!r}")
        _check_number("target_rms_dbfs", self.target_rms_dbfs, high=0.0, high_open=True)
        _check_number("max_peak_dbfs", self.max_peak_dbfs, high=0.0)
        if self.target_rms_dbfs > self.max_peak_dbfs:
            raise ValueError(
                f"AudioConfig.target_rms_dbfs ({self.target_rms_dbfs}) must be <= max_peak_dbfs "
                f"({self.max_peak_dbfs}): an RMS level can never exceed the peak"
            )
        _check_number("trim_threshold_db", self.trim_threshold_db, high=0.0, high_open=True)
        _check_number("trim_margin_s", self.trim_margin_s, low=0.0)
        _check_number("silence_dbfs", self.silence_dbfs, high=0.0, high_open=True)
        _check_number("clipped_share", self.clipped_share, low=0.0, high=1.0)
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"AudioConfig.output_format must be one of {OUTPUT_FORMATS}, got {self.output_format!r}")


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`prepare_file` wrote and where it came from."""

    duration_s: float  # written audio length, seconds
    num_samples: int  # written audio length, samples
    sample_rate: int  # written audio rate, Hz
    source_sample_rate: int  # rate of the decoded source, Hz
    source_channels: int  # channels of the decoded source
    source_format: str  # e.g. "WAV/PCM_U8", "MP3/MPEG_LAYER_III", "ffmpeg/aac", "memory"
    source_duration_s: float  # decoded source (segment) length before trimming, seconds


# ------------------------------------------------------------------ decoding


def _soundfile_read(source: Any, offset_s: float, duration_s: float | None) -> tuple[np.ndarray, int, str]:
    with sf.SoundFile(source) as handle:
        rate = handle.samplerate
        fmt = f"{handle.format}/{handle.subtype}"
        start = int(round(offset_s * rate))
        frames = -1 if duration_s is None else int(round(duration_s * rate))
        if start > 0:
            if handle.frames > 0 and start >= handle.frames:
                return np.zeros((0, handle.channels), dtype=np.float32), rate, fmt
            handle.seek(start)
        data = handle.read(frames, dtype="float32", always_2d=True)
    return data, rate, fmt


def _ffmpeg_binary(name: str) -> str | None:
    """Path of ``ffmpeg``/``ffprobe``, or None when not installed."""
    return shutil.which(name)


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def _ffmpeg_read(path: str, input_args: list[str], data: bytes | None, offset_s: float,
                 duration_s: float | None) -> tuple[np.ndarray, int, str]:
    """Decode with ffprobe + ffmpeg; ``path`` may be ``pipe:0`` with ``data`` fed on stdin. Raises RuntimeError."""
    ffprobe, ffmpeg = _ffmpeg_binary("ffprobe"), _ffmpeg_binary("ffmpeg")
    if ffprobe is None or ffmpeg is None:
        raise RuntimeError("ffmpeg/ffprobe not installed (needed for this format)")
    probe = subprocess.run(
        [ffprobe, "-v", "error", *input_args, "-i", path, "-select_streams", "a:0",
         "-show_entries", "stream=codec_name,sample_rate,channels", "-of", "json"],
        input=data, capture_output=True, check=False,
    )
    if probe.returncode != 0:
        raise RuntimeError(f"ffprobe: {_last_line(probe.stderr)}")
    try:
        streams = json.loads(probe.stdout or b"{}").get("streams") or []
        stream = streams[0]
        rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeError("ffprobe: no audio stream found") from exc
    if rate <= 0 or channels <= 0:
        raise RuntimeError(f"ffprobe: bad stream parameters (sample_rate={rate}, channels={channels})")
    seek = ["-ss", f"{offset_s:.6f}"] if offset_s > 0 else []
    limit = ["-t", f"{duration_s:.6f}"] if duration_s is not None else []
    proc = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", *seek, *limit, *input_args, "-i", path, "-map", "0:a:0",
         "-ac", str(channels), "-ar", str(rate), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"],
        input=data, capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg: {_last_line(proc.stderr)}")
    usable = len(proc.stdout) - len(proc.stdout) % (4 * channels)
    samples = np.frombuffer(proc.stdout, dtype="<f4", count=usable // 4).reshape(-1, channels)
    return samples.astype(np.float32, copy=True), rate, f"ffmpeg/{stream.get('codec_name', 'unknown')}"


def _check_segment(where: str, offset_s: float, duration_s: float | None) -> None:
    if not math.isfinite(offset_s) or offset_s < 0:
        raise ValueError(f"{where}: offset_s must be a finite number >= 0, got {offset_s!r}")
    if duration_s is not None and (not math.isfinite(duration_s) or duration_s <= 0):
        raise ValueError(f"{where}: duration_s must be a finite number > 0 or None, got {duration_s!r}")


def _decode(path: Path | str, offset_s: float = 0.0,
            duration_s: float | None = None) -> tuple[np.ndarray, int, str]:
    """:func:`decode` plus the source format name."""
    path = Path(path)
    _check_segment(str(path), offset_s, duration_s)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioRejected("unreadable", f"{path}: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise AudioRejected("unreadable", f"{path}: not a regular file")
    if size == 0:
        raise AudioRejected("unreadable", f"{path}: zero-byte file")
    raw_args = RAW_INPUTS.get(path.suffix.lower())
    errors = []
    if raw_args is None:
        try:
            return _soundfile_read(str(path), offset_s, duration_s)
        except Exception as exc:  # libsndfile raises several types for unknown formats
            errors.append(f"soundfile: {exc}")
    try:
        samples, rate, fmt = _ffmpeg_read(str(path), raw_args or [], None, offset_s, duration_s)
    except (RuntimeError, OSError) as exc:
        errors.append(str(exc))
        raise AudioRejected("unreadable", f"{path}: " + "; ".join(errors)) from exc
    log.debug("decoded %s with ffmpeg (%s)", path, fmt)
    return samples, rate, fmt


def decode(path: Path | str, offset_s: float = 0.0, duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file (or the segment ``offset_s`` .. ``offset_s + duration_s``).

    Returns float32 samples shaped ``(num_samples, channels)`` and the sample
    rate. Raises :class:`AudioRejected` ("unreadable") naming the file and the
    decoder error for missing, empty or undecodable files.
    """
    samples, rate, _ = _decode(path, offset_s, duration_s)
    return samples, rate


def _decode_bytes(data: bytes) -> tuple[np.ndarray, int, str]:
    if not data:
        raise AudioRejected("unreadable", "<bytes>: zero bytes")
    try:
        return _soundfile_read(io.BytesIO(data), 0.0, None)
    except Exception as exc:
        sf_error = f"soundfile: {exc}"
    # ffmpeg gets a temporary file, not stdin: mp4/m4a with the index ("moov") at the end
    # needs seeking, and from a pipe ffmpeg then returns no samples without an error.
    fd, tmp = tempfile.mkstemp(prefix="speechtl-audio-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return _ffmpeg_read(tmp, [], None, 0.0, None)
    except (RuntimeError, OSError) as exc:
        raise AudioRejected("unreadable", f"<bytes, {len(data)} bytes>: {sf_error}; {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


def decode_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Like :func:`decode`, from in-memory encoded audio (ffmpeg reads a temporary file as a fallback)."""
    samples, rate, _ = _decode_bytes(data)
    return samples, rate


# ------------------------------------------------------------------ transforms


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels: ``(n, ch)`` or ``(n,)`` -> ``(n,)`` float32."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise ValueError(f"to_mono: expected samples shaped (n,) or (n, channels), got shape {samples.shape}")
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0].astype(np.float32, copy=False)
    if channels == 0:
        return np.zeros(samples.shape[0], dtype=np.float32)
    out = samples[:, 0].astype(np.float32, copy=True)
    for channel in range(1, channels):
        out += samples[:, channel]
    out *= np.float32(1.0 / channels)
    return out


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float32 audio with soxr ("HQ"); returns the input unchanged when the rates match."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"resample: sample rates must be positive, got {sr_in} -> {sr_out}")
    if sr_in == sr_out or len(samples) == 0:
        return samples

    return soxr.resample(np.ascontiguousarray(samples, dtype=np.float32), sr_in, sr_out, quality="HQ")


def _as_float32(samples: np.ndarray) -> np.ndarray:
    """Float32 view or copy; integer PCM is scaled to [-1, 1) (uint8 is offset by 128)."""
    samples = np.asarray(samples)
    if samples.dtype == np.float32:
        return samples
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.integer):
        return samples.astype(np.float32) / np.float32(-float(np.iinfo(samples.dtype).min))
    return samples.astype(np.float32)


def process(samples: np.ndarray, sample_rate: int, config: AudioConfig) -> np.ndarray:
    """Check and convert decoded audio; returns float32 mono at ``config.sample_rate``.

    ``samples`` is float (full scale 1.0) or integer PCM, shaped ``(n,)`` or ``(n, channels)``.

    Raises :class:`AudioRejected` at the first failed check (see the module
    docstring for the order); the detail gives the measured value and the limit.
    """
    samples = _as_float32(samples)
    if sample_rate <= 0:
        raise ValueError(f"process: sample_rate must be positive, got {sample_rate}")
    if not np.isfinite(samples).all():
        bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
        raise AudioRejected("nonfinite", f"{bad} of {samples.size} samples are NaN or Inf (limit 0)")
    if samples.size == 0:
        raise AudioRejected("empty", "no samples in the audio")
    if float(samples.max()) >= _FULL_SCALE or float(samples.min()) <= -_FULL_SCALE:
        clipped = int(np.count_nonzero(samples >= _FULL_SCALE) + np.count_nonzero(samples <= -_FULL_SCALE))
        share = clipped / samples.size
        if share > config.clipped_share:
            raise AudioRejected(
                "clipped",
                f"{share:.2%} of samples at full scale (|x| >= {_FULL_SCALE}) > max {config.clipped_share:.2%}",
            )
    mono = resample(to_mono(samples), sample_rate, config.sample_rate)
    rate = config.sample_rate
    rms_db = power_dbfs(float(np.dot(mono, mono)) / len(mono)) if len(mono) else -math.inf
    if rms_db < config.silence_dbfs:
        raise AudioRejected("silent", f"RMS {rms_db:.1f} dBFS < min {config.silence_dbfs:.1f} dBFS")
    if config.trim:
        mono = trim_silence(mono, rate, config.trim_threshold_db, config.trim_margin_s)
    duration = len(mono) / rate
    if duration < config.min_duration_s:
        raise AudioRejected("too_short", f"duration {duration:.2f} s < min {config.min_duration_s} s")
    if duration > config.max_duration_s and not config.segmentation:
        raise AudioRejected("too_long", f"duration {duration:.1f} s > max {config.max_duration_s} s")
    return np.ascontiguousarray(normalize_level(mono, config.target_rms_dbfs, config.max_peak_dbfs),
                                dtype=np.float32)


def write_audio(path: Path | str, samples: np.ndarray, sample_rate: int, output_format: str = "wav") -> None:
    """Write 16-bit PCM wav or flac atomically (temporary name beside ``path``, then rename).

    Samples beyond [-1, 1] are clipped rather than wrapped.
    """

    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"write_audio {path}: output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    path = Path(path)
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2) or samples.size == 0:
        raise ValueError(f"write_audio {path}: expected non-empty samples shaped (n,) or (n, ch), got {samples.shape}")
    if samples.dtype != np.float32:
        samples = samples.astype(np.float32)
    if float(samples.max()) > 1.0 or float(samples.min()) < -1.0:
        samples = np.clip(samples, -1.0, 1.0)
    with atomic_file(path, "wb") as handle:
        sf.write(handle, samples, sample_rate, subtype="PCM_16", format=output_format.upper())


def prepare_file(dst: Path | str, config: AudioConfig, *, src: Path | str | None = None,
                 samples: np.ndarray | None = None, sample_rate: int | None = None,
                 offset_s: float = 0.0, duration_s: float | None = None) -> AudioInfo:
    """Decode ``src`` (or take in-memory ``samples`` at ``sample_rate``), process, write ``dst``.

    ``offset_s``/``duration_s`` select a segment of either source. Raises
    :class:`AudioRejected` for unusable audio; ``dst`` is then left untouched.
    """
    if (src is None) == (samples is None):
        raise ValueError(f"prepare_file {dst}: give exactly one of src= or samples=")
    if src is not None:
        data, rate, fmt = _decode(src, offset_s, duration_s)
    else:
        if sample_rate is None or sample_rate <= 0:
            raise ValueError(f"prepare_file {dst}: samples= needs a positive sample_rate=, got {sample_rate!r}")
        _check_segment(f"prepare_file {dst}", offset_s, duration_s)
        data, rate, fmt = np.asarray(samples), int(sample_rate), "memory"
        start = int(round(offset_s * rate))
        stop = None if duration_s is None else start + int(round(duration_s * rate))
        if start or stop is not None:
            data = data[start:stop]
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    out = process(data, rate, config)
    write_audio(dst, out, config.sample_rate, config.output_format)
    return AudioInfo(
        duration_s=len(out) / config.sample_rate,
        num_samples=len(out),
        sample_rate=config.sample_rate,
        source_sample_rate=rate,
        source_channels=channels,
        source_format=fmt,
        source_duration_s=len(data) / rate,
    )


def load(path: Path | str, sample_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Float32 mono audio at ``sample_rate`` (no checks, no trimming, no level change)."""
    samples, rate = decode(path)
    return np.ascontiguousarray(resample(to_mono(samples), rate, sample_rate), dtype=np.float32)
