"""The machine-wide transcript store: hits, misses on any changed input, corrupt rows decoded again."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechtl.data.manifest import Utterance
from speechtl.evaluate.cached_decodes import DecodeCache, read_store, weights_key


class Counting:
    """Transcribes a clip as the count of its samples; records what it was asked to decode."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def transcribe(self, audios, lang, *, prompt=None, batch_size=8):
        self.calls.append(len(audios))
        return [f"{lang} {len(a)} {prompt or ''}".strip() for a in audios]


def clip(path: Path, n: int, value: float = 0.1) -> Path:
    sf.write(path, np.full(n, value, np.float32), 16000, subtype="FLOAT")
    return path


@pytest.fixture
def utts(tmp_path: Path) -> list[Utterance]:
    return [Utterance(id=f"u{i}", audio_filepath=str(clip(tmp_path / f"u{i}.wav", 1600 * (i + 1))), text="x")
            for i in range(3)]


def cache(inner, tmp_path: Path, key: str = "m1", settings: dict | None = None) -> DecodeCache:
    return DecodeCache(inner, key, settings or {"beams": 1}, root=tmp_path / "store")


def test_second_cache_answers_without_decoding(utts, tmp_path):
    first = Counting()
    hyps = cache(first, tmp_path).transcribe_utterances(utts, "es")
    assert hyps == ["es 1600", "es 3200", "es 4800"] and first.calls == [3]
    again = Counting()
    c = cache(again, tmp_path)
    assert c.transcribe_utterances(utts, "es") == hyps
    assert again.calls == [] and (c.hits, c.misses) == (3, 0)
    c.transcribe_utterances(utts[:1], "en")  # an append to a sound file adds rows, no blank or broken line
    assert read_store(tmp_path / "store" / "m1.jsonl") == ({**c._loaded()}, 0)
    assert len((tmp_path / "store" / "m1.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("change", ["audio", "lang", "prompt", "batch_size", "settings", "model"])
def test_any_changed_input_is_a_miss(utts, tmp_path, change):
    cache(Counting(), tmp_path).transcribe_utterances(utts, "es")
    inner = Counting()
    c = cache(inner, tmp_path, key="m2" if change == "model" else "m1",
              settings={"beams": 5} if change == "settings" else None)
    if change == "audio":  # same length and path, other samples
        clip(Path(utts[0].audio_filepath), 1600, value=0.2)
    kwargs = {"prompt": "hola"} if change == "prompt" else {"batch_size": 4} if change == "batch_size" else {}
    c.transcribe_utterances(utts, "en" if change == "lang" else "es", **kwargs)
    assert inner.calls == ([1] if change == "audio" else [3])


def test_corrupt_and_torn_rows_are_decoded_again(utts, tmp_path, caplog):
    cache(Counting(), tmp_path).transcribe_utterances(utts, "es")
    store = tmp_path / "store" / "m1.jsonl"
    lines = store.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace("es 1600", "es 9999")  # edited text: its check no longer matches
    store.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20], encoding="utf-8")  # last row torn by a kill
    assert read_store(store)[1] == 2
    inner = Counting()
    with caplog.at_level(logging.WARNING):
        hyps = cache(inner, tmp_path).transcribe_utterances(utts, "es")
    assert hyps == ["es 1600", "es 3200", "es 4800"] and inner.calls == [2]
    assert "2 corrupt rows" in caplog.text
    found, _ = read_store(store)
    assert sorted(found.values()) == hyps  # the decoded-again rows were appended


def test_weights_key_follows_every_weight():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    before = weights_key(model)
    assert weights_key(model) == before
    with torch.no_grad():
        model[1].bias += 1e-6
    assert weights_key(model) != before
    assert weights_key(model, {"stage": 4}) != weights_key(model)


class Detecting(Counting):
    """Also detects a clip's language: "es" for clips of under 4000 samples, else "pt"."""

    def detect_languages(self, audios, batch_size=8):
        self.calls.append(-len(audios))
        return ["es" if len(a) < 4000 else "pt" for a in audios]


def test_detected_languages_are_stored_beside_the_transcripts(utts, tmp_path):
    first = Detecting()
    c = cache(first, tmp_path)
    transcripts = c.transcribe_utterances(utts, "es")
    assert c.detect_utterances(utts) == ["es", "es", "pt"] and first.calls == [3, -3]  # not the transcripts' rows
    again = Detecting()
    c = cache(again, tmp_path)
    assert c.detect_utterances(utts) == ["es", "es", "pt"] and c.transcribe_utterances(utts, "es") == transcripts
    assert again.calls == [] and (c.hits, c.misses) == (6, 0)
    by_utts = Detecting()
    by_utts.detect_utterances = lambda batch, batch_size=8: ["fr"] * len(batch)  # e.g. from cached encoder outputs
    assert cache(by_utts, tmp_path, key="m3").detect_utterances(utts) == ["fr"] * 3 and by_utts.calls == []
