"""The term prompt's dev choice: kept only where it lowers the joined dev WER; reuses the alpha decodes."""

from pathlib import Path

import pytest

from speechtl.adapt.prompting import choose_prompt, without_prompt
from speechtl.config import ConfigError, EvalConfig
from speechtl.train.interpolate import DevScore, joined_wer

DEV = {"med/dev": Path("med.jsonl"), "nonspeech/dev": Path("ns.jsonl")}


def scorer(table, calls):
    def score(ref, manifest, prompt):
        calls.append((ref, prompt))
        return table[(ref, prompt is not None)]
    return score


def test_the_prompt_is_kept_when_the_joined_dev_wer_falls():
    # the prompt fixes 6 of 100 words on the domain set and writes 2 words on noise: 22 errors < 28
    table = {("med/dev", False): DevScore(0.25, 25, 100), ("med/dev", True): DevScore(0.19, 19, 100),
             ("nonspeech/dev", False): DevScore(0.1, 3, 0), ("nonspeech/dev", True): DevScore(0.2, 5, 0)}
    calls = []
    out = choose_prompt(DEV, scorer(table, calls), "amoxicilina, ibuprofeno")
    assert out["kept"] and out["prompt"] == "amoxicilina, ibuprofeno"
    # ... but named as the no-speech set, its rise from 10% to 20% of clips with words refuses the prompt
    assert not choose_prompt(DEV, scorer(table, []), "x", nonspeech="nonspeech/dev")["kept"]
    assert out["pooled_dev_wer"] == pytest.approx({"with": 0.24, "without": 0.28})
    assert out["dev_wer"]["with"] == {"med/dev": 0.19, "nonspeech/dev": 0.2}
    assert sorted(calls, key=str) == sorted([(r, p) for r in DEV for p in (None, "amoxicilina, ibuprofeno")], key=str)


def test_words_written_on_noise_can_outweigh_the_domain_gain():
    table = {("med/dev", False): DevScore(0.25, 25, 100), ("med/dev", True): DevScore(0.19, 19, 100),
             ("nonspeech/dev", False): DevScore(0.0, 0, 0), ("nonspeech/dev", True): DevScore(0.5, 7, 0)}
    out = choose_prompt(DEV, scorer(table, []), "x")
    assert not out["kept"] and out["pooled_dev_wer"]["with"] == pytest.approx(0.26)


def test_a_prompt_that_gets_words_on_more_no_speech_clips_is_refused_even_when_the_joined_wer_falls():
    # the medical run's case: the joined WER fell, and 7 of 24 no-speech clips got a term (none without)
    table = {("med/dev", False): DevScore(0.3, 300, 1000), ("med/dev", True): DevScore(0.28, 280, 1000),
             ("nonspeech/dev", False): DevScore(0.0, 0, 0), ("nonspeech/dev", True): DevScore(7 / 24, 7, 0)}
    out = choose_prompt(DEV, scorer(table, []), "x", nonspeech="nonspeech/dev")
    assert out["pooled_dev_wer"]["with"] < out["pooled_dev_wer"]["without"]
    assert not out["kept"] and out["reason"] == "more no-speech dev clips with words (29% against 0% without)"
    assert choose_prompt(DEV, scorer(table, []), "x")["kept"]  # without naming the no-speech set: WER alone


def test_a_tie_keeps_no_prompt():
    table = {(ref, p): DevScore(0.1, 10 if ref == "med/dev" else 0, 100 if ref == "med/dev" else 0)
             for ref in DEV for p in (False, True)}
    assert not choose_prompt(DEV, scorer(table, []), "x")["kept"]


def test_the_kept_alphas_dev_decodes_are_reused():
    interpolation = {"alpha": 0.5, "candidates": [
        {"alpha": 0.0, "dev_wer": {"med/dev": 0.4, "nonspeech/dev": 0.0},
         "dev_errors": {"med/dev": 40, "nonspeech/dev": 0}, "dev_words": {"med/dev": 100, "nonspeech/dev": 0}},
        {"alpha": 0.5, "dev_wer": {"med/dev": 0.3, "nonspeech/dev": 0.1},
         "dev_errors": {"med/dev": 30, "nonspeech/dev": 2}, "dev_words": {"med/dev": 100, "nonspeech/dev": 0}}]}
    without = without_prompt(interpolation)
    assert without == {"med/dev": DevScore(0.3, 30, 100), "nonspeech/dev": DevScore(0.1, 2, 0)}
    assert joined_wer(without) == pytest.approx(0.32)
    table = {("med/dev", True): DevScore(0.2, 20, 100), ("nonspeech/dev", True): DevScore(0.0, 0, 0)}
    calls = []
    out = choose_prompt(DEV, scorer(table, calls), "x", without)
    assert all(prompt == "x" for _, prompt in calls) and len(calls) == 2  # nothing decoded twice
    assert out["kept"] and out["pooled_dev_wer"]["without"] == pytest.approx(0.32)
    assert without_prompt(None) is None


def test_term_prompt_setting_is_checked():
    assert EvalConfig(primary="a/test", terms="t.txt", term_prompt="dev").term_prompt == "dev"
    with pytest.raises(ConfigError, match="eval.term_prompt: 'always' is not off or dev"):
        EvalConfig(primary="a/test", terms="t.txt", term_prompt="always")
    with pytest.raises(ConfigError, match="needs eval.terms"):
        EvalConfig(primary="a/test", term_prompt="dev")
