"""speechtl.evaluate.scoring and .decode: scoring, per-speaker and term breakdowns, manifest decoding."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf

from speechtl.data.manifest import Utterance, write_jsonl
from speechtl.evaluate import decode as evaluate
from speechtl.evaluate import scoring
from speechtl.evaluate.decode import evaluate_manifest
from speechtl.evaluate.error_analysis import confusions, hallucinations
from speechtl.evaluate.scoring import (
    EvaluationError,
    read_terms,
    score,
    scoring_normalizer,
    term_recall,
)
from speechtl.evaluate.significance import bootstrap_ci, paired_bootstrap
from speechtl.text.normalize import get_normalizer

ES = scoring_normalizer("es")
EN = scoring_normalizer("en")

# ------------------------------------------------------------------ WER / CER / S D I

# name, refs, hyps, (hits, S, D, I), wer
WORD_CASES = [
    ("perfect", ["el perro come"], ["el perro come"], (3, 0, 0, 0), 0.0),
    ("all_deleted", ["el perro come"], [""], (0, 0, 3, 0), 1.0),
    ("insertions_only", ["hola"], ["hola hola buenos días"], (1, 0, 0, 3), 3.0),
    ("substitution", ["el perro come"], ["el gato come"], (2, 1, 0, 0), 1 / 3),
    ("mixed", ["uno dos tres cuatro", "cinco seis"], ["uno tres cuatro siete", "cinco seis"], (5, 0, 1, 1), 2 / 6),
    ("sub_and_del", ["a b c d"], ["a x"], (1, 1, 2, 0), 0.75),
]


@pytest.mark.parametrize(("name", "refs", "hyps", "counts", "wer"), WORD_CASES, ids=[c[0] for c in WORD_CASES])
def test_word_counts_and_wer(name, refs, hyps, counts, wer):
    s = score(refs, hyps, ES)
    assert (s.hits, s.substitutions, s.deletions, s.insertions) == counts
    assert s.wer == pytest.approx(wer)
    assert s.num_utts == len(refs)
    assert s.num_ref_words == sum(len(r.split()) for r in refs)
    norm_hyps = [ES(h) if h.strip() else "" for h in hyps]
    assert s.wer == pytest.approx(jiwer.wer([ES(r) for r in refs], norm_hyps))
    assert s.cer == pytest.approx(jiwer.cer([ES(r) for r in refs], norm_hyps))
    # per-utterance counts add up to the corpus counts
    total = sum((u.words for u in s.utterances), scoring.Counts())
    assert (total.hits, total.substitutions, total.deletions, total.insertions) == counts


# name, ref, hyp, cer
CHAR_CASES = [
    ("same", "casa", "casa", 0.0),
    ("one_sub", "casa", "cosa", 0.25),
    ("space_counts", "ab cd", "abcd", 0.2),
    ("deleted", "ab", "", 1.0),
]


@pytest.mark.parametrize(("name", "ref", "hyp", "cer"), CHAR_CASES, ids=[c[0] for c in CHAR_CASES])
def test_cer(name, ref, hyp, cer):
    assert score([ref], [hyp], ES).cer == pytest.approx(cer)


# name, ref, hyp, character (hits, S, D, I)
CHAR_COUNT_CASES = [
    ("same", "sol", "sol", (3, 0, 0, 0)),
    ("one_sub", "casa", "cosa", (3, 1, 0, 0)),
    ("one_del", "casas", "casa", (4, 0, 1, 0)),
    ("one_ins", "casa", "casas", (4, 0, 0, 1)),
    ("space_deleted", "ab cd", "abcd", (4, 0, 1, 0)),
    ("word_inserted", "si", "si no", (2, 0, 0, 3)),
]


@pytest.mark.parametrize(("name", "ref", "hyp", "counts"), CHAR_COUNT_CASES, ids=[c[0] for c in CHAR_COUNT_CASES])
def test_char_counts_match_jiwer(name, ref, hyp, counts):
    chars = score([ref], [hyp], ES).utterances[0].chars
    assert (chars.hits, chars.substitutions, chars.deletions, chars.insertions) == counts
    out = jiwer.process_characters(ref, hyp)
    assert (out.hits, out.substitutions, out.deletions, out.insertions) == counts
    assert chars.rate == pytest.approx(out.cer)


def test_wer_equals_jiwer_on_a_random_corpus():
    rng = np.random.default_rng(1)
    vocab = ["uno", "dos", "tres", "cuatro", "cinco", "seis"]
    refs = [" ".join(rng.choice(vocab, rng.integers(1, 8))) for _ in range(40)]
    hyps = [" ".join(rng.choice(vocab, rng.integers(0, 8))) for _ in range(40)]
    s = score(refs, hyps, ES)
    norm_hyps = [ES(h) if h else "" for h in hyps]
    assert s.wer == pytest.approx(jiwer.wer(refs, norm_hyps))
    assert s.cer == pytest.approx(jiwer.cer(refs, norm_hyps))
    assert s.wer == pytest.approx((s.substitutions + s.deletions + s.insertions) / s.num_ref_words)


# name, lang, ref, hyp, normalized wer, raw wer
RAW_CASES = [
    ("punctuation_case", "es", "¿Qué hora es?", "que hora es", 0.0, 2 / 3),
    ("accents_ignored", "es", "está aquí", "esta aqui", 0.0, 1.0),
    ("enye_kept", "es", "año", "ano", 1.0, 1.0),
    ("numbers_verbalized", "es", "tengo 3 gatos", "tengo tres gatos", 0.0, 1 / 3),
    ("english_case", "en", "Hello, World.", "hello world", 0.0, 1.0),
    ("apostrophe_en", "en", "Don't stop", "don't stop", 0.0, 0.5),
]


@pytest.mark.parametrize(("name", "lang", "ref", "hyp", "wer", "raw_wer"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_versus_normalized(name, lang, ref, hyp, wer, raw_wer):
    s = score([ref], [hyp], scoring_normalizer(lang))
    assert s.wer == pytest.approx(wer)
    assert s.raw["wer"] == pytest.approx(raw_wer)
    assert s.raw["wer"] == pytest.approx(jiwer.wer(ref, hyp))
    assert set(s.raw) >= {"wer", "cer", "hits", "substitutions", "deletions", "insertions"}


@pytest.mark.parametrize("hyp", ["", "   ", "(risas)", "[música]", "¿?", "..."])
def test_rejected_hypothesis_counts_as_empty(hyp):
    s = score(["hola mundo", "buenos días"], [hyp, "buenos días"], ES)
    assert (s.deletions, s.hits, s.insertions, s.substitutions) == (2, 2, 0, 0)
    assert s.wer == pytest.approx(0.5)
    first = s.utterances[0]
    assert first.hypothesis == "" and first.hypothesis_rejected in ("empty", "non_speech")
    assert s.utterances[1].hypothesis_rejected is None
    assert sum(s.rejected_hypotheses.values()) == 1


def test_foreign_script_rejected_by_a_strict_normalizer_still_counts_its_words():
    strict = get_normalizer("es")  # check_alphabet=True: a hallucination in another script is rejected
    s = score(["hola"], ["你好"], strict)
    assert s.rejected_hypotheses == {"bad_chars": 1} and s.substitutions == 1 and s.deletions == 0
    # the scoring default keeps it and counts a substitution instead
    assert score(["hola"], ["你好"], ES).substitutions == 1


@pytest.mark.parametrize("bad_ref", ["", "  ", "(risas)", "[ruido]", "¡!"])
def test_empty_normalized_reference_names_the_id(bad_ref):
    with pytest.raises(EvaluationError, match="utt-bad"):
        score(["hola", bad_ref], ["hola", "x"], ES, ids=["utt-ok", "utt-bad"])


@pytest.mark.parametrize(
    ("refs", "hyps", "kwargs", "match"),
    [
        (["a"], ["a", "b"], {}, "1 references but 2 hypotheses"),
        ([], [], {}, "no references"),
        (["a"], ["a"], {"ids": ["x", "y"]}, "2 ids"),
        (["a"], ["a"], {"speakers": ["s1", "s2"]}, "2 speakers"),
        (["a"], [None], {"ids": ["u7"]}, "u7"),
    ],
)
def test_score_input_errors(refs, hyps, kwargs, match):
    with pytest.raises(EvaluationError, match=match):
        score(refs, hyps, ES, **kwargs)


def test_alignment_ops():
    s = score(["el perro come mucho"], ["el gato come mucho hoy"], ES)
    ops = [(op.op, op.ref, op.hyp) for op in s.utterances[0].ops]
    assert ops == [
        ("equal", ("el",), ("el",)),
        ("substitute", ("perro",), ("gato",)),
        ("equal", ("come", "mucho"), ("come", "mucho")),
        ("insert", (), ("hoy",)),
    ]
    assert s.utterances[0].ops[1].to_json() == ["substitute", "perro", "gato"]


def test_per_speaker():
    refs = ["uno dos", "tres cuatro", "cinco seis siete", "ocho"]
    hyps = ["uno dos", "tres", "cinco x siete", "ocho nueve"]
    speakers = ["ana", "ana", "bob", None]
    s = score(refs, hyps, ES, speakers=speakers)
    assert list(s.per_speaker) == ["ana", "bob", "unknown"]
    ana, bob, unk = s.per_speaker["ana"], s.per_speaker["bob"], s.per_speaker["unknown"]
    assert (ana["num_utts"], ana["num_ref_words"], ana["deletions"], ana["wer"]) == (2, 4, 1, pytest.approx(0.25))
    assert (bob["substitutions"], bob["wer"]) == (1, pytest.approx(1 / 3))
    assert (unk["insertions"], unk["wer"]) == (1, pytest.approx(1.0))
    assert ana["cer"] == pytest.approx(jiwer.cer(["uno dos", "tres cuatro"], ["uno dos", "tres"]))
    assert sum(v["num_ref_words"] for v in s.per_speaker.values()) == s.num_ref_words
    assert score(refs, hyps, ES).per_speaker.keys() == {"unknown"}


def test_to_json_is_json_and_has_no_rows():
    data = score(["hola"], ["hola"], ES).to_json()
    json.dumps(data)
    assert "utterances" not in data and data["wer"] == 0.0 and data["per_speaker"]["unknown"]["num_utts"] == 1


def test_bootstrap_ci_brackets_the_wer_and_is_seeded():
    refs = [f"uno dos tres cuatro {w}" for w in ["a", "b", "c", "d", "e", "f", "g", "h"]]
    hyps = ["uno dos tres cuatro a", "uno", "uno dos tres cuatro c", "x", "uno dos", "", "uno dos tres", "y z"]
    s = score(refs, hyps, ES)
    lo, hi = bootstrap_ci(s.utterances, seed=3)
    assert 0 <= lo <= s.wer <= hi
    assert lo < hi
    assert bootstrap_ci(s.utterances, seed=3) == (lo, hi)
    assert bootstrap_ci(score(["a b"], ["a b"], ES).utterances) == (0.0, 0.0)


# ------------------------------------------------------------------ paired bootstrap

BOOT_REFS = [f"uno dos tres cuatro cinco {w}" for w in "abcdefghijklmnopqrst"]  # 20 utterances, 6 words each


def _scored(hyps: list[str], ids: list[str] | None = None):
    return score(BOOT_REFS, hyps, ES, ids=ids or [f"u{k:02d}" for k in range(len(BOOT_REFS))]).utterances


def _noisy(k: int) -> str:
    """Hypothesis k of a weak system: 2 to 4 of 6 words wrong."""
    return ["uno x tres y", "z dos", "uno dos w", "q"][k % 4]


# name, hyps of a, hyps of b, expected sign of the interval (0: contains 0), P(b better) bounds
PAIRED_CASES = [
    ("identical", [_noisy(k) for k in range(20)], [_noisy(k) for k in range(20)], 0, (0.0, 0.0)),
    ("identical_perfect", BOOT_REFS, BOOT_REFS, 0, (0.0, 0.0)),
    ("b_clearly_better", [_noisy(k) for k in range(20)], BOOT_REFS, -1, (0.99, 1.0)),
    ("b_clearly_worse", BOOT_REFS, [_noisy(k) for k in range(20)], 1, (0.0, 0.01)),
    ("one_utterance_differs", BOOT_REFS, ["uno"] + BOOT_REFS[1:], 0, (0.0, 0.0)),
]


@pytest.mark.parametrize(("name", "hyps_a", "hyps_b", "sign", "p_range"), PAIRED_CASES,
                         ids=[c[0] for c in PAIRED_CASES])
def test_paired_bootstrap(name, hyps_a, hyps_b, sign, p_range):
    a, b = _scored(hyps_a), _scored(hyps_b)
    result = paired_bootstrap(a, b, num_samples=1000, seed=0)
    lo, hi = result.ci
    assert lo <= result.diff <= hi or lo == hi == result.diff
    if sign == 0:
        assert lo <= 0 <= hi
    elif sign < 0:
        assert hi < 0
    else:
        assert lo > 0
    if name.startswith("identical"):
        assert (lo, hi) == (0.0, 0.0) and result.mean_diff == 0.0 and result.prob_tie == 1.0
    assert p_range[0] <= result.prob_b_better <= p_range[1]
    wer_a = sum(u.words.errors for u in a) / sum(u.words.num_ref for u in a)
    wer_b = sum(u.words.errors for u in b) / sum(u.words.num_ref for u in b)
    assert result.diff == pytest.approx(wer_b - wer_a)
    assert (result.num_samples, result.num_utts, result.level) == (1000, 20, 0.95)
    json.dumps(result.to_json())


def test_paired_bootstrap_is_seeded_and_takes_jsonl_rows_in_any_order():
    a, b = _scored([_noisy(k) for k in range(20)]), _scored(["uno dos"] * 10 + BOOT_REFS[10:])
    first = paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) == first
    assert paired_bootstrap(a, b, seed=8).mean_diff != first.mean_diff
    rows_b = [{"id": u.id, **{k: getattr(u.words, k) for k in ("hits", "substitutions", "deletions", "insertions")}}
              for u in reversed(b)]
    assert paired_bootstrap(a, rows_b, seed=7) == first
    # a single-system interval comes from the same resampling
    assert bootstrap_ci(a, seed=7) == bootstrap_ci([{"id": u.id, "hits": u.words.hits,
                                                     "substitutions": u.words.substitutions,
                                                     "deletions": u.words.deletions,
                                                     "insertions": u.words.insertions} for u in a], seed=7)


@pytest.mark.parametrize(
    ("ids_a", "ids_b", "match"),
    [
        (["u00", "u01"], ["u00", "u02"], "utterance u01 is scored in a but not in b"),
        (["u00"], ["u00", "u07"], "utterance u07 is scored in b but not in a"),
        (["u00", "u00"], ["u00", "u01"], "u00 appears twice in a"),
    ],
)
def test_paired_bootstrap_names_the_first_mismatching_id(ids_a, ids_b, match):
    a = score(["uno dos"] * len(ids_a), ["uno"] * len(ids_a), ES, ids=ids_a).utterances
    b = score(["uno dos"] * len(ids_b), ["uno"] * len(ids_b), ES, ids=ids_b).utterances
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(a, b)


def test_paired_bootstrap_needs_the_same_references():
    a = score(["uno dos", "tres"], ["uno dos", "tres"], ES, ids=["x", "y"]).utterances
    b = score(["uno dos", "tres cuatro"], ["uno dos", "tres"], ES, ids=["x", "y"]).utterances
    with pytest.raises(ValueError, match="utterance y: field 'num_ref_words' is 1 in a but 2 in b"):
        paired_bootstrap(a, b)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, a, level=1.5)
    with pytest.raises(ValueError, match="no utterances"):
        paired_bootstrap([], a)


# ------------------------------------------------------------------ hallucinations and confusions

# name, ref, hyp, flagged kinds
HALLUCINATION_CASES = [
    ("clean", "el paciente toma paracetamol", "el paciente toma paracetamol", []),
    ("two_inserted_is_fine", "hola", "hola buenos días", []),
    ("insertion_run", "hola", "hola gracias por ver el video", ["insertion_run", "long_hypothesis"]),
    ("insertion_run_inside", "uno dos tres cuatro cinco seis", "uno dos x y z tres cuatro cinco seis",
     ["insertion_run"]),
    ("unigram_loop", "dime la verdad ahora", "dime la la la", ["ngram_loop"]),
    ("unigram_loop_inserted", "dime", "dime la la la", ["insertion_run", "ngram_loop"]),
    ("bigram_loop", "tiene fiebre", "tiene fiebre de la de la de la", ["insertion_run", "ngram_loop",
                                                                          "long_hypothesis"]),
    ("fourgram_loop_replacing", "uno dos tres cuatro cinco seis siete ocho nueve diez once doce",
     "a b c d a b c d a b c d", ["ngram_loop"]),
    ("loop_spoken_in_reference", "no no no quiero", "no no no quiero", []),
    ("loop_longer_than_reference", "no no no quiero", "no no no no quiero", ["ngram_loop"]),
    ("two_repeats_is_no_loop", "uno dos tres cuatro cinco", "de la de la cinco", []),
    ("long_but_short_reference", "si", "si claro que", []),
    ("long_hypothesis_substituted", "uno dos", "a b c d e f", ["insertion_run", "long_hypothesis"]),
]


@pytest.mark.parametrize(("name", "ref", "hyp", "kinds"), HALLUCINATION_CASES, ids=[c[0] for c in HALLUCINATION_CASES])
def test_hallucinations(name, ref, hyp, kinds):
    utts = score([ref, "buenos días"], [hyp, "buenos días"], ES, ids=["u1", "u2"]).utterances
    view = hallucinations(utts)
    assert view["num_utts"] == 2
    assert {k: ids for k, ids in view["ids"].items() if ids} == {k: ["u1"] for k in kinds}
    assert view["counts"]["any"] == (1 if kinds else 0)
    assert [e["id"] for e in view["examples"]] == (["u1"] if kinds else [])
    if kinds:
        assert view["examples"][0]["kinds"] == kinds
    json.dumps(view)


def test_hallucinations_from_jsonl_rows_match_utterance_scores():
    refs, hyps = ["tiene fiebre", "hola"], ["tiene fiebre de la de la de la", "hola"]
    utts = score(refs, hyps, ES, ids=["a", "b"]).utterances
    rows = [{"id": u.id, "reference_normalized": u.reference, "hypothesis_normalized": u.hypothesis,
             "ops": [op.to_json() for op in u.ops]} for u in utts]
    assert hallucinations(rows) == hallucinations(utts)
    assert hallucinations(utts)["examples"][0]["loop"] == {"ngram": "de la", "repeats": 3}
    with pytest.raises(ValueError, match="utterance a: missing field 'ops'"):
        hallucinations([{k: v for k, v in rows[0].items() if k != "ops"}])


def test_confusions():
    utts = score(["el perro come", "el perro duerme", "un gato"], ["el gato come", "el gato", "un gato negro"],
                 ES).utterances
    conf = confusions(utts)
    assert conf["substitutions"][0] == ["perro", "gato", 2]
    assert conf["deletions"] == [["duerme", 1]]
    assert conf["insertions"] == [["negro", 1]]
    assert confusions(utts, top=0) == {"substitutions": [], "deletions": [], "insertions": []}


# ------------------------------------------------------------------ domain terms

# name, refs, hyps, terms, {term: (occurrences, hits)}, overall recall
TERM_CASES = [
    ("single_hit", ["el paciente tiene diabetes"], ["el paciente tiene diabetes"], ["diabetes"],
     {"diabetes": (1, 1)}, 1.0),
    ("single_miss", ["el paciente tiene diabetes"], ["el paciente tiene diabético"], ["diabetes"],
     {"diabetes": (1, 0)}, 0.0),
    ("multi_word_hit", ["sufre insuficiencia renal aguda"], ["sufre insuficiencia renal aguda"],
     ["insuficiencia renal"], {"insuficiencia renal": (1, 1)}, 1.0),
    ("multi_word_half_wrong", ["sufre insuficiencia renal aguda"], ["sufre insuficiencia real aguda"],
     ["insuficiencia renal"], {"insuficiencia renal": (1, 0)}, 0.0),
    ("multi_word_split_by_insertion", ["insuficiencia renal"], ["insuficiencia muy renal"],
     ["insuficiencia renal"], {"insuficiencia renal": (1, 0)}, 0.0),
    ("term_absent", ["hola mundo"], ["hola mundo"], ["diabetes"], {"diabetes": (0, 0)}, None),
    ("term_twice_one_hit", ["diabetes y más diabetes"], ["diabetes y más diabético"], ["diabetes"],
     {"diabetes": (2, 1)}, 0.5),
    ("word_elsewhere_in_hyp_is_no_hit", ["tiene diabetes hoy"], ["tiene gripe hoy diabetes"], ["diabetes"],
     {"diabetes": (1, 0)}, 0.0),
    ("term_normalized_like_text", ["Tiene INSUFICIENCIA renal."], ["tiene insuficiencia renal"],
     ["Insuficiencia Renal"], {"Insuficiencia Renal": (1, 1)}, 1.0),
    ("accent_stripped", ["toma paracetamol después"], ["toma paracetamol despues"], ["después"],
     {"después": (1, 1)}, 1.0),
    ("two_terms_across_utts", ["diabetes tipo dos", "sin diabetes", "insuficiencia renal"],
     ["diabetes tipo dos", "sin", "insuficiencia renal"], ["diabetes", "insuficiencia renal"],
     {"diabetes": (2, 1), "insuficiencia renal": (1, 1)}, 2 / 3),
    ("overlapping_counted_once", ["no no no"], ["no no no"], ["no no"], {"no no": (1, 1)}, 1.0),
    ("rejected_hyp_misses", ["diabetes"], ["(risas)"], ["diabetes"], {"diabetes": (1, 0)}, 0.0),
]


@pytest.mark.parametrize(("name", "refs", "hyps", "terms", "expected", "recall"), TERM_CASES,
                         ids=[c[0] for c in TERM_CASES])
def test_term_recall(name, refs, hyps, terms, expected, recall):
    result = term_recall(refs, hyps, terms, ES)
    got = {t.term: (t.occurrences, t.hits) for t in result.terms}
    assert got == expected
    assert result.recall == (pytest.approx(recall) if recall is not None else None)
    for t in result.terms:
        assert len(t.missed_in) == t.occurrences - t.hits
        assert t.recall == (t.hits / t.occurrences if t.occurrences else None)
    json.dumps(result.to_json())


def test_term_recall_names_missed_utterances_and_merges_duplicates():
    result = term_recall(["diabetes", "con diabetes"], ["diabetes", "con"], ["diabetes", "Diabetes"], ES,
                         ids=["u1", "u2"])
    assert [t.term for t in result.terms] == ["diabetes"]
    assert result.terms[0].missed_in == ("u2",)


def test_unusable_term_is_an_error():
    with pytest.raises(EvaluationError, match=re.escape("term '¿?'")):
        term_recall(["hola"], ["hola"], ["¿?"], ES)


def test_read_terms(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("# medical terms\ndiabetes\n\n  insuficiencia renal  # two words\n#x\n", encoding="utf-8")
    assert read_terms(path) == ["diabetes", "insuficiencia renal"]
    (tmp_path / "empty.txt").write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match="empty.txt"):
        read_terms(tmp_path / "empty.txt")


def test_scoring_normalizer_settings():
    n = scoring_normalizer("es")
    assert n.settings["strip_accents"] is True and n.settings["check_alphabet"] is False
    assert n("Él pidió un PINGÜINO, ¿sí? Año 2") == "el pidio un pinguino si año dos"


# ------------------------------------------------------------------ evaluate_manifest

SR = 16000
# id, speaker, text, tone seconds, sample rate of the file, what the fake recognizer "hears"
CLIPS = [
    ("c1", "ana", "Buenos días.", 0.50, 16000, "buenos días"),
    ("c2", "ana", "Insuficiencia renal crónica", 0.60, 16000, "insuficiencia real crónica"),
    ("c3", "bob", "Marque el 3", 0.70, 8000, "marque el tres"),
    ("c4", None, "Gracias por llamar", 0.80, 16000, "(risas)"),
    ("c5", "bob", "Su insuficiencia renal", 0.90, 22050, "su insuficiencia renal hoy"),
]


class FakeTranscriber:
    """Recognizes each clip by its length (each tone has its own duration)."""

    name = "fake-asr"

    def __init__(self) -> None:
        self.by_len = {int(round(sec * SR)): said for _, _, _, sec, _, said in CLIPS}
        self.calls: list[tuple[int, str, str | None]] = []

    def transcribe(self, audios, lang, *, prompt=None, batch_size=8):
        self.calls.append((len(audios), lang, prompt))
        out = []
        for a in audios:
            assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 1
            n = min(self.by_len, key=lambda k: abs(k - len(a)))
            assert abs(n - len(a)) <= 2, f"unexpected clip length {len(a)}"
            out.append(self.by_len[n])
        return out


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    rows = []
    for utt_id, speaker, text, sec, rate, _ in CLIPS:
        t = np.arange(int(round(sec * rate))) / rate
        sf.write(tmp_path / f"{utt_id}.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
        rows.append({"id": utt_id, "audio_filepath": f"{utt_id}.wav", "text": text, "duration": sec,
                     **({"speaker": speaker} if speaker else {})})
    path = tmp_path / "test.jsonl"
    write_jsonl(path, rows)
    return path


def test_evaluate_manifest_end_to_end(manifest, tmp_path):
    fake = FakeTranscriber()
    seen: list[tuple[int, int]] = []
    out_dir = tmp_path / "eval" / "baseline"
    metrics = evaluate_manifest(
        fake, manifest, out_dir, lang="es", normalizer=ES, prompt="Hospital", terms=["insuficiencia renal"],
        batch_size=2, extra={"run": "smoke", "config": {"strategy": "head"}},
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (out_dir / "metrics.json").is_file() and (out_dir / "hypotheses.jsonl").is_file()
    assert json.loads((out_dir / "metrics.json").read_text(encoding="utf-8")) == metrics
    for key in ("wer", "cer", "num_utts", "substitutions", "deletions", "insertions", "hits", "normalizer", "raw",
                "per_speaker", "terms", "model", "manifest", "lang", "prompt", "decode_time_s", "rtf",
                "audio_duration_s", "wer_ci95", "run", "config"):
        assert key in metrics, key
    assert set(metrics) == set(evaluate.METRIC_KEYS) | {"run", "config"}
    for key in ("wer", "cer", "rtf", "decode_time_s"):
        assert 0 <= metrics[key] < math.inf
    assert 0 <= metrics["raw"]["wer"] < math.inf and 0 <= metrics["raw"]["cer"] < math.inf
    # 14 reference words: c2 one sub, c4 three deletions (rejected), c5 one insertion
    assert (metrics["num_utts"], metrics["num_ref_words"]) == (5, 14)
    assert (metrics["substitutions"], metrics["deletions"], metrics["insertions"]) == (1, 3, 1)
    assert metrics["wer"] == pytest.approx(5 / 14)
    assert metrics["raw"]["wer"] > metrics["wer"]
    assert metrics["normalizer"] == {"name": ES.name, "settings": ES.settings}
    assert metrics["model"] == "fake-asr" and metrics["lang"] == "es" and metrics["prompt"] == "Hospital"
    assert metrics["manifest"] == str(manifest)
    assert set(metrics["per_speaker"]) == {"ana", "bob", "unknown"}
    assert metrics["terms"]["per_term"]["insuficiencia renal"]["occurrences"] == 2
    assert metrics["terms"]["recall"] == pytest.approx(0.5)
    assert metrics["terms"]["per_term"]["insuficiencia renal"]["missed_in"] == ["c2"]
    assert metrics["audio_duration_s"] == pytest.approx(sum(c[3] for c in CLIPS), abs=1e-3)
    assert metrics["rejected_hypotheses"] == {"non_speech": 1}
    assert metrics["wer_ci95"][0] <= metrics["wer"] <= metrics["wer_ci95"][1]
    assert metrics["hallucinations"]["num_utts"] == 5 and metrics["hallucinations"]["counts"]["any"] == 0
    assert metrics["confusions"]["substitutions"] == [["renal", "real", 1]]
    assert metrics["confusions"]["deletions"][0][1] == 1 and metrics["confusions"]["insertions"] == [["hoy", 1]]
    assert [c[0] for c in fake.calls] == [2, 2, 1] and {c[1:] for c in fake.calls} == {("es", "Hospital")}
    assert seen == [(2, 5), (4, 5), (5, 5)]

    lines = (out_dir / "hypotheses.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == len(CLIPS)
    assert [r["id"] for r in rows] == [c[0] for c in CLIPS]
    by_id = {r["id"]: r for r in rows}
    assert by_id["c3"]["reference_normalized"] == "marque el tres" and by_id["c3"]["wer"] == 0.0
    assert by_id["c4"]["hypothesis"] == "(risas)" and by_id["c4"]["hypothesis_normalized"] == ""
    assert by_id["c4"]["speaker"] == "unknown" and by_id["c4"]["wer"] == 1.0
    assert by_id["c2"]["ops"][1] == ["substitute", "renal", "real"]
    for r in rows:
        assert {"id", "speaker", "reference", "hypothesis", "reference_normalized", "hypothesis_normalized",
                "wer", "cer"} <= set(r)
    assert not list(out_dir.glob(".*")), "temporary files left behind"


def test_evaluate_manifest_from_utterances_with_terms_file_and_default_normalizer(manifest, tmp_path):
    from speechtl.data.manifest import read_manifest

    terms = tmp_path / "terms.txt"
    terms.write_text("insuficiencia renal\n", encoding="utf-8")
    metrics = evaluate_manifest(FakeTranscriber(), read_manifest(manifest), tmp_path / "out", lang="es",
                                terms=terms, model_name="m")
    assert metrics["manifest"] is None and metrics["model"] == "m" and metrics["prompt"] is None
    assert metrics["normalizer"]["settings"] == ES.settings
    assert metrics["terms"]["occurrences"] == 2


def test_evaluate_manifest_checks_references_before_decoding(tmp_path):
    fake = FakeTranscriber()
    utts = [Utterance(id="ok", audio_filepath=str(tmp_path / "a.wav"), text="hola"),
            Utterance(id="noise-7", audio_filepath=str(tmp_path / "b.wav"), text="[ruido]")]
    with pytest.raises(EvaluationError, match="noise-7"):
        evaluate_manifest(fake, utts, tmp_path / "out", lang="es")
    assert fake.calls == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing_audio", "utterance ghost: field 'audio_filepath'"),
        ("duplicate_id", "duplicate utterance id c1"),
        ("short_answer", "returned 0 transcripts"),
        ("extra_collides", "extra keys \\['wer'\\]"),
        ("empty", "no utterances"),
    ],
)
def test_evaluate_manifest_errors(manifest, tmp_path, case, match):
    from speechtl.data.manifest import read_manifest

    utts = read_manifest(manifest)
    fake = FakeTranscriber()
    kwargs = {}
    if case == "missing_audio":
        utts.append(Utterance(id="ghost", audio_filepath=str(tmp_path / "nope.wav"), text="hola"))
    elif case == "duplicate_id":
        utts.append(utts[0])
    elif case == "short_answer":
        fake.transcribe = lambda audios, lang, **kw: []  # type: ignore[method-assign]
    elif case == "extra_collides":
        kwargs["extra"] = {"wer": 0.0}
    elif case == "empty":
        utts = []
    with pytest.raises(EvaluationError, match=match):
        evaluate_manifest(fake, utts, tmp_path / "out", lang="es", **kwargs)
    assert not (tmp_path / "out" / "metrics.json").exists()
    if case in ("duplicate_id", "extra_collides", "empty"):
        assert fake.calls == [], "checked before decoding"
