"""An uploaded file -> 16 kHz mono float32 audio, its limits checked before and while it is decoded.

No upload costs more memory than its 16 kHz mono audio up to the duration limit, whatever its channels and
rate (eight channels at 192 kHz decode to 96 times the samples they end as):

1. the upload is copied to a temporary file (the job runs on a worker thread, and the request's spooled
   file may be closed under it when the client goes away);
2. its header is read -- ``soundfile.info``, or ffprobe for what libsndfile cannot open, for a stream
   whose length libsndfile does not know (a FLAC without its sample count) and for headerless telephony
   files -- and an upload over ``max_duration_s``, with more than :data:`MAX_CHANNELS` channels or a rate
   over :data:`MAX_SAMPLE_RATE` gets its 413 before any sample is decoded;
3. decoding streams: soundfile reads blocks of about a million samples, each mixed to mono and resampled
   to 16 kHz as it comes (soxr's stream resampler); ffmpeg mixes and resamples itself and stops one
   second past the limit (``-t``). The decoded length is measured too, so a header that understates it
   gets its 413 all the same. Decoding checks between blocks whether the request was abandoned;
4. the level is normalized as ``speechtl transcribe`` does (:func:`speechtl.audio.process`); digital
   silence is kept (it transcribes to little or nothing) rather than rejected.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from speechtl.audio import RAW_INPUTS, TARGET_SAMPLE_RATE, AudioConfig, AudioRejected, process, to_mono
from speechtl.runtimes.transcript import RequestError

MAX_CHANNELS = 8  # 7.1 surround; more is refused with 413 from the header
MAX_SAMPLE_RATE = 192_000  # Hz; higher is refused with 413 from the header
_BLOCK_SAMPLES = 1 << 20  # samples (all channels together) soundfile decodes at a time: 4 MiB of float32
_COPY_BYTES = 1 << 20
_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports SF_COUNT_MAX frames for a stream of unknown length
_PROBE_TIMEOUT_S = 30.0
_DECODE_TIMEOUT_S = 300.0  # ffmpeg decodes hours of audio in that time; a file that takes longer is refused
_POLL_S = 0.1  # how often a running ffmpeg is checked for an abandoned request
_SERVE_AUDIO = AudioConfig(trim=False, min_duration_s=0.0, segmentation=True, clipped_share=1.0)


class Cancelled(Exception):
    """The request's client went away; its decoding stopped."""


@dataclass(frozen=True)
class AudioHeader:
    """What an audio file's header says, before any decoding."""

    sample_rate: int  # Hz
    channels: int
    duration_s: float | None  # None when the header does not tell
    decoder: str  # "soundfile" or "ffmpeg": which decodes it


def decode_upload(source: BinaryIO, suffix: str, name: str, max_duration_s: float,
                  cancelled: threading.Event | None = None) -> np.ndarray:
    """An uploaded file (an open binary file, read from its start) -> 16 kHz mono float32, level-normalized.

    ``suffix`` (".wav", ...) picks the demuxer of headerless formats; ``name`` is the client's file name,
    the one error messages give. Raises :class:`RequestError` -- 400 for audio that cannot be decoded, 413
    for audio over ``max_duration_s``, :data:`MAX_CHANNELS` or :data:`MAX_SAMPLE_RATE` -- and
    :class:`Cancelled` once ``cancelled`` is set.
    """
    cancelled = cancelled or threading.Event()
    fd, tmp = tempfile.mkstemp(prefix="speechtl-serve-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            _copy(source, handle, cancelled)
        header = read_header(tmp, suffix, name)
        check_header(header, name, max_duration_s)
        if header.decoder == "soundfile":
            mono = _soundfile_mono(tmp, header, name, max_duration_s, cancelled)
        else:
            mono = _ffmpeg_mono(tmp, RAW_INPUTS.get(suffix.lower(), []), name, max_duration_s, cancelled)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return _levelled(mono, name)


def _copy(source: BinaryIO, dest: BinaryIO, cancelled: threading.Event) -> None:
    try:
        source.seek(0)
        while chunk := source.read(_COPY_BYTES):
            if cancelled.is_set():
                raise Cancelled
            dest.write(chunk)
    except ValueError as exc:  # the request's file was closed: the request is over
        raise Cancelled from exc


def read_header(path: str, suffix: str, name: str) -> AudioHeader:
    """The header of the audio file at ``path``: libsndfile's reading, else ffprobe's. Raises
    :class:`RequestError` (400) for a file neither can read."""
    if suffix.lower() not in RAW_INPUTS:
        try:
            info = sf.info(path)
        except Exception:  # noqa: BLE001 -- libsndfile raises several types for what it cannot read; ffprobe tries
            info = None
        if info is not None and 0 <= info.frames < _UNKNOWN_FRAMES and info.samplerate > 0:
            return AudioHeader(info.samplerate, info.channels, info.frames / info.samplerate, "soundfile")
    return _ffprobe_header(path, RAW_INPUTS.get(suffix.lower(), []), name)


def _ffprobe_header(path: str, input_args: list[str], name: str) -> AudioHeader:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise _unreadable(name, "libsndfile cannot read it, and ffmpeg is not installed")
    command = [ffprobe, "-v", "error", "-protocol_whitelist", "file", *input_args, "-i", path,
               "-select_streams", "a:0", "-show_entries", "stream=sample_rate,channels,duration:format=duration",
               "-of", "json"]
    try:
        probe = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                               timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _unreadable(name, f"ffprobe did not finish in {_PROBE_TIMEOUT_S:g} s") from None
    if probe.returncode != 0:
        raise _unreadable(name, "ffprobe: " + _last_line(probe.stderr, path, name))
    try:
        found = json.loads(probe.stdout or b"{}")
        stream = (found.get("streams") or [{}])[0]
        rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _unreadable(name, "no audio stream found") from None
    duration_s = _seconds(stream.get("duration"))
    if duration_s is None:
        duration_s = _seconds((found.get("format") or {}).get("duration"))
    return AudioHeader(rate, channels, duration_s, "ffmpeg")


def check_header(header: AudioHeader, name: str, max_duration_s: float) -> None:
    """413 (:class:`RequestError`) when the header alone puts the file over a limit; 400 for nonsense."""
    if header.channels <= 0 or header.sample_rate <= 0:
        raise _unreadable(name, f"bad stream parameters (sample_rate={header.sample_rate}, "
                          f"channels={header.channels})")
    if header.channels > MAX_CHANNELS:
        raise RequestError(f"{name} has {header.channels} audio channels; at most {MAX_CHANNELS} are accepted.",
                           "file", status=413, code="too_many_channels")
    if header.sample_rate > MAX_SAMPLE_RATE:
        raise RequestError(f"{name} has a sample rate of {header.sample_rate} Hz; at most {MAX_SAMPLE_RATE} Hz "
                           "is accepted.", "file", status=413, code="sample_rate_too_high")
    if header.duration_s is not None and header.duration_s > max_duration_s:
        raise _too_long(header.duration_s, max_duration_s)


def _soundfile_mono(path: str, header: AudioHeader, name: str, max_duration_s: float,
                    cancelled: threading.Event) -> np.ndarray:
    """libsndfile's decoding, block by block, each mixed to mono and resampled to 16 kHz."""
    rate = header.sample_rate
    max_frames = math.floor(max_duration_s * rate)
    block_frames = max(1024, _BLOCK_SAMPLES // header.channels)
    stream = soxr.ResampleStream(rate, TARGET_SAMPLE_RATE, 1, dtype="float32", quality="HQ") \
        if rate != TARGET_SAMPLE_RATE else None
    pieces, frames = [], 0
    try:
        with sf.SoundFile(path) as handle:
            while len(block := handle.read(block_frames, dtype="float32", always_2d=True)):
                if cancelled.is_set():
                    raise Cancelled
                frames += len(block)
                if frames > max_frames:
                    raise _too_long(None, max_duration_s)
                mono = to_mono(block)
                pieces.append(stream.resample_chunk(mono) if stream is not None else mono.copy())
        if stream is not None:
            pieces.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    except RuntimeError as exc:  # libsndfile's errors
        raise _unreadable(name, f"soundfile: {str(exc).replace(path, name)}") from exc
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def _ffmpeg_mono(path: str, input_args: list[str], name: str, max_duration_s: float,
                 cancelled: threading.Event) -> np.ndarray:
    """ffmpeg's decoding to 16 kHz mono, cut one second past the limit (enough to tell that it goes on)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise _unreadable(name, "libsndfile cannot read it, and ffmpeg is not installed")
    command = [ffmpeg, "-nostdin", "-v", "error", "-protocol_whitelist", "file", *input_args, "-i", path,
               "-map", "0:a:0", "-t", f"{max_duration_s + 1.0:.3f}", "-ac", "1", "-ar", str(TARGET_SAMPLE_RATE),
               "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    returncode, out, err = _run_cancellable(command, cancelled, name)
    if returncode != 0:
        raise _unreadable(name, "ffmpeg: " + _last_line(err, path, name))
    samples = np.frombuffer(out, dtype="<f4", count=len(out) // 4)
    if len(samples) > max_duration_s * TARGET_SAMPLE_RATE + TARGET_SAMPLE_RATE // 100:  # 10 ms of resampling slack
        raise _too_long(None, max_duration_s)
    return samples.astype(np.float32)


def _run_cancellable(command: list[str], cancelled: threading.Event, name: str) -> tuple[int, bytes, bytes]:
    """Run ``command`` to its end, or kill it when the request is abandoned or it runs too long."""
    deadline = time.monotonic() + _DECODE_TIMEOUT_S
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        while True:
            try:
                out, err = proc.communicate(timeout=_POLL_S)
                return proc.returncode, out, err
            except subprocess.TimeoutExpired:
                if not cancelled.is_set() and time.monotonic() < deadline:
                    continue
                proc.kill()
                proc.communicate()
                if cancelled.is_set():
                    raise Cancelled from None
                raise _unreadable(name, f"decoding took over {_DECODE_TIMEOUT_S:g} s") from None


def _levelled(mono: np.ndarray, name: str) -> np.ndarray:
    try:
        return process(mono, TARGET_SAMPLE_RATE, _SERVE_AUDIO)
    except AudioRejected as exc:
        if exc.reason == "silent":
            return np.ascontiguousarray(mono, dtype=np.float32)
        raise RequestError(f"Audio file is not usable ({name}: {exc})", "file") from exc


def _too_long(duration_s: float | None, max_duration_s: float) -> RequestError:
    told = f"Audio duration {duration_s:.1f} s is" if duration_s is not None else "The audio is"
    return RequestError(f"{told} longer than the maximum of {max_duration_s:g} s.", "file", status=413,
                        code="audio_too_long")


def _unreadable(name: str, detail: str) -> RequestError:
    return RequestError(f"Audio file might be corrupted or unsupported: {name}: {detail}", "file")


def _seconds(value: object) -> float | None:
    """A duration as ffprobe writes it ("12.5", "N/A", absent) -> seconds, or None."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _last_line(stderr: bytes, path: str, name: str) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return (lines[-1] if lines else "no error message").replace(path, name)
