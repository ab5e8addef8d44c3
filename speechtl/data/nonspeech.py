"""Audio with no speech in it, made in code and seeded: what a phone line carries when nobody talks.

A voice agent hands the recognizer silence, line noise, mains hum, call
progress tones, keypad tones, a television in the next room. The correct
transcript of all of them is empty. :func:`make_clip` renders one clip of a
kind; :func:`nonspeech_items` writes a seeded set of them as manifest items
with an empty text, for training (the empty target) and for the held-out
no-speech test.

Kinds (:data:`KINDS`):

- ``silence``: digital zero, or dither far below speech level;
- ``white``, ``pink``, ``brown``: noise of three colours;
- ``hum``: 50 or 60 Hz mains hum with its harmonics;
- ``tone``: one steady sine between 200 Hz and 3.4 kHz;
- ``ringback``, ``busy``: call-progress cadences of European (425 Hz) and
  North American (440+480 Hz, 480+620 Hz) exchanges;
- ``dtmf``: a run of keypad digits (the standard row and column pairs);
- ``babble``: several speech-shaped, syllable-modulated noise talkers
  (no words: there is no speech in it to transcribe);
- ``music``: seeded note sequences with harmonics and decaying envelopes,
  a bass line and noise-burst percussion;
- ``codec``: low comfort noise through 8 kHz mu-law with lost frames and
  clicks, as a degraded line sounds.

Each clip's RMS level is drawn between -50 and -15 dBFS (``silence`` far
lower), its length between ``min_s`` and ``max_s``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from speechtl.data.manifest import RawItem
from speechtl.data.synth.channel import make_noise, mulaw_decode, mulaw_encode, power, resample
from speechtl.fsio import atomic_write_bytes

SAMPLE_RATE = 16000
KINDS = ("silence", "white", "pink", "brown", "hum", "tone", "ringback", "busy", "dtmf", "babble", "music", "codec")
DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = "123A456B789C*0#D"


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _sines(n: int, freqs: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    t = _t(n)
    return sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs) / max(len(freqs), 1)


def _cadence(n: int, on_s: float, off_s: float, rng: np.random.Generator) -> np.ndarray:
    """1 while the tone is on, 0 while off, starting at a random point of the cycle."""
    period = on_s + off_s
    phase = (_t(n) + rng.uniform(0, period)) % period
    return (phase < on_s).astype(np.float64)


def _silence(n: int, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        return np.zeros(n)
    return rng.standard_normal(n) * 10 ** (rng.uniform(-90, -70) / 20)  # dither: level set here, not rescaled


def _noise(kind: str) -> Callable[[int, np.random.Generator], np.ndarray]:
    def render(n: int, rng: np.random.Generator) -> np.ndarray:
        if kind == "brown":
            x = np.cumsum(rng.standard_normal(n))
            return x - np.convolve(x, np.ones(1601) / 1601, mode="same")  # no drift: a slow trend is not sound
        return make_noise(n, SAMPLE_RATE, kind, rng).astype(np.float64)
    return render


def _hum(n: int, rng: np.random.Generator) -> np.ndarray:
    base = 50.0 if rng.random() < 0.5 else 60.0
    t = _t(n)
    return sum(0.7 ** k * np.sin(2 * np.pi * base * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k in range(6))


def _tone(n: int, rng: np.random.Generator) -> np.ndarray:
    return _sines(n, [float(rng.choice([440.0, 1000.0, 1004.0, rng.uniform(200, 3400)]))], rng)


def _ringback(n: int, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:  # Europe: 425 Hz, 1 s on, 4 s off
        return _sines(n, [425.0], rng) * _cadence(n, 1.0, 4.0, rng)
    return _sines(n, [440.0, 480.0], rng) * _cadence(n, 2.0, 4.0, rng)  # North America: 2 s on, 4 s off


def _busy(n: int, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        return _sines(n, [425.0], rng) * _cadence(n, 0.5, 0.5, rng)
    return _sines(n, [480.0, 620.0], rng) * _cadence(n, 0.5, 0.5, rng)


def _dtmf(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.5) * SAMPLE_RATE)
    while pos < n:
        key = int(rng.integers(len(DTMF_KEYS)))
        length = int(rng.uniform(0.07, 0.2) * SAMPLE_RATE)
        seg = _sines(min(length, n - pos), [DTMF_ROWS[key // 4], DTMF_COLS[key % 4]], rng)
        out[pos:pos + len(seg)] = seg
        pos += length + int(rng.uniform(0.06, 0.4) * SAMPLE_RATE)
    return out


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    root = rng.uniform(110, 220)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    beat = int(rng.uniform(0.15, 0.5) * SAMPLE_RATE)
    for start in range(0, n, beat):
        length = min(beat * int(rng.integers(1, 4)), n - start)
        t = _t(length)
        env = np.exp(-t * rng.uniform(2, 8))
        for octave, weight in ((2.0, 1.0), (0.5, 0.6)):  # melody and bass
            f = root * octave * 2 ** (rng.choice(scale) / 12)
            note = sum(0.5 ** k * np.sin(2 * np.pi * f * (k + 1) * t) for k in range(4))
            out[start:start + length] += weight * env * note
        if rng.random() < 0.4:  # a drum: a short noise burst
            hit = min(int(0.05 * SAMPLE_RATE), length)
            out[start:start + hit] += rng.standard_normal(hit) * np.exp(-_t(hit) * 60)
    return out


def _codec(n: int, rng: np.random.Generator) -> np.ndarray:
    narrow = resample(make_noise(n, SAMPLE_RATE, "pink", rng) * 0.05, SAMPLE_RATE, 8000)
    line = resample(mulaw_decode(mulaw_encode(narrow)), 8000, SAMPLE_RATE)[:n]
    line = np.pad(line, (0, n - len(line))).astype(np.float64)
    frame = SAMPLE_RATE // 50  # 20 ms packets, some lost
    for start in range(0, n, frame):
        if rng.random() < 0.1:
            line[start:start + frame] = 0.0
    for at in rng.integers(0, n, size=int(rng.integers(1, 6))):  # clicks
        line[at:at + 8] += rng.choice([-1.0, 1.0]) * 0.5
    return line


RENDER: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "silence": _silence, "white": _noise("white"), "pink": _noise("pink"), "brown": _noise("brown"),
    "hum": _hum, "tone": _tone, "ringback": _ringback, "busy": _busy, "dtmf": _dtmf, "babble": _noise("babble"),
    "music": _music, "codec": _codec,
}  # fmt: skip


def make_clip(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One 16 kHz float32 clip of ``kind``, at an RMS level drawn between -50 and -15 dBFS (silence: its own)."""
    if kind not in RENDER:
        raise ValueError(f"nonspeech: kind {kind!r} is not one of {KINDS}")
    if not seconds > 0:
        raise ValueError(f"nonspeech: seconds must be > 0, got {seconds}")
    x = RENDER[kind](max(1, int(round(seconds * SAMPLE_RATE))), rng)
    if kind != "silence":
        p = power(x)
        if p > 0:
            x = x / np.sqrt(p) * 10 ** (rng.uniform(-50, -15) / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def nonspeech_items(out_dir: Path | str, count: int, seed: int, *, kinds: Sequence[str] = KINDS,
                    min_s: float = 1.0, max_s: float = 10.0, prefix: str = "nonspeech") -> list[RawItem]:
    """Write ``count`` seeded clips (kinds in turn) to ``out_dir``; items with an empty text.

    Clip ``i`` depends only on (``seed``, ``i``, its kind), so a larger count keeps the first clips.
    Each item's ``speaker`` is its kind (a split by speaker then holds kinds out) and ``extra`` records
    the kind and length.
    """
    bad = sorted(set(kinds) - set(KINDS))
    if bad or not kinds:
        raise ValueError(f"nonspeech: kinds {bad or '[]'} not in {KINDS}")
    if not 0 < min_s <= max_s:
        raise ValueError(f"nonspeech: need 0 < min_s <= max_s, got {min_s}, {max_s}")
    out_dir = Path(out_dir)
    items = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        key = int.from_bytes(hashlib.sha256(f"{seed}\0{i}\0{kind}".encode()).digest()[:8], "little")
        rng = np.random.default_rng(key)
        seconds = float(rng.uniform(min_s, max_s))
        clip = make_clip(kind, seconds, rng)
        path = out_dir / f"{prefix}-{i:04d}-{kind}.wav"
        buf = io.BytesIO()
        sf.write(buf, clip, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        if not path.is_file() or path.read_bytes() != buf.getvalue():  # an unchanged clip keeps its file (and
            atomic_write_bytes(path, buf.getvalue())  # the encoder-cache rows keyed on it)
        items.append(RawItem(id=path.stem, text="", speaker=kind, audio_path=path,
                             extra={"nonspeech": kind, "seconds": round(seconds, 3)}))
    return items
