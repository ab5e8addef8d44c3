"""Voice-agent channel simulation: level, noise, telephone band and codecs.

Works on any mono float audio, not only on synthetic speech::

    rng = np.random.default_rng(0)
    out, rate = simulate_channel(samples, 24000, ChannelConfig(codec="mulaw", snr_db=(10, 30)), rng)

The chain is: random gain (``level_jitter_db``) -> additive noise at a seeded
SNR -> resample to the codec's rate -> telephone band-limit (narrowband
codecs) -> codec encode + decode -> clip to [-1, 1] -> optional resample to
``output_rate``. The random choices for one item are drawn first
(:func:`draw_channel`) so that they can be recorded, then applied
(:func:`apply_channel`).

Codecs: ``mulaw`` is G.711 mu-law at 8 kHz (reference encoder, numpy); ``g722``
(16 kHz), ``gsm`` (GSM 06.10, 8 kHz) and ``opus`` (16 kHz, VoIP mode) go
through the ``ffmpeg`` command (encode, then decode). The output always has
the same duration as the input (codec padding trimmed, short output padded).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

log = logging.getLogger(__name__)

CODECS = ("none", "mulaw", "g722", "gsm", "opus")
NOISES = ("white", "pink", "babble")
CODEC_RATES = {"mulaw": 8000, "gsm": 8000, "g722": 16000, "opus": 16000}
NARROWBAND = ("mulaw", "gsm")
TELEPHONE_BAND_HZ = (300.0, 3400.0)


@dataclass(frozen=True)
class ChannelConfig:
    """What happens to audio between the talker and the recognizer."""

    codec: str = "none"  # one of CODECS: "none", "mulaw", "g722", "gsm", "opus"
    band: bool = True  # band-limit to 300-3400 Hz when the codec is narrowband (mulaw, gsm)
    snr_db: tuple[float, float] | None = None  # add noise at an SNR drawn uniformly from [low, high] dB; None = none
    noise: tuple[str, ...] = ("white", "pink")  # noise kinds drawn uniformly per item, from NOISES
    level_jitter_db: float = 0.0  # random gain drawn uniformly from [-level_jitter_db, +level_jitter_db] dB
    opus_bitrate_kbps: int = 16  # bitrate of the "opus" codec
    output_rate: int | None = None  # resample the result to this rate; None = the codec's rate (input rate for "none")
    seed: int = 0  # seed of the per-item generators in synthesize_corpus (simulate_channel uses the rng it is given)

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"channel: field 'codec' is {self.codec!r}, must be one of {CODECS}")
        if self.snr_db is not None:
            if len(self.snr_db) != 2 or not all(isinstance(v, int | float) for v in self.snr_db):
                raise ValueError(f"channel: field 'snr_db' is {self.snr_db!r}, must be a pair (low, high) of dB values")
            low, high = self.snr_db
            if low > high:
                raise ValueError(f"channel: field 'snr_db' is {self.snr_db!r}, low must not exceed high")
            object.__setattr__(self, "snr_db", (float(low), float(high)))
        if isinstance(self.noise, str) or not self.noise or any(n not in NOISES for n in self.noise):
            raise ValueError(f"channel: field 'noise' is {self.noise!r}, must be a non-empty tuple from {NOISES}")
        object.__setattr__(self, "noise", tuple(self.noise))
        if not self.level_jitter_db >= 0:
            raise ValueError(f"channel: field 'level_jitter_db' is {self.level_jitter_db}, must be >= 0")
        if not 6 <= self.opus_bitrate_kbps <= 510:
            raise ValueError(f"channel: field 'opus_bitrate_kbps' is {self.opus_bitrate_kbps}, must be in [6, 510]")
        if self.output_rate is not None and not 4000 <= self.output_rate <= 192000:
            raise ValueError(f"channel: field 'output_rate' is {self.output_rate}, must be in [4000, 192000] or None")

    def to_json(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "band": self.band,
            "snr_db": list(self.snr_db) if self.snr_db is not None else None,
            "noise": list(self.noise),
            "level_jitter_db": self.level_jitter_db,
            "opus_bitrate_kbps": self.opus_bitrate_kbps,
            "output_rate": self.output_rate,
            "seed": self.seed,
        }


class ChannelError(RuntimeError):
    """A codec run failed; the message names the codec and the tool's error."""


# ------------------------------------------------------------------ driver


def draw_channel(config: ChannelConfig, rng: np.random.Generator) -> dict[str, Any]:
    """The random choices for one item (gain, noise kind, SNR), as a JSON-able dict."""
    gain_db = float(rng.uniform(-config.level_jitter_db, config.level_jitter_db)) if config.level_jitter_db else 0.0
    params: dict[str, Any] = {"codec": config.codec, "gain_db": round(gain_db, 3)}
    if config.snr_db is not None:
        params["noise"] = config.noise[int(rng.integers(len(config.noise)))]
        params["snr_db"] = round(float(rng.uniform(*config.snr_db)), 3)
    if config.codec in NARROWBAND and config.band:
        params["band_hz"] = list(TELEPHONE_BAND_HZ)
    return params


def apply_channel(
    samples: np.ndarray, sample_rate: int, config: ChannelConfig, params: dict[str, Any], rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Apply the choices ``params`` (from :func:`draw_channel`); ``rng`` draws the noise itself."""
    x = _as_mono_float(samples)
    x = x * np.float32(10.0 ** (params.get("gain_db", 0.0) / 20.0))
    if "snr_db" in params:
        x = add_noise(x, sample_rate, params["snr_db"], params["noise"], rng)
    rate = sample_rate
    if config.codec != "none":
        codec_rate = CODEC_RATES[config.codec]
        x = resample(x, rate, codec_rate)
        rate = codec_rate
        if "band_hz" in params:
            x = band_limit(x, rate, *params["band_hz"])
        x = np.clip(x, -1.0, 1.0)
        if config.codec == "mulaw":
            x = mulaw_decode(mulaw_encode(x))
        else:
            x = ffmpeg_codec_roundtrip(x, rate, config.codec, config.opus_bitrate_kbps)
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    if config.output_rate is not None and config.output_rate != rate:
        x = resample(x, rate, config.output_rate)
        rate = config.output_rate
    return x, rate


def simulate_channel(
    samples: np.ndarray, sample_rate: int, config: ChannelConfig, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Pass mono float audio through the simulated channel; returns (float32 samples, sample rate)."""
    params = draw_channel(config, rng)
    return apply_channel(samples, sample_rate, config, params, rng)


def _as_mono_float(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1) if x.shape[1] <= 8 else x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"channel: samples must be mono (1-D) or (samples, channels), got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max + 1)
    return x.astype(np.float32, copy=False)


# ------------------------------------------------------------ level, noise


def power(x: np.ndarray) -> float:
    """Mean square of the samples (0 for empty input)."""
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def make_noise(num_samples: int, sample_rate: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise: ``white``, ``pink`` (1/f) or ``babble`` (several speech-shaped, syllable-modulated talkers)."""
    if kind == "white":
        noise = rng.standard_normal(num_samples)
    elif kind == "pink":
        noise = _shape(rng.standard_normal(num_samples), sample_rate, lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0)))
    elif kind == "babble":
        noise = np.zeros(num_samples)
        for _ in range(int(rng.integers(4, 8))):
            talker = _shape(rng.standard_normal(num_samples), sample_rate, _speech_shape)
            # syllabic envelope: low-passed (~4 Hz) noise, rectified, with pauses
            env = _shape(rng.standard_normal(num_samples), sample_rate, lambda f: (f < 5.0).astype(float))
            env = np.maximum(env - 0.3 * env.std(), 0.0)
            noise += talker * env
    else:
        raise ValueError(f"channel: unknown noise kind {kind!r}, must be one of {NOISES}")
    p = power(noise)
    return (noise / np.sqrt(p) if p > 0 else noise).astype(np.float32)


def _speech_shape(f: np.ndarray) -> np.ndarray:
    """Long-term speech spectrum, roughly: flat 150-500 Hz, -6 dB/octave above, nothing below 80 Hz."""
    gain = np.where(f < 500.0, 1.0, 500.0 / np.maximum(f, 1.0))
    return gain * (f > 80.0) * (f < 7000.0)


def _shape(x: np.ndarray, sample_rate: int, gain_of_hz) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    return np.fft.irfft(spectrum * gain_of_hz(freqs), n=len(x))


def add_noise(x: np.ndarray, sample_rate: int, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Add ``kind`` noise so that signal power / noise power is ``snr_db`` (powers over the whole item)."""
    p_signal = power(x)
    if p_signal == 0.0:
        log.debug("channel: silent input, no noise added (SNR undefined)")
        return x
    noise = make_noise(len(x), sample_rate, kind, rng)
    scale = np.sqrt(p_signal / 10.0 ** (snr_db / 10.0))
    return (x + noise * np.float32(scale)).astype(np.float32)


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of ``noisy`` against the aligned ``clean`` signal, in dB."""
    p_noise = power(noisy - clean)
    return float(10.0 * np.log10(power(clean) / p_noise)) if p_noise > 0 else float("inf")


# ------------------------------------------------------------ band, rates


def band_limit(x: np.ndarray, sample_rate: int, low_hz: float, high_hz: float, edge_hz: float = 100.0) -> np.ndarray:
    """Zero-phase band-pass (FFT) with raised-cosine edges ``edge_hz`` wide, centered on ``low_hz``/``high_hz``."""
    if len(x) == 0:
        return x

    def gain(f: np.ndarray) -> np.ndarray:
        def ramp(v: np.ndarray) -> np.ndarray:  # 0 below -1/2, 1 above +1/2, raised cosine between
            return 0.5 - 0.5 * np.cos(np.pi * np.clip(v + 0.5, 0.0, 1.0))

        return ramp((f - low_hz) / edge_hz) * ramp((high_hz - f) / edge_hz)

    return _shape(x.astype(np.float64), sample_rate, gain).astype(np.float32)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """High-quality resampling (soxr)."""
    if from_rate == to_rate:
        return x.astype(np.float32, copy=False)

    return soxr.resample(x.astype(np.float32, copy=False), from_rate, to_rate, quality="HQ").astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def fit_length(x: np.ndarray, num_samples: int) -> np.ndarray:
    """Cut or zero-pad to exactly ``num_samples``."""
    if len(x) >= num_samples:
        return x[:num_samples]
    return np.concatenate([x, np.zeros(num_samples - len(x), x.dtype)])


# ------------------------------------------------------------------ G.711


_MULAW_BIAS = 0x84


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """G.711 mu-law bytes (uint8) of float samples in [-1, 1].

    The reference (Sun/CCITT g711.c) segment encoder on 14-bit samples, vectorized. ffmpeg's pcm_mulaw differs
    on under 1% of samples (it rounds to the nearest level at segment edges); decoding is identical.
    """
    pcm = to_int16(x).astype(np.int32) >> 2  # arithmetic shift, as the reference does
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + (_MULAW_BIAS >> 2)  # 33 .. 8192
    segment = np.floor(np.log2(mag)).astype(np.int32) - 5  # 0..8; 8 = beyond the last segment
    code = (np.minimum(segment, 7) << 4) | ((mag >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def mulaw_decode(codes: np.ndarray) -> np.ndarray:
    """Float samples of G.711 mu-law bytes."""
    u = ~codes.astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    pcm = np.where(u & 0x80, -mag, mag)
    return (pcm / 32768.0).astype(np.float32)


# ------------------------------------------------------------------ ffmpeg

_FFMPEG_ENCODE = {
    "g722": (["-c:a", "g722", "-f", "g722"], ["-f", "g722"]),
    "gsm": (["-c:a", "libgsm", "-f", "gsm"], ["-f", "gsm"]),
    "opus": (["-c:a", "libopus", "-application", "voip", "-f", "ogg"], ["-f", "ogg"]),
}


_CODEC_DELAY = {"g722": 22}  # samples the decoded signal lags the input (QMF filter bank), measured


def ffmpeg_codec_roundtrip(x: np.ndarray, sample_rate: int, codec: str, opus_bitrate_kbps: int = 16) -> np.ndarray:
    """Encode and decode through ``ffmpeg``; returns float samples at ``sample_rate``, same length as ``x``."""
    if codec not in _FFMPEG_ENCODE:
        raise ValueError(f"channel: codec {codec!r} does not go through ffmpeg; those are {tuple(_FFMPEG_ENCODE)}")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ChannelError(f"channel: codec {codec!r} needs the ffmpeg command; install it (apt-get install ffmpeg)")
    enc_args, dec_format = _FFMPEG_ENCODE[codec]
    if codec == "opus":
        enc_args = [*enc_args[:2], "-b:a", f"{opus_bitrate_kbps}k", *enc_args[2:]]
    base = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error"]
    raw = ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1"]
    encoded = _run(codec, [*base, *raw, "-i", "pipe:0", *enc_args, "pipe:1"], to_int16(x).tobytes())
    decoded = _run(codec, [*base, *dec_format, "-i", "pipe:0", *raw, "pipe:1"], encoded)
    pcm = np.frombuffer(decoded, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    return fit_length(pcm[_CODEC_DELAY.get(codec, 0) :], len(x))


def _run(codec: str, cmd: list[str], data: bytes) -> bytes:
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise ChannelError(f"channel: ffmpeg failed for codec {codec!r} (exit {proc.returncode}): {message}")
    return proc.stdout
