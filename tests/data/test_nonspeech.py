"""No-speech clips: every kind renders at its level and length, seeded, with the signal its name promises."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechtl.data.nonspeech import DTMF_COLS, DTMF_ROWS, KINDS, SAMPLE_RATE, make_clip, nonspeech_items


def dbfs(x: np.ndarray) -> float:
    return 10 * np.log10(max(float(np.mean(np.square(x, dtype=np.float64))), 1e-30))


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_seeded_at_its_level(kind):
    a = make_clip(kind, 3.0, np.random.default_rng(1))
    assert a.dtype == np.float32 and len(a) == 3 * SAMPLE_RATE and np.all(np.isfinite(a))
    assert np.abs(a).max() <= 1.0
    assert np.array_equal(a, make_clip(kind, 3.0, np.random.default_rng(1)))
    level = dbfs(a)
    if kind == "silence":
        assert level <= -69.0
    else:
        assert -50.5 <= level <= -14.5, level
        assert not np.array_equal(a, make_clip(kind, 3.0, np.random.default_rng(2)))


def test_tones_are_where_their_names_put_them():
    rng = np.random.default_rng(0)
    hum = make_clip("hum", 2.0, rng)
    assert round(peak_hz(hum)) in (50, 60)
    dtmf = make_clip("dtmf", 4.0, rng)
    spectrum = np.abs(np.fft.rfft(dtmf))
    freqs = np.fft.rfftfreq(len(dtmf), 1 / SAMPLE_RATE)
    top = freqs[np.argsort(spectrum)[-40:]]
    grid = np.array(DTMF_ROWS + DTMF_COLS)
    assert all(np.min(np.abs(grid - f)) < 15 for f in top)  # all energy sits on the keypad frequencies


def test_call_progress_cadence_has_its_silences():
    x = make_clip("ringback", 12.0, np.random.default_rng(3))
    frames = x[: len(x) // 800 * 800].reshape(-1, 800)  # 50 ms frames
    off = np.mean(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) < 1e-6)
    assert 0.55 <= off <= 0.85  # 4 s off in a 5 s or 6 s cycle


def test_items_are_written_with_an_empty_text(tmp_path):
    items = nonspeech_items(tmp_path, 14, seed=7, min_s=0.5, max_s=1.5)
    assert [i.speaker for i in items] == [*KINDS, *KINDS[:2]]
    assert all(i.text == "" and i.extra["nonspeech"] == i.speaker for i in items)
    for item in items:
        data, rate = sf.read(item.audio_path)
        assert rate == SAMPLE_RATE and 0.5 * rate <= len(data) <= 1.5 * rate + 1
    again = nonspeech_items(tmp_path / "b", 3, seed=7, min_s=0.5, max_s=1.5)
    assert [sf.read(i.audio_path)[0].tolist() for i in again] == [sf.read(i.audio_path)[0].tolist()
                                                                   for i in items[:3]]


@pytest.mark.parametrize("kwargs, message", [
    ({"kinds": ["hiss"]}, "hiss"), ({"min_s": 2.0, "max_s": 1.0}, "min_s"),
])  # fmt: skip
def test_bad_settings_name_themselves(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        nonspeech_items(tmp_path, 2, seed=0, **kwargs)
    with pytest.raises(ValueError, match="kind 'hiss'"):
        make_clip("hiss", 1.0, np.random.default_rng(0))
