"""One normalization path: the report's WER and the dev WER that picks ``best/`` agree on every hypothesis."""

import json

import pytest

from speechtl.data.manifest import Utterance
from speechtl.evaluate.decode import evaluate_manifest
from speechtl.evaluate.scoring import normalize_hypothesis
from speechtl.evaluate.verify import ReplayTranscriber
from speechtl.text.normalize import get_normalizer
from speechtl.train.loop import dev_wer

STRICT = get_normalizer("es")  # check_alphabet=True, as a training recipe may use


@pytest.mark.parametrize(("hyp", "expected", "reason"), [
    ("¡Hola, Señor!", "hola señor", None),
    ("...", "", "non_speech"),
    ("", "", "empty"),
    ("hola ωμέγα", "hola ωμέγα", "bad_chars"),  # off-alphabet words are kept: they count as errors
])
def test_normalize_hypothesis(hyp, expected, reason):
    text, why = normalize_hypothesis(hyp, "u0", STRICT)
    assert text == expected
    if reason == "non_speech":
        assert why in ("empty", "non_speech")
    else:
        assert why == reason


def test_dev_wer_and_report_wer_agree_on_rejected_hypotheses(tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    utts = [Utterance(id=f"u{i}", audio_filepath=str(wav), text=text, duration=1.0)
            for i, text in enumerate(["hola mundo", "buenos días", "la receta médica", "tome dos pastillas"])]
    hyps = ["hola mundo", "buenos ωμέγα días",  # rejected for its alphabet: kept, one insertion
            "...",  # nothing speakable: scored as empty, three deletions
            "tome tres pastillas"]
    in_training = dev_wer(utts, hyps, STRICT)
    metrics = evaluate_manifest(ReplayTranscriber([{"id": u.id, "hypothesis": h} for u, h in zip(utts, hyps)],
                                                  "replay"), utts, tmp_path / "eval", lang="es", normalizer=STRICT)
    assert in_training == pytest.approx(metrics["wer"])
    assert in_training == pytest.approx((1 + 3 + 1) / 10)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "hypotheses.jsonl").read_text().splitlines()]
    assert [r["hypothesis_rejected"] for r in rows][1] == "bad_chars"
