import json

import pytest

from speechtl.models.ctc.vocab import PAD, UNK, WORD_DELIMITER, VocabError, build_vocab, coverage, load_vocab

TRAIN = [("t1", "el niño come"), ("t2", "la fiebre baja")]


def test_vocab_comes_from_train_text_only_with_specials_first():
    vocab = build_vocab(TRAIN, "es")
    assert vocab.symbols[:3] == (PAD, UNK, WORD_DELIMITER)
    assert set(vocab.symbols[3:]) == set("elniñocomafbrj")
    assert vocab.symbols[3:] == tuple(sorted(vocab.symbols[3:]))
    assert vocab.char_counts["e"] == 4 and not vocab.outside_alphabet


def test_encode_maps_spaces_to_the_delimiter_and_unknowns_to_unk():
    vocab = build_vocab(TRAIN, "es")
    ids = vocab.ids
    assert vocab.encode("el z") == [ids["e"], ids["l"], ids[WORD_DELIMITER], ids[UNK]]


def test_characters_outside_the_alphabet_are_reported_not_dropped():
    vocab = build_vocab(TRAIN + [("t3", "señor müller ß")], "es")
    assert vocab.outside_alphabet == {"ß": ["t3"]}
    assert "ß" in vocab.symbols
    with pytest.raises(VocabError, match=r"utterance t3: field 'text' has 'ß'"):
        build_vocab(TRAIN + [("t3", "señor müller ß")], "es", strict=True)


@pytest.mark.parametrize(("rows", "match"), [
    ([], "no utterances"),
    ([("t9", "  ")], "utterance t9: field 'text' is empty"),
    ([("t8", "a|b")], "utterance t8: field 'text' holds '|'"),
])
def test_bad_train_text_names_the_utterance(rows, match):
    with pytest.raises(VocabError, match=match):
        build_vocab(rows, "es")


def test_coverage_counts_what_dev_and_test_cannot_spell():
    vocab = build_vocab(TRAIN, "es")
    cov = coverage(vocab, [("d1", "el gato"), ("d2", "la")])
    assert cov["chars"] == 8 and cov["unknown"] == 2
    assert cov["unknown_chars"] == {"g": 1, "t": 1} and cov["examples"]["g"] == ["d1"]


def test_save_and_load_round_trip(tmp_path):
    vocab = build_vocab(TRAIN + [("t3", "ß")], "es")
    path = vocab.save(tmp_path / "vocab.json")
    table = json.loads(path.read_text(encoding="utf-8"))
    assert table[PAD] == 0 and len(table) == len(vocab.symbols)
    assert json.loads((tmp_path / "vocab.meta.json").read_text())["outside_alphabet"] == {"ß": ["t3"]}
    assert load_vocab(path, "es").symbols == vocab.symbols
    (tmp_path / "bad.json").write_text(json.dumps({"a": 0, PAD: 1, UNK: 2, WORD_DELIMITER: 3}))
    with pytest.raises(VocabError, match="ids 0, 1, 2 must be"):
        load_vocab(tmp_path / "bad.json", "es")
