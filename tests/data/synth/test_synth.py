"""Tests for speechtl.data.synth.corpus, speechtl.data.synth.kokoro and speechtl.data.synth.channel."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from speechtl.data.synth import channel as ch
from speechtl.data.synth import corpus as synth
from speechtl.data.synth import espeak, kokoro
from speechtl.data.synth.channel import ChannelConfig, simulate_channel
from speechtl.data.synth.corpus import (
    SynthConfig,
    SynthError,
    list_voices,
    read_sentences,
    synthesize_corpus,
    text_key,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the espeak-ng command is not installed")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg command is not installed")

SENTENCES = [("t-0001", "Hola, buenos días."), ("t-0002", "¿Dónde está la estación?")]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


def tone(freq_hz: float, sample_rate: int, duration_s: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(sample_rate * duration_s)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def band_energy_db(x: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    return float(10 * np.log10(spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum() + 1e-20))


# ------------------------------------------------------------------ espeak


@needs_espeak
def test_espeak_corpus_end_to_end_and_resume(tmp_path):
    config = SynthConfig(engine="espeak", num_voices=3, num_workers=2, seed=3)
    voices = list_voices(config)
    counted = []
    items = synthesize_corpus(SENTENCES, tmp_path, config, progress=counted.append)

    assert len(items) == 6 and sum(counted) == 6
    assert {i.speaker for i in items} == {v.id for v in voices}
    assert len({i.id for i in items}) == 6
    for item in items:
        key = text_key(dict(SENTENCES)[item.extra["sentence_id"]])
        assert item.audio_path == tmp_path / item.speaker / f"{item.extra['sentence_id']}-{key}.wav"
        samples, rate = read_wav(item.audio_path)
        assert rate >= 16000
        assert len(samples) / rate > 0.3
        assert np.sqrt(np.mean(samples**2)) > 0.01  # not silent
        assert item.text == dict(SENTENCES)[item.extra["sentence_id"]]
        assert item.extra["engine"] == "espeak" and item.extra["voice"] == next(
            v.params for v in voices if v.id == item.speaker
        )
        assert "reject" not in item.extra
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind

    # resume: only the missing file is made again, the others are not touched; what a killed synthesis
    # left half-written (no live writer holds it) is removed
    victim = items[0].audio_path
    victim.unlink()
    stale = victim.with_name(f".{victim.name}.k1ll3d00.tmp")
    stale.write_bytes(b"RIFF half")
    mtimes = {i.audio_path: i.audio_path.stat().st_mtime_ns for i in items[1:]}
    counted.clear()
    again = synthesize_corpus(SENTENCES, tmp_path, config, progress=counted.append)
    assert again == items and sum(counted) == 6
    assert victim.is_file() and not stale.exists()
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())

    # an edited sentence under the same id is spoken anew, never served from the old text's audio
    first_id, first_text = SENTENCES[0]
    edited = [(first_id, first_text + " otra vez"), *SENTENCES[1:]]
    changed = synthesize_corpus(edited, tmp_path, config)
    for old, new in zip(items, changed):
        if new.extra["sentence_id"] == first_id:
            assert new.audio_path != old.audio_path and new.audio_path.is_file()
            assert len(read_wav(new.audio_path)[0]) > len(read_wav(old.audio_path)[0])
        else:
            assert new.audio_path == old.audio_path


@needs_espeak
def test_espeak_voice_list_is_seeded_and_distinct():
    a = list_voices(SynthConfig(engine="espeak", num_voices=12, seed=0))
    b = list_voices(SynthConfig(engine="espeak", num_voices=12, seed=0))
    c = list_voices(SynthConfig(engine="espeak", num_voices=12, seed=1))
    assert a == b and [v.params for v in a] == [v.params for v in b]
    assert [v.id for v in a] != [v.id for v in c]
    assert len({v.id for v in a}) == 12
    female = espeak.ESPEAK_FEMALE + espeak.ESPEAK_FEMALE_EXTRA
    assert 1 <= sum(v.params["variant"] in female for v in a[:4]) <= 3  # both kinds of voice early on
    assert all(synth.SAFE_ID.match(v.id) for v in a)


@needs_espeak
def test_voices_per_sentence_is_seeded(tmp_path):
    sentences = [(f"s-{i}", "Uno dos tres.") for i in range(6)]
    config = SynthConfig(engine="espeak", num_voices=4, voices_per_sentence=2, num_workers=1, seed=5)
    items = synthesize_corpus(sentences, tmp_path, config)
    assert len(items) == 12
    per_sentence = {}
    for item in items:
        per_sentence.setdefault(item.extra["sentence_id"], []).append(item.speaker)
    assert all(len(v) == 2 for v in per_sentence.values())
    assert len({s for v in per_sentence.values() for s in v}) > 2  # not always the same two
    assert synthesize_corpus(sentences, tmp_path, config) == items


@needs_espeak
@needs_ffmpeg
def test_espeak_with_channel_records_choices_and_refuses_mixed_resume(tmp_path):
    channel = ChannelConfig(codec="g722", snr_db=(15.0, 25.0), level_jitter_db=2.0, seed=1)
    config = SynthConfig(engine="espeak", num_voices=1, num_workers=1, channel=channel)
    items = synthesize_corpus(SENTENCES[:1], tmp_path, config)
    samples, rate = read_wav(items[0].audio_path)
    assert rate == 16000 and len(samples) > 8000
    chosen = items[0].extra["channel"]
    assert chosen["codec"] == "g722" and 15 <= chosen["snr_db"] <= 25 and abs(chosen["gain_db"]) <= 2
    other = SynthConfig(engine="espeak", num_voices=1, num_workers=1, channel=ChannelConfig(codec="mulaw"))
    with pytest.raises(SynthError, match="voice.json: field 'channel'"):
        synthesize_corpus(SENTENCES[:1], tmp_path, other)


@needs_espeak
def test_failed_item_is_returned_for_quarantine(tmp_path, monkeypatch):
    real = synth.synthesize

    def flaky(text, voice, lang):
        if text.startswith("¿"):
            raise RuntimeError("boom")
        return real(text, voice, lang)

    monkeypatch.setattr(synth, "synthesize", flaky)
    config = SynthConfig(engine="espeak", num_voices=1, num_workers=1)
    items = synthesize_corpus(SENTENCES, tmp_path, config)
    good, bad = items
    assert "reject" not in good.extra and good.audio_path.is_file()
    assert bad.audio_path is None
    reject = bad.extra["reject"]
    assert reject["field"] == "audio" and reject["reason"] == "synth_failed"
    assert "t-0002" in reject["detail"] and bad.speaker in reject["detail"] and "espeak" in reject["detail"]
    assert "boom" in reject["detail"]


@needs_espeak
def test_every_item_failing_raises(tmp_path):
    config = SynthConfig(engine="espeak", lang="zz-nonexistent", num_voices=1, num_workers=1)
    with pytest.raises(SynthError, match="all 2 items failed.*t-0001.*espeak"):
        synthesize_corpus(SENTENCES, tmp_path, config)


@pytest.mark.parametrize(
    "sentences, message",
    [
        ([("a/b", "hola")], "sentence id 'a/b'"),
        ([("a", "hola"), ("a", "adiós")], "appears twice"),
        ([("a", "  ")], "sentence a: field 'text' is empty"),
    ],
)
def test_bad_sentences_are_refused(tmp_path, sentences, message):
    with pytest.raises(SynthError, match=message):
        synthesize_corpus(sentences, tmp_path, SynthConfig(engine="espeak", num_voices=1))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"engine": "festival"}, "engine"),
        ({"num_voices": 0}, "num_voices"),
        ({"num_voices": 2, "voices_per_sentence": 3}, "voices_per_sentence"),
        ({"num_workers": 0}, "num_workers"),
        ({"lang": "es; rm"}, "lang"),
    ],
)
def test_synth_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=f"field '{field}'"):
        SynthConfig(**kwargs)


def test_read_sentences(tmp_path):
    path = tmp_path / "citas.txt"
    path.write_text("# comentario\nHola.\n\n  Adiós, gracias.  \n#otra\nFin\n", encoding="utf-8")
    assert read_sentences(path) == [("citas-0002", "Hola."), ("citas-0004", "Adiós, gracias."), ("citas-0006", "Fin")]


def test_parse_streamed_wav_header():
    pcm = (np.arange(100, dtype="<i2") * 100).tobytes()
    header = b"RIFF" + (0x7FFFFFFF).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (22050).to_bytes(4, "little")
    header += (44100).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header += b"data" + (0x7FFFFFFF).to_bytes(4, "little")
    samples, rate = espeak.parse_wav_bytes(header + pcm)
    assert rate == 22050 and len(samples) == 100 and samples[1] == pytest.approx(100 / 32768)


# ------------------------------------------------------------------ kokoro

VOCAB = {c: i for i, c in enumerate(" ,.?!ʧʤabdeiklmnoprstuwxɡɾθβðɣʎɲʝˈˌːɪʊ̃", start=1)}


@pytest.mark.parametrize(
    "ipa, expected",
    [
        ("t^ʃˈile", "ʧˈile"),  # tied affricate -> its own symbol
        ("t͡ʃo d͡ʒa", "ʧo ʤa"),  # the IPA tie bar reads the same
        ("tɾˌe^ɪnta", "tɾˌeɪnta"),  # other ties: dropped, both halves kept
        ("ɡˈato gato", "ɡˈato ɡato"),  # ASCII g -> IPA ɡ
        ("kˈaːsa", "kˈaːsa"),  # stress and length kept
        ("kˈaˑsa", "kˈaːsa"),  # half-long -> long
        ("(en)wˈats(es) ˈap", "wˈats ˈap"),  # espeak language-switch flags removed
        ("pˈ\u00e3", "pˈa\u0303"),  # precomposed nasal vowel -> base + combining tilde the vocab has
        ("ħola  ʕa", "ola a"),  # nearest symbol (h, ʔ) not in this vocab either -> dropped
        ("ˈola, kˈomo estˈas?", "ˈola, kˈomo estˈas?"),  # punctuation the vocab has is kept
    ],
)
def test_map_ipa(ipa, expected):
    assert kokoro.map_ipa(ipa, VOCAB) == " ".join(expected.split())


def test_ipa_to_ids_and_unknown_symbols(caplog):
    with caplog.at_level(logging.DEBUG, logger="speechtl.data.synth.kokoro"):
        ids = kokoro.ipa_to_ids("ʧa☃ɬ", VOCAB)
    assert ids == [VOCAB["ʧ"], VOCAB["a"], VOCAB["l"]]  # ☃ dropped, ɬ -> l
    assert "☃" in caplog.text and "U+2603" in caplog.text


def test_chunk_phonemes_respects_the_limit():
    text = ", ".join(["ˈola kˈomo estˈas"] * 40) + "."
    chunks = kokoro.chunk_phonemes(text, max_tokens=50)
    assert all(0 < len(c) <= 50 for c in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")
    assert kokoro.chunk_phonemes("a" * 120, max_tokens=50) == ["a" * 50, "a" * 50, "a" * 20]


@needs_espeak
def test_phonemize_keeps_clause_punctuation():
    ipa = kokoro.phonemize("Hola, ¿qué tal? Bien... gracias.", "es")
    assert ipa.count(",") == 1 and "?" in ipa and "…" in ipa and ipa.endswith(".")
    assert "¿" not in ipa


KOKORO_PACKAGES = [kokoro.DATA_PACKAGE, *kokoro.PART_PACKAGES]
_missing = [p for p in KOKORO_PACKAGES if importlib.util.find_spec(p) is None]
needs_kokoro = pytest.mark.skipif(
    bool(_missing) or importlib.util.find_spec("onnxruntime") is None,
    reason=f"package {(_missing or ['onnxruntime'])[0].replace('_', '-')} is not installed "
    "(pip install 'speechtl[synth]')",
)


@needs_kokoro
def test_kokoro_voices_are_seeded_blends():
    voices = list_voices(SynthConfig(engine="kokoro", num_voices=24, seed=0))
    assert len({v.id for v in voices}) == 24
    assert voices == list_voices(SynthConfig(engine="kokoro", num_voices=24, seed=0))
    assert voices[:10] == list_voices(SynthConfig(engine="kokoro", num_voices=10, seed=0))  # growing keeps old ones
    assert voices[5:] != list_voices(SynthConfig(engine="kokoro", num_voices=24, seed=1))[5:]
    for voice in voices:
        assert sum(voice.params["mix"].values()) == pytest.approx(1.0, abs=0.01)
        assert 0.85 <= voice.params["speed"] <= 1.15 and abs(voice.params["pitch_semitones"]) <= 2
    assert any(len(v.params["mix"]) > 1 for v in voices)


@needs_espeak
@needs_kokoro
def test_kokoro_real_synthesis():
    voice = list_voices(SynthConfig(engine="kokoro", num_voices=6, seed=0))[5]  # a pitch-shifted blend
    samples, rate = synth.synthesize("Buenos días.", voice, "es")
    assert rate == 24000 and samples.dtype == np.float32
    assert 0.4 < len(samples) / rate < 4.0
    assert np.sqrt(np.mean(samples**2)) > 0.02 and np.max(np.abs(samples)) <= 1.0
    assert kokoro.model_path().stat().st_size == sum(
        (kokoro.package_dir(p) / "part.bin").stat().st_size for p in kokoro.PART_PACKAGES
    )


def test_missing_package_names_the_extra():
    with pytest.raises(kokoro.KokoroError, match=r"'no-such-package-xyz'.*speechtl\[synth\]"):
        kokoro.package_dir("no_such_package_xyz")


# ----------------------------------------------------------------- channel


def test_mulaw_keeps_the_tone_and_limits_the_band():
    rate = 16000
    x = tone(1000, rate) + tone(100, rate, amplitude=0.2) + tone(3800, rate, amplitude=0.2)
    y, out_rate = simulate_channel(x, rate, ChannelConfig(codec="mulaw"), np.random.default_rng(0))
    assert out_rate == 8000 and len(y) == 8000
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.fft.rfftfreq(len(y), 1 / out_rate)[np.argmax(spectrum)] == pytest.approx(1000, abs=2)
    inband = band_energy_db(y, out_rate, 900, 1100)
    assert inband - band_energy_db(y, out_rate, 50, 200) > 30
    assert inband - band_energy_db(y, out_rate, 3700, 3900) > 30
    unbanded, _ = simulate_channel(x, rate, ChannelConfig(codec="mulaw", band=False), np.random.default_rng(0))
    assert inband - band_energy_db(unbanded, out_rate, 50, 200) < 15  # the band-limit did the work


def test_mulaw_codec_round_trip():
    codes = np.arange(256, dtype=np.uint8)
    codes = codes[codes != 0x7F]  # "-0" decodes to 0, which encodes as "+0" (0xFF)
    assert np.array_equal(ch.mulaw_encode(ch.mulaw_decode(codes)), codes)
    x = tone(440, 8000)
    assert ch.measured_snr_db(x, ch.mulaw_decode(ch.mulaw_encode(x))) > 30


@pytest.mark.parametrize("noise", ["white", "pink", "babble"])
def test_noise_is_added_at_the_requested_snr(noise):
    x = tone(300, 16000, 2.0) + tone(1200, 16000, 2.0, 0.1)
    config = ChannelConfig(snr_db=(5.0, 20.0), noise=(noise,))
    rng = np.random.default_rng(1)
    params = ch.draw_channel(config, rng)
    y, rate = ch.apply_channel(x, 16000, config, params, rng)
    assert rate == 16000 and len(y) == len(x) and params["noise"] == noise
    assert abs(ch.measured_snr_db(x, y) - params["snr_db"]) < 1.0


def test_noise_colours_differ():
    rng = np.random.default_rng(0)
    tilt = {}
    for kind in ("white", "pink"):
        n = ch.make_noise(32000, 16000, kind, rng)
        assert ch.power(n) == pytest.approx(1.0, rel=1e-3)
        tilt[kind] = band_energy_db(n, 16000, 100, 500) - band_energy_db(n, 16000, 4000, 8000)
    assert tilt["pink"] - tilt["white"] > 5


def test_level_jitter_stays_within_bounds():
    x = tone(500, 16000, 0.5)
    gains = []
    for seed in range(30):
        y, _ = simulate_channel(x, 16000, ChannelConfig(level_jitter_db=4.0), np.random.default_rng(seed))
        gains.append(10 * np.log10(ch.power(y) / ch.power(x)))
    assert all(-4.0 - 1e-3 <= g <= 4.0 + 1e-3 for g in gains)
    assert max(gains) - min(gains) > 3.0  # it does vary


def test_channel_is_deterministic_for_a_seed():
    x = tone(700, 16000, 0.5)
    config = ChannelConfig(snr_db=(10, 20), noise=("white", "pink", "babble"), level_jitter_db=3)
    a, _ = simulate_channel(x, 16000, config, np.random.default_rng(7))
    b, _ = simulate_channel(x, 16000, config, np.random.default_rng(7))
    c, _ = simulate_channel(x, 16000, config, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@needs_ffmpeg
def test_g722_through_ffmpeg_keeps_length_and_alignment():
    x = tone(1000, 24000, 1.0)
    y, rate = simulate_channel(x, 24000, ChannelConfig(codec="g722"), np.random.default_rng(0))
    assert rate == 16000 and len(y) == 16000
    reference = ch.resample(x, 24000, 16000)
    assert ch.measured_snr_db(reference[500:-500], y[500:-500]) > 15  # decoder delay compensated


@needs_ffmpeg
@pytest.mark.parametrize("codec, rate", [("gsm", 8000), ("opus", 16000)])
def test_other_ffmpeg_codecs_keep_duration(codec, rate):
    x = tone(800, 16000, 0.7)
    y, out_rate = simulate_channel(x, 16000, ChannelConfig(codec=codec, output_rate=16000), np.random.default_rng(0))
    assert out_rate == 16000 and len(y) == len(x)
    assert ch.power(y) > 0.1 * ch.power(x)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"codec": "mp3"}, "codec"),
        ({"snr_db": (20.0, 10.0)}, "snr_db"),
        ({"snr_db": (1.0,)}, "snr_db"),
        ({"noise": ("brown",)}, "noise"),
        ({"noise": "white"}, "noise"),
        ({"level_jitter_db": -1.0}, "level_jitter_db"),
        ({"output_rate": 100}, "output_rate"),
    ],
)
def test_channel_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=f"field '{field}'"):
        ChannelConfig(**kwargs)


def test_holdout_speaks_each_sentence_only_with_voices_of_its_split(tmp_path):
    from speechtl.data.manifest import Utterance
    from speechtl.data.splits import SplitConfig, split

    sentences = [(f"s{i:02d}", f"Esta es la frase número {i}.") for i in range(12)]
    config = SynthConfig(engine="espeak", num_voices=6, voices_per_sentence=1, num_workers=1, seed=4)
    holdout = SplitConfig(dev_share=0.2, test_share=0.2, seed=9)
    items = synthesize_corpus(sentences, tmp_path, config, holdout=holdout)
    assert len(items) == len(sentences)
    from speechtl.text.normalize import get_normalizer

    norm = get_normalizer("es")
    utts = [Utterance(id=i.id, audio_filepath=str(i.audio_path), text=norm(i.text), speaker=i.speaker) for i in items]
    parts, leftovers = split(utts, holdout)
    assert leftovers == []  # every utterance usable, voices and sentences still disjoint
    assert all(parts[name] for name in ("train", "test"))
    assert not {u.speaker for u in parts["train"]} & {u.speaker for u in parts["test"]}
