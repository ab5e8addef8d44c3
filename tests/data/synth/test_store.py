"""The shared synthesis store: keys follow every input, a second corpus reuses clips, corrupt clips are remade."""

from __future__ import annotations

import logging
import shutil

import pytest

from speechtl.data.synth import corpus as synth
from speechtl.data.synth import store
from speechtl.data.synth.channel import ChannelConfig
from speechtl.data.synth.corpus import SynthConfig, synthesize_corpus
from speechtl.data.synth.store import SynthStore, clip_key, store_root

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the espeak-ng command is not installed")
SENTENCES = [("t-0001", "Hola, buenos días."), ("t-0002", "La receta es para diez días.")]
BASE = {"engine": "espeak", "voice_id": "espeak-m1", "voice": {"variant": "m1", "speed": 160}, "lang": "es",
        "text": "hola", "sentence_id": "s-1", "channel": None, "channel_config": None}


@pytest.mark.parametrize("field, value", [
    ("text", "hola."), ("voice", {"variant": "m1", "speed": 161}), ("voice_id", "espeak-m2"), ("lang", "es-419"),
    ("sentence_id", "s-2"), ("channel", {"snr_db": 20.0}), ("channel_config", {"seed": 1}), ("engine", "kokoro"),
])  # fmt: skip
def test_clip_key_follows_every_input(field, value):
    assert clip_key(**{**BASE, field: value}) != clip_key(**BASE)
    assert clip_key(**dict(BASE)) == clip_key(**BASE)


def test_clip_key_follows_the_engine_version(monkeypatch):
    before = clip_key(**BASE)
    monkeypatch.setattr(store, "engine_version", lambda engine: "espeak-ng 9.9")
    assert clip_key(**BASE) != before


def test_store_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEECHTL_SYNTH_STORE", "")
    assert store_root() is None
    monkeypatch.delenv("SPEECHTL_SYNTH_STORE")
    monkeypatch.setenv("SPEECHTL_CACHE", str(tmp_path))
    assert store_root() == tmp_path / "synth"


def test_corrupt_clip_is_removed_never_used(tmp_path, caplog):
    s = SynthStore(tmp_path / "store")
    src = tmp_path / "a.wav"
    src.write_bytes(b"RIFF" + bytes(100))
    s.put("ab" * 32, src)
    assert s.fetch("ab" * 32, tmp_path / "copy.wav") and (tmp_path / "copy.wav").read_bytes() == src.read_bytes()
    stored = tmp_path / "store" / "ab" / f"{'ab' * 32}.wav"
    stored.write_bytes(b"RIFF" + bytes(99) + b"\x01")
    with caplog.at_level(logging.WARNING):
        assert not s.fetch("ab" * 32, tmp_path / "other.wav")
    assert "does not match its digest" in caplog.text
    assert not stored.exists() and not (tmp_path / "other.wav").exists()


@needs_espeak
def test_a_second_corpus_takes_its_clips_from_the_store(tmp_path, monkeypatch):
    made = []
    real = synth.synthesize

    def counting(text, voice, lang):
        made.append(text)
        return real(text, voice, lang)

    monkeypatch.setattr(synth, "synthesize", counting)
    config = SynthConfig(engine="espeak", num_voices=2, num_workers=1, channel=ChannelConfig(snr_db=(20, 30)))
    first = synthesize_corpus(SENTENCES, tmp_path / "run1", config)
    assert len(made) == 4
    second = synthesize_corpus(SENTENCES, tmp_path / "run2", config)
    assert len(made) == 4  # nothing spoken again
    for a, b in zip(first, second):
        assert a.audio_path.read_bytes() == b.audio_path.read_bytes() and a.extra == b.extra
    synthesize_corpus(SENTENCES, tmp_path / "run3", SynthConfig(engine="espeak", num_voices=2, num_workers=1,
                                                                channel=ChannelConfig(snr_db=(20, 30), seed=1)))
    assert len(made) == 8  # another channel seed: other clips


def test_the_code_digest_covers_the_engine_module_and_the_writing(monkeypatch):
    from speechtl.data.synth import corpus

    before = {engine: store.code_digest(engine) for engine in ("kokoro", "espeak")}
    assert before["kokoro"] != before["espeak"] and store.code_digest("kokoro") == before["kokoro"]
    monkeypatch.setattr(store, "ENGINE_CODE", {"kokoro": ("espeak.py",), "espeak": ("espeak.py",)})
    assert store.code_digest("kokoro") != before["kokoro"]  # another module speaking: other clips
    writer = corpus.writer_digest()
    corpus.writer_digest.cache_clear()
    monkeypatch.setattr(corpus, "write_wav", lambda path, samples, rate: None)  # how files are written counts
    assert corpus.writer_digest() != writer
    corpus.writer_digest.cache_clear()
