import json

import numpy as np
import pytest

from speechtl.models.ctc.decode import TermMatcher, greedy_decode, greedy_decode_batch
from speechtl.models.ctc.vocab import PAD, UNK, WORD_DELIMITER

SYMBOLS = (PAD, UNK, WORD_DELIMITER, "a", "c", "e", "i", "l", "m", "o", "s", "z")
B, D = PAD, WORD_DELIMITER
LM_TEXT = ["la casa es mia", "la casa", "mi casa", "la mesa", "el caso", "caza mala"]


def frames(spec, floor=1e-3):
    """Log-softmax rows: a symbol is a frame peaked on it (0.9); a dict gives the probabilities of several."""
    rows = []
    for frame in spec:
        probs = {frame: 0.9} if isinstance(frame, str) else frame
        row = np.full(len(SYMBOLS), floor)
        for symbol, p in probs.items():
            row[SYMBOLS.index(symbol)] = p
        rows.append(np.log(row / row.sum()))
    return np.array(rows, dtype=np.float32)


# "la ca?a": the acoustics slightly prefer z ("caza") or s ("casa").
LEANS_Z = frames(["l", "a", D, "c", "a", {"z": 0.55, "s": 0.4}, "a", B])
LEANS_S = frames(["l", "a", D, "c", "a", {"z": 0.45, "s": 0.5}, "a", B])


@pytest.mark.parametrize(("spec", "length", "expected"), [
    (["c", "c", "a", "a", "s", "a"], None, "casa"),                  # repeats collapse
    (["l", "l", B, "l", "a"], None, "lla"),                           # a blank separates a doubled letter
    (["l", "l", "a"], None, "la"),                                    # ... and without it they merge
    (["l", "a", D, D, "m", "a", "s"], None, "la mas"),                # delimiter -> one space
    ([D, "l", "a", D, B, D], None, "la"),                             # leading/trailing spaces stripped
    (["l", UNK, "a"], None, "la"),                                    # <unk> emits nothing
    ([B, B, B], None, ""),
    (["s", "o", "l", "z", "z", "m"], 3, "sol"),                       # frames past the length are padding
    (["s", "o", "l"], 0, ""),
])
def test_greedy_decode(spec, length, expected):
    assert greedy_decode(frames(spec), SYMBOLS, length) == expected


def test_greedy_batch_ignores_padding_frames():
    batch = np.stack([frames(["c", "a", "s", "a", "s"]), frames(["l", "a", D, "c", "o"])])
    assert greedy_decode_batch(batch, SYMBOLS, [4, 2]) == ["casa", "la"]
    assert greedy_decode_batch(batch, SYMBOLS) == ["casas", "la co"]


def test_wrong_shapes_are_errors():
    with pytest.raises(ValueError, match="last of size 12"):
        greedy_decode(np.zeros((4, 5), dtype=np.float32), SYMBOLS)
    with pytest.raises(ValueError, match="2 lengths for a batch of 1"):
        greedy_decode_batch(np.zeros((1, 4, 12), dtype=np.float32), SYMBOLS, [1, 2])


@pytest.mark.parametrize(("terms", "words", "expected_words_boosted"), [
    ([["caza"]], "la caza mala", 1),
    ([["caza"]], "caza caza", 2),
    ([["la", "caza"]], "la caza", 2),
    ([["la", "caza"]], "la casa", 0),          # a broken match gives its bonus back
    ([["la", "caza"]], "mi la", 0),            # an unfinished match is refunded at the end
    ([["la", "la", "caza"]], "la la la caza", 3),
    ([["new"], ["new", "york"]], "new york city", 2),
    ([["new"], ["new", "york"]], "new jersey", 1),
    ([["y"], ["x", "y", "z"]], "x y w", 1),
])
def test_term_matcher_total_is_boost_times_words_in_completed_terms(terms, words, expected_words_boosted):
    matcher = TermMatcher(terms, boost=0.5)
    state, total = (), 0.0
    for word in words.split():
        state, bonus = matcher.step(state, word)
        total += bonus
    total += matcher.finish(state)
    assert total == pytest.approx(0.5 * expected_words_boosted)


@pytest.fixture
def beam():
    pytest.importorskip("flashlight.lib.text.decoder")
    from speechtl.models.ctc.decode import BeamDecoder
    return BeamDecoder


def test_lm_fixes_a_greedy_error(beam, tmp_path):
    assert greedy_decode(LEANS_Z, SYMBOLS) == "la caza"  # the acoustics alone are wrong
    decoder = beam.build(SYMBOLS, LM_TEXT, workdir=tmp_path, term_boost=0.0)
    assert decoder.decode(LEANS_Z) == "la casa"
    assert decoder.decode_batch(np.stack([LEANS_Z, LEANS_Z]), [8, 3]) == ["la casa", "la"]


def test_without_lm_weight_the_acoustics_win(beam, tmp_path):
    decoder = beam.build(SYMBOLS, LM_TEXT, workdir=tmp_path, lm_weight=0.0)
    assert decoder.decode(LEANS_Z) == "la caza"


@pytest.mark.parametrize(("terms", "boost", "expected"), [
    (["caza"], 0.0, "la casa"),
    (["caza"], 1.0, "la casa"),
    (["caza"], 3.0, "la caza"),
    (["la caza"], 1.0, "la caza"),   # two boosted words outweigh what one does
    (["mi caza"], 3.0, "la casa"),   # "caza" alone is not the term
])
def test_term_boost_pulls_the_decode_toward_the_term(beam, tmp_path, terms, boost, expected):
    decoder = beam.build(SYMBOLS, LM_TEXT, terms=terms, term_boost=boost, workdir=tmp_path)
    assert decoder.decode(LEANS_S) == expected


def test_settings_are_recorded_and_unspellable_words_counted(beam, tmp_path):
    decoder = beam.build(SYMBOLS, LM_TEXT + ["el perro"], terms=["la casa", "hola"], workdir=tmp_path,
                         beam_size=20, lm_weight=1.5)
    settings = json.loads((tmp_path / "decoder.json").read_text(encoding="utf-8"))
    assert settings == decoder.settings()
    assert settings["lexicon_skipped_words"] == 2  # "perro" and "hola" need an r and an h
    assert set(settings["lexicon_skipped_examples"]) == {"perro", "hola"}
    assert settings["terms_skipped"] == 1 and settings["num_terms"] == 2
    assert (settings["order"], settings["beam_size"], settings["lm_weight"], settings["vocab_size"]) == (3, 20, 1.5,
                                                                                                        12)
    assert settings["arpa_path"] == str(tmp_path / "lm.arpa") and (tmp_path / "lm.arpa").exists()
    lexicon = (tmp_path / "lexicon.txt").read_text(encoding="utf-8").splitlines()
    assert "casa\tc a s a |" in lexicon and not any(line.startswith("perro\t") for line in lexicon)


def test_empty_lm_text_is_a_clear_error(beam, tmp_path):
    with pytest.raises(ValueError, match="lm_sentences and terms are empty"):
        beam.build(SYMBOLS, ["", "  "], workdir=tmp_path)


def test_empty_input_decodes_to_nothing(beam, tmp_path):
    decoder = beam.build(SYMBOLS, LM_TEXT, workdir=tmp_path)
    assert decoder.decode(LEANS_Z, length=0) == ""


def test_missing_flashlight_names_the_extra(monkeypatch, tmp_path):
    import sys

    from speechtl.models.ctc.decode import BeamDecoder
    monkeypatch.setitem(sys.modules, "flashlight.lib.text.decoder", None)
    with pytest.raises(ImportError, match=r"pip install 'speechtl\[ctc\]'"):
        BeamDecoder.build(SYMBOLS, LM_TEXT, workdir=tmp_path)
