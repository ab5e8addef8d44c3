"""Scoring clips without speech: the share of clips with any word, per kind, and the words written."""

from __future__ import annotations

import json

import pytest

from speechtl.data.manifest import Utterance, write_jsonl
from speechtl.data.nonspeech import nonspeech_items
from speechtl.evaluate.nonspeech import evaluate_nonspeech
from speechtl.evaluate.scoring import EvaluationError


class ByKind:
    """Writes a fixed text for some kinds of clip (from the file name), nothing for the others."""

    said = {"hum": "por favor intente de nuevo", "music": "♪", "white": "Gracias."}

    def transcribe_utterances(self, utts, lang, *, prompt=None, batch_size=8):
        return [next((t for k, t in self.said.items() if u.id.endswith(k)), "") for u in utts]


def manifest(tmp_path, count=12):
    items = nonspeech_items(tmp_path / "audio", count, seed=3, min_s=0.3, max_s=0.5)
    utts = [Utterance(id=i.id, audio_filepath=str(i.audio_path), text="", duration=i.extra["seconds"],
                      speaker=i.speaker, extra=dict(i.extra)) for i in items]
    path = tmp_path / "test.jsonl"
    write_jsonl(path, utts)
    return path


def test_counts_clips_with_words_per_kind(tmp_path):
    m = evaluate_nonspeech(ByKind(), manifest(tmp_path), tmp_path / "out", lang="es", model_name="fake")
    assert (m["num_clips"], m["clips_with_words"]) == (12, 2)  # hum and white; a music symbol is no word
    assert m["share_with_words"] == pytest.approx(2 / 12)
    assert m["per_kind"]["hum"] == {"clips": 1, "with_words": 1} and m["per_kind"]["music"]["with_words"] == 0
    assert dict(m["top_words"])["gracias"] == 1 and m["num_words"] == 6
    rows = [json.loads(line) for line in (tmp_path / "out" / "hypotheses.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["kind"] for r in rows if r["words"]} == {"hum", "white"}
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["clips_with_words"] == 2


def test_a_speech_utterance_is_refused(tmp_path):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [Utterance(id="u1", audio_filepath="x.wav", text="hola", duration=1.0)])
    with pytest.raises(EvaluationError, match="u1 is not a no-speech clip"):
        evaluate_nonspeech(ByKind(), path, tmp_path / "out", lang="es")
