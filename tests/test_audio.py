"""Tests for speechtl.audio: decoding, checks, conversion, atomic writes."""

from __future__ import annotations

import math
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechtl import audio, levels
from speechtl.audio import AudioConfig, AudioRejected

TONE_HZ = 440.0
TONE_S = 1.5
LEAD_S = 0.8  # silence before and after the tone in the fixtures
MARGIN_S = AudioConfig().trim_margin_s
HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def tone(sample_rate: int, seconds: float = TONE_S, amp: float = 0.5, hz: float = TONE_HZ,
         lead_s: float = LEAD_S) -> np.ndarray:
    """A sine with ``lead_s`` of digital silence on each side, float32 mono."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    body = amp * np.sin(2 * np.pi * hz * t)
    pad = np.zeros(int(lead_s * sample_rate))
    return np.concatenate([pad, body, pad]).astype(np.float32)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


# ------------------------------------------------------------------ fixtures: builders
# Each builder writes one file into a directory and returns its path.


def _wav_stereo_44k(d: Path) -> Path:
    mono = tone(44100)
    sf.write(d / "stereo.wav", np.stack([mono, 0.5 * mono], axis=1), 44100, subtype="PCM_16")
    return d / "stereo.wav"


def _wav_u8(d: Path) -> Path:
    sf.write(d / "u8.wav", tone(8000), 8000, subtype="PCM_U8")
    return d / "u8.wav"


def _wav_24(d: Path) -> Path:
    sf.write(d / "pcm24.wav", tone(48000, amp=0.05), 48000, subtype="PCM_24")
    return d / "pcm24.wav"


def _wav_float(d: Path) -> Path:
    sf.write(d / "float.wav", tone(22050), 22050, subtype="FLOAT")
    return d / "float.wav"


def _flac_16k(d: Path) -> Path:
    sf.write(d / "plain.flac", tone(16000), 16000, subtype="PCM_16")
    return d / "plain.flac"


def _source_16k(d: Path) -> Path:
    src = d / "src16k.wav"
    if not src.exists():
        sf.write(src, tone(16000), 16000, subtype="PCM_16")
    return src


def _source_48k(d: Path) -> Path:
    src = d / "src48k.wav"
    if not src.exists():
        sf.write(src, tone(48000), 48000, subtype="PCM_16")
    return src


def _mp3(d: Path) -> Path:
    ffmpeg("-i", str(_source_48k(d)), "-c:a", "libmp3lame", "-b:a", "128k", str(d / "tone.mp3"))
    return d / "tone.mp3"


def _opus(d: Path) -> Path:
    ffmpeg("-i", str(_source_48k(d)), "-c:a", "libopus", "-b:a", "64k", str(d / "tone.opus"))
    return d / "tone.opus"


def _m4a(d: Path) -> Path:
    ffmpeg("-i", str(_source_48k(d)), "-c:a", "aac", "-b:a", "128k", str(d / "tone.m4a"))
    return d / "tone.m4a"


def _m4a_index_at_end(d: Path) -> Path:
    """12 s of AAC with the mp4 index after the data: ffmpeg reading a pipe gets no samples."""
    src = d / "src12s.wav"
    sf.write(src, tone(44100, seconds=12.0, lead_s=0.0), 44100, subtype="PCM_16")
    ffmpeg("-i", str(src), "-c:a", "aac", "-b:a", "128k", str(d / "late_index.m4a"))
    return d / "late_index.m4a"


def _g722(d: Path) -> Path:
    ffmpeg("-i", str(_source_16k(d)), "-ar", "16000", "-ac", "1", "-f", "g722", str(d / "tone.g722"))
    return d / "tone.g722"


def _nan(d: Path) -> Path:
    x = tone(16000)
    x[1000] = np.nan
    sf.write(d / "nan.wav", x, 16000, subtype="FLOAT")
    return d / "nan.wav"


def _zeros(d: Path) -> Path:
    sf.write(d / "zeros.wav", np.zeros(32000, dtype=np.float32), 16000, subtype="PCM_16")
    return d / "zeros.wav"


def _quiet_noise(d: Path) -> Path:
    noise = np.random.default_rng(0).normal(0, 10 ** (-75 / 20), 32000).astype(np.float32)  # ~ -75 dBFS
    sf.write(d / "quiet.wav", noise, 16000, subtype="FLOAT")
    return d / "quiet.wav"


def _clipped(d: Path) -> Path:
    t = np.arange(32000) / 16000
    square = np.sign(np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    sf.write(d / "clipped.wav", square, 16000, subtype="PCM_16")
    return d / "clipped.wav"


def _short(d: Path) -> Path:
    sf.write(d / "short.wav", tone(16000, seconds=0.1, lead_s=0.0), 16000, subtype="PCM_16")
    return d / "short.wav"


def _long(d: Path) -> Path:
    sf.write(d / "long.wav", tone(16000, seconds=40.0, lead_s=0.0), 16000, subtype="PCM_16")
    return d / "long.wav"


def _no_frames(d: Path) -> Path:
    sf.write(d / "noframes.wav", np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    return d / "noframes.wav"


def _zero_bytes(d: Path) -> Path:
    (d / "zero.wav").write_bytes(b"")
    return d / "zero.wav"


def _garbage(d: Path) -> Path:
    (d / "garbage.wav").write_bytes(b"definitely not audio, just text " * 64)
    return d / "garbage.wav"


def _missing(d: Path) -> Path:
    return d / "does_not_exist.wav"


FFMPEG_BUILDERS = {_mp3, _opus, _m4a, _m4a_index_at_end, _g722}


@pytest.fixture(scope="module")
def make(tmp_path_factory):
    """Build a fixture file once per module; skips ffmpeg-made files when ffmpeg is missing."""
    d = tmp_path_factory.mktemp("audio_src")
    cache: dict = {}

    def build(builder):
        if builder in FFMPEG_BUILDERS and not HAVE_FFMPEG:
            pytest.skip("ffmpeg/ffprobe not installed: cannot build or decode this fixture")
        if builder not in cache:
            cache[builder] = builder(d)
        return cache[builder]

    return build


# ------------------------------------------------------------------ helpers


def dbfs_rms(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.square(x, dtype=np.float64))))


def dominant_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[np.argmax(spectrum)])


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# ------------------------------------------------------------------ good inputs

GOOD = [
    # builder, source rate, source channels, format prefix, level tolerance (dB)
    (_wav_stereo_44k, 44100, 2, "WAV/PCM_16", 0.3),
    (_wav_u8, 8000, 1, "WAV/PCM_U8", 0.3),
    (_wav_24, 48000, 1, "WAV/PCM_24", 0.3),
    (_wav_float, 22050, 1, "WAV/FLOAT", 0.3),
    (_flac_16k, 16000, 1, "FLAC/PCM_16", 0.3),
    (_mp3, 48000, 1, "", 1.0),
    (_opus, 48000, 1, "", 1.0),
    (_m4a, 48000, 1, "ffmpeg/aac", 1.0),
    (_g722, 16000, 1, "ffmpeg/adpcm_g722", 1.0),
]


@pytest.mark.parametrize("builder,src_rate,src_channels,fmt,level_tol", GOOD, ids=[g[0].__name__ for g in GOOD])
def test_good_input_becomes_16k_mono_trimmed_normalized(make, tmp_path, builder, src_rate, src_channels, fmt,
                                                        level_tol):
    src = make(builder)
    config = AudioConfig()
    dst = tmp_path / "out.wav"
    info = audio.prepare_file(dst, config, src=src)

    meta = sf.info(str(dst))
    assert (meta.samplerate, meta.channels, meta.subtype, meta.format) == (16000, 1, "PCM_16", "WAV")
    assert info.sample_rate == 16000 and info.num_samples == meta.frames
    assert info.source_sample_rate == src_rate and info.source_channels == src_channels
    assert info.source_format.startswith(fmt)
    assert info.source_duration_s == pytest.approx(TONE_S + 2 * LEAD_S, abs=0.1)

    # trimming: the tone plus one margin on each side (10 ms frame granularity, codec smear)
    assert info.duration_s == pytest.approx(TONE_S + 2 * MARGIN_S, abs=0.06)
    out, _ = sf.read(str(dst), dtype="float32")
    core = out[int(0.3 * 16000): -int(0.3 * 16000)]  # well inside the tone
    assert dbfs_rms(core) == pytest.approx(config.target_rms_dbfs, abs=level_tol)
    assert 20 * math.log10(np.abs(out).max()) <= config.max_peak_dbfs + 0.01
    assert dominant_hz(core, 16000) == pytest.approx(TONE_HZ, abs=3)
    assert leftovers(tmp_path) == []


def test_flac_output_and_load(make, tmp_path):
    dst = tmp_path / "out.flac"
    info = audio.prepare_file(dst, AudioConfig(output_format="flac"), src=make(_wav_stereo_44k))
    meta = sf.info(str(dst))
    assert (meta.format, meta.subtype, meta.samplerate, meta.channels) == ("FLAC", "PCM_16", 16000, 1)
    loaded = audio.load(dst)
    assert loaded.dtype == np.float32 and loaded.ndim == 1 and len(loaded) == info.num_samples
    at8k = audio.load(dst, sample_rate=8000)
    assert len(at8k) == pytest.approx(info.num_samples / 2, abs=2)


# ------------------------------------------------------------------ bad inputs

BAD = [
    (_nan, "nonfinite"),
    (_no_frames, "empty"),
    (_clipped, "clipped"),
    (_zeros, "silent"),
    (_quiet_noise, "silent"),
    (_short, "too_short"),
    (_long, "too_long"),
    (_zero_bytes, "unreadable"),
    (_garbage, "unreadable"),
    (_missing, "unreadable"),
]


@pytest.mark.parametrize("builder,reason", BAD, ids=[b[0].__name__ for b in BAD])
def test_bad_input_is_rejected_with_reason(make, tmp_path, builder, reason):
    src = make(builder)
    dst = tmp_path / "out.wav"
    with pytest.raises(AudioRejected) as caught:
        audio.prepare_file(dst, AudioConfig(), src=src)
    assert caught.value.reason == reason
    assert str(caught.value) == f"{reason}: {caught.value.detail}"
    assert not dst.exists() and list(tmp_path.iterdir()) == []
    if reason == "unreadable":
        assert str(src) in caught.value.detail  # names the file


@pytest.mark.parametrize(
    "builder,needle",
    [(_long, "> max 30.0 s"), (_short, "< min 0.3 s"), (_quiet_noise, "< min -60.0 dBFS"), (_clipped, "> max 1.00%")],
)
def test_rejection_detail_gives_value_and_limit(make, builder, needle):
    with pytest.raises(AudioRejected) as caught:
        audio.prepare_file(Path("/nonexistent/never-written.wav"), AudioConfig(), src=make(builder))
    assert needle in caught.value.detail


def test_segmentation_accepts_long_audio(make, tmp_path):
    info = audio.prepare_file(tmp_path / "long.wav", AudioConfig(segmentation=True), src=make(_long))
    assert info.duration_s == pytest.approx(40.0, abs=0.05)


@pytest.mark.parametrize(
    "samples,reason",
    [
        (np.array([0.1, np.inf, 0.2], dtype=np.float32), "nonfinite"),
        (np.zeros((0, 2), dtype=np.float32), "empty"),
        (np.zeros(0, dtype=np.float32), "empty"),
    ],
)
def test_process_rejects_in_memory(samples, reason):
    with pytest.raises(AudioRejected) as caught:
        audio.process(samples, 16000, AudioConfig())
    assert caught.value.reason == reason


def test_nonfinite_checked_before_empty_and_clipped_before_level():
    # clipping is judged on the source, even though level normalization would bring the peak down
    x = np.ones(16000, dtype=np.float32)
    with pytest.raises(AudioRejected, match="^clipped"):
        audio.process(x, 16000, AudioConfig())
    x = tone(16000, amp=1.0)
    x[:20] = np.nan
    with pytest.raises(AudioRejected, match="^nonfinite"):
        audio.process(x, 16000, AudioConfig())


@pytest.mark.parametrize(
    "dtype,full_scale,offset", [(np.int16, 32768, 0), (np.int32, 2**31, 0), (np.uint8, 128, 128), (np.float64, 1, 0)]
)
def test_process_accepts_integer_pcm(dtype, full_scale, offset):
    x = tone(16000)
    pcm = (x.astype(np.float64) * full_scale + offset).round(6).astype(dtype)
    out = audio.process(pcm, 16000, AudioConfig())
    np.testing.assert_allclose(out, audio.process(x, 16000, AudioConfig()), atol=0.02)


def test_few_clipped_samples_are_tolerated():
    x = tone(16000)
    x[2 * 16000: 2 * 16000 + 10] = 1.0  # 10 of 49600 samples
    out = audio.process(x, 16000, AudioConfig())
    assert out.dtype == np.float32 and out.ndim == 1


def test_prepare_file_from_memory_with_segment(tmp_path):
    sr = 22050
    stereo = np.stack([tone(sr), tone(sr)], axis=1)
    info = audio.prepare_file(tmp_path / "m.wav", AudioConfig(trim=False), samples=stereo, sample_rate=sr,
                              offset_s=LEAD_S, duration_s=1.0)
    assert info.source_format == "memory" and info.source_channels == 2 and info.source_sample_rate == sr
    assert info.source_duration_s == pytest.approx(1.0, abs=1e-3)
    assert info.duration_s == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("kwargs", [{}, {"src": "a.wav", "samples": np.zeros(10)}, {"samples": np.zeros(10)}])
def test_prepare_file_argument_errors(tmp_path, kwargs):
    with pytest.raises(ValueError):
        audio.prepare_file(tmp_path / "x.wav", AudioConfig(), **kwargs)


# ------------------------------------------------------------------ decoding


@pytest.mark.parametrize("builder", [_wav_stereo_44k, _m4a, _g722], ids=lambda b: b.__name__)
def test_decode_segment(make, builder):
    src = make(builder)
    full, rate = audio.decode(src)
    part, rate2 = audio.decode(src, offset_s=LEAD_S + 0.2, duration_s=0.5)
    assert rate2 == rate and part.dtype == np.float32 and part.ndim == 2
    assert part.shape[0] == pytest.approx(0.5 * rate, abs=0.01 * rate)
    assert np.abs(part).max() > 0.1  # inside the tone, not the leading silence
    past_end, _ = audio.decode(src, offset_s=100.0)
    assert past_end.shape[0] == 0


def test_decode_shapes_and_u8_scale(make):
    x, rate = audio.decode(make(_wav_u8))
    assert rate == 8000 and x.shape[1] == 1 and x.dtype == np.float32
    assert 0.45 < np.abs(x).max() <= 0.51  # unsigned 8-bit mapped to [-1, 1)


@pytest.mark.parametrize("builder", [_wav_stereo_44k, _flac_16k, _m4a, _m4a_index_at_end], ids=lambda b: b.__name__)
def test_decode_bytes_matches_decode(make, builder):
    src = make(builder)
    from_file, rate = audio.decode(src)
    from_bytes, rate2 = audio.decode_bytes(src.read_bytes())
    assert rate2 == rate and from_bytes.shape[1] == from_file.shape[1]
    assert from_file.shape[0] > 0.9 * rate
    assert abs(from_bytes.shape[0] - from_file.shape[0]) <= 2048  # container vs stream padding for aac
    if builder in (_wav_stereo_44k, _flac_16k):
        np.testing.assert_array_equal(from_bytes, from_file)


@pytest.mark.parametrize("data", [b"", b"garbage " * 100], ids=["empty", "garbage"])
def test_decode_bytes_unreadable(data):
    with pytest.raises(AudioRejected) as caught:
        audio.decode_bytes(data)
    assert caught.value.reason == "unreadable"


def test_without_ffmpeg_ffmpeg_formats_are_unreadable(make, monkeypatch):
    src = make(_m4a)
    monkeypatch.setattr(audio, "_ffmpeg_binary", lambda name: None)
    with pytest.raises(AudioRejected) as caught:
        audio.decode(src)
    assert caught.value.reason == "unreadable" and "ffmpeg" in caught.value.detail
    audio.decode(make(_wav_stereo_44k))  # soundfile formats need no ffmpeg


@pytest.mark.parametrize("offset_s,duration_s", [(-1.0, None), (0.0, 0.0), (0.0, -2.0), (math.nan, None)])
def test_decode_bad_segment(make, offset_s, duration_s):
    with pytest.raises(ValueError, match="offset_s|duration_s"):
        audio.decode(make(_flac_16k), offset_s=offset_s, duration_s=duration_s)


# ------------------------------------------------------------------ transforms


@pytest.mark.parametrize(
    "samples,expected",
    [
        (np.array([1.0, -1.0], dtype=np.float32), [1.0, -1.0]),
        (np.array([[1.0], [0.5]], dtype=np.float32), [1.0, 0.5]),
        (np.array([[1.0, 0.0], [0.5, 0.5]], dtype=np.float32), [0.5, 0.5]),
        (np.array([[0.3, 0.0, 0.6]], dtype=np.float64), [0.3]),
    ],
)
def test_to_mono(samples, expected):
    out = audio.to_mono(samples)
    assert out.dtype == np.float32 and out.ndim == 1
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_to_mono_rejects_3d():
    with pytest.raises(ValueError, match="shape"):
        audio.to_mono(np.zeros((2, 2, 2)))


def test_resample():
    x = tone(44100, seconds=1.0, lead_s=0.0)
    assert audio.resample(x, 16000, 16000) is x
    y = audio.resample(x, 44100, 16000)
    assert y.dtype == np.float32 and len(y) == pytest.approx(16000, abs=2)
    assert dominant_hz(y, 16000) == pytest.approx(TONE_HZ, abs=2)
    with pytest.raises(ValueError):
        audio.resample(x, 0, 16000)


@pytest.mark.parametrize(
    "lead_s,margin_s,expected_s",
    [(0.8, 0.15, TONE_S + 0.3), (0.8, 0.0, TONE_S), (0.1, 0.5, TONE_S + 0.2), (0.0, 0.15, TONE_S)],
)
def test_trim_silence(lead_s, margin_s, expected_s):
    x = tone(16000, lead_s=lead_s)
    out = levels.trim_silence(x, 16000, -40.0, margin_s)
    assert len(out) / 16000 == pytest.approx(expected_s, abs=0.011)


def test_trim_silence_all_zero_and_empty():
    assert len(levels.trim_silence(np.zeros(16000, dtype=np.float32), 16000, -40.0, 0.15)) == 0
    assert len(levels.trim_silence(np.zeros(0, dtype=np.float32), 16000, -40.0, 0.15)) == 0


def test_normalize_level_ignores_silence_and_limits_peak():
    x = tone(16000, amp=0.01)  # half of it digital silence
    y = levels.normalize_level(x, -23.0, -1.0)
    assert y.dtype == np.float32
    assert levels.active_rms_dbfs(y) == pytest.approx(-23.0, abs=0.05)
    # a single click on a quiet bed: reaching the RMS target would overshoot the peak limit
    z = np.full(16000, 0.001, dtype=np.float32)
    z[8000] = 0.5
    w = levels.normalize_level(z, -23.0, -1.0)
    assert 20 * math.log10(np.abs(w).max()) == pytest.approx(-1.0, abs=0.01)
    assert levels.active_rms_dbfs(w) < -23.0
    np.testing.assert_array_equal(levels.normalize_level(np.zeros(10, np.float32), -23, -1), 0)


# ------------------------------------------------------------------ writing


def test_write_audio_atomic_overwrite_and_clipping(tmp_path):
    dst = tmp_path / "sub" / "a.wav"
    audio.write_audio(dst, np.full(1600, 2.0, dtype=np.float32), 16000)  # out of range -> clipped, not wrapped
    back, _ = sf.read(str(dst), dtype="float32")
    assert back.min() > 0.99
    audio.write_audio(dst, np.zeros(800, dtype=np.float32), 16000)
    assert sf.info(str(dst)).frames == 800
    assert sorted(p.name for p in dst.parent.iterdir()) == ["a.wav"]


@pytest.mark.parametrize(
    "samples,fmt",
    [(np.zeros(0, np.float32), "wav"), (np.zeros((2, 2, 2), np.float32), "wav"), (np.zeros(10, np.float32), "mp3")],
)
def test_write_audio_errors_leave_nothing(tmp_path, samples, fmt):
    with pytest.raises(ValueError):
        audio.write_audio(tmp_path / "a.wav", samples, 16000, fmt)
    assert list(tmp_path.iterdir()) == []


def test_write_audio_failure_mid_write_removes_temp(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        audio.write_audio(tmp_path / "a.wav", np.zeros(10, np.float32), 16000)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ config and errors


@pytest.mark.parametrize(
    "field,value",
    [
        ("sample_rate", 0),
        ("sample_rate", 16000.0),
        ("sample_rate", True),
        ("min_duration_s", -0.1),
        ("max_duration_s", 0.0),
        ("max_duration_s", 0.1),  # below min_duration_s
        ("max_duration_s", math.inf),
        ("segmentation", "yes"),
        ("target_rms_dbfs", 3.0),
        ("target_rms_dbfs", -0.5),  # above max_peak_dbfs
        ("max_peak_dbfs", 1.0),
        ("trim", 1),
        ("trim_threshold_db", 10.0),
        ("trim_margin_s", -1.0),
        ("silence_dbfs", 0.0),
        ("clipped_share", 1.5),
        ("clipped_share", "0.1"),
        ("output_format", "mp3"),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AudioConfig(**{field: value})


def test_config_defaults_and_constants():
    config = AudioConfig()
    assert config.sample_rate == audio.TARGET_SAMPLE_RATE == 16000
    assert (config.max_duration_s, config.output_format, config.segmentation) == (30.0, "wav", False)


def test_audio_rejected_attributes_and_pickle():
    err = AudioRejected("too_long", "duration 41.2 s > max 30.0 s")
    assert (err.reason, err.detail, str(err)) == ("too_long", "duration 41.2 s > max 30.0 s",
                                                 "too_long: duration 41.2 s > max 30.0 s")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.detail) == (err.reason, err.detail)


def test_window_bounds_cut_long_audio_in_its_pauses():
    rate = 16000
    rng = np.random.default_rng(0)
    parts, pauses = [], []
    pos = 0
    for _ in range(12):  # 12 bursts of 4-6 s "speech" with 0.5-s pauses: about 65 s
        n = int(rng.uniform(4, 6) * rate)
        parts.append(rng.standard_normal(n).astype(np.float32) * 0.1)
        pos += n
        parts.append(np.zeros(rate // 2, np.float32))
        pauses.append((pos, pos + rate // 2))
        pos += rate // 2
    x = np.concatenate(parts)
    bounds = levels.window_bounds(x, rate, 30.0)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(x) and len(bounds) == 3
    assert all(hi - lo <= 30 * rate for lo, hi in bounds)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    for _, cut in bounds[:-1]:  # every cut falls inside a pause, never in a burst
        assert any(lo <= cut <= hi for lo, hi in pauses), cut
    assert levels.window_bounds(x[: 10 * rate], rate, 30.0) == [(0, 10 * rate)]
