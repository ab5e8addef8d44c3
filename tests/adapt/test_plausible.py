"""A run fails on an evaluation no working model gives (WER over eval.max_wer, or no word at all), naming it.

The check sits in ``Run._check_plausible`` (speechtl/adapt/run.py); here it gets the real metrics of
``evaluate_manifest`` on a tone manifest decoded by stand-in transcribers, without training a model.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from tone_corpus import tone_rows  # noqa: E402

from speechtl.adapt.run import Run  # noqa: E402
from speechtl.data.manifest import write_jsonl  # noqa: E402
from speechtl.evaluate.decode import evaluate_manifest  # noqa: E402
from speechtl.evaluate.scoring import EvaluationError  # noqa: E402

TEXTS = ["hola qué tal", "buenos días", "muchas gracias"]


class Says:
    """A transcriber that answers every clip with the same text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def transcribe(self, audios, lang, *, prompt=None, batch_size=8):
        return [self.text for _ in audios]


def _metrics(tmp_path, text):
    manifest = tmp_path / "test.jsonl"
    write_jsonl(manifest, tone_rows(tmp_path, TEXTS))
    return evaluate_manifest(Says(text), manifest, tmp_path / "eval", lang="es")


def _check(tmp_path, metrics, max_wer=1.0):
    run = SimpleNamespace(recipe=SimpleNamespace(eval=SimpleNamespace(max_wer=max_wer)), run_dir=tmp_path / "run")
    Run._check_plausible(run, metrics, "adapted", "corpus/test")


def test_a_wer_over_100_percent_fails_naming_the_evaluation(tmp_path):
    metrics = _metrics(tmp_path, "uno dos tres cuatro cinco seis siete ocho")  # insertions: WER over 100 %
    assert metrics["wer"] > 1.0
    with pytest.raises(EvaluationError, match=r"eval adapted on corpus/test: WER \d+\.\d% over eval.max_wer 100%") \
            as caught:
        _check(tmp_path, metrics)
    assert "eval/adapted/corpus-test/hypotheses.jsonl" in str(caught.value)
    _check(tmp_path, metrics, max_wer=None)  # null: scored anyway (a random test model)


def test_every_hypothesis_empty_fails_though_the_wer_is_exactly_100_percent(tmp_path):
    metrics = _metrics(tmp_path, "")
    assert metrics["wer"] == 1.0  # not over the limit: only the no-word check catches it
    with pytest.raises(EvaluationError, match="eval adapted on corpus/test: not one word in any hypothesis"):
        _check(tmp_path, metrics)


def test_a_plausible_evaluation_passes(tmp_path):
    metrics = _metrics(tmp_path, "hola qué tal")  # one right, two wrong: a poor model, not a broken one
    assert 0 < metrics["wer"] < 1.0
    _check(tmp_path, metrics)
