import math

import pytest

from speechtl.models.ctc.ngram_lm import BOS, EOS, UNK, NGramError, read_arpa, train_ngram

CORPUS = [
    "la casa es grande", "la casa", "mi casa es tu casa", "el perro come", "la caza mayor",
    "el perro es grande", "la casa del perro", "come la casa", "es grande",
]


def _predictable(model):
    return [w for w in model.vocab if w != BOS]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("history", [
    (), (BOS,), ("la",), (BOS, "la"), ("la", "casa"), ("casa", "es", "grande"),
    ("perro", "es"), ("nunca", "visto"), ("grande", "casa"), (BOS, "zzz"), ("es", "la", "caza"),
])
def test_conditional_distributions_sum_to_one(order, history):
    model = train_ngram(CORPUS, order=order)
    total = sum(10.0 ** model.log10_prob(w, history) for w in _predictable(model))
    assert total == pytest.approx(1.0, abs=1e-6)


def test_kneser_ney_values_match_a_hand_computation():
    # <s> a b </s> (x2), <s> b a </s>; D = 0.5. Continuation counts: a 2, b 2, </s> 2 -> total 6, 3 types.
    model = train_ngram(["a b", "a b", "b a"], order=2, discount=0.5)
    uniform_share = 0.5 * 3 / 6 / 4  # vocabulary {a, b, </s>, <unk>}
    p_b = (2 - 0.5) / 6 + uniform_share
    assert 10 ** model.log10_prob("b", []) == pytest.approx(p_b)
    assert 10 ** model.log10_prob(UNK, []) == pytest.approx(uniform_share)
    # context "a": c(a b) = 2, c(a </s>) = 1 -> gamma = 0.5 * 2 / 3
    assert 10 ** model.log10_prob("b", ["a"]) == pytest.approx((2 - 0.5) / 3 + (1 / 3) * p_b)
    assert 10 ** model.log10_prob("never-seen", ["a"]) == pytest.approx((1 / 3) * uniform_share)
    assert model.discounts == (0.5, 0.5)


def test_arpa_file_is_well_formed_and_round_trips(tmp_path):
    model = train_ngram(CORPUS, order=3)
    path = model.write_arpa(tmp_path / "lm.arpa")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("\\data\\\n") and text.rstrip().endswith("\\end\\")
    assert not list(tmp_path.glob(".lm.arpa.*")), "temporary file left behind"
    sections = text.split("\\3-grams:")[1].split("\\end\\")[0].strip().splitlines()
    assert sections and all(len(line.split("\t")) == 2 for line in sections), "highest order has no backoff"
    unigrams = {line.split("\t")[1]: line.split("\t") for line in
                text.split("\\1-grams:")[1].split("\\2-grams:")[0].strip().splitlines()}
    assert float(unigrams[BOS][0]) == -99.0 and len(unigrams[BOS]) == 3
    assert UNK in unigrams and EOS in unigrams
    back = read_arpa(path)  # read_arpa checks the header counts against the sections
    assert [len(t) for t in back.log10_probs] == [len(t) for t in model.log10_probs]
    for sentence in ["la casa es grande", "el perro come la caza", "palabra desconocida"]:
        assert back.logprob(sentence.split()) == pytest.approx(model.logprob(sentence.split()), abs=1e-5)


def test_read_arpa_rejects_wrong_header_counts(tmp_path):
    path = train_ngram(CORPUS, order=2).write_arpa(tmp_path / "lm.arpa")
    path.write_text(path.read_text().replace("ngram 2=", "ngram 2=1"), encoding="utf-8")
    with pytest.raises(NGramError, match="header counts"):
        read_arpa(path)


def test_logprob_matches_kenlm_loading_the_arpa(tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder")
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    model = train_ngram(CORPUS, order=3)
    path = model.write_arpa(tmp_path / "lm.arpa")
    words = _predictable(model)
    dictionary = Dictionary(words)
    dictionary.set_default_index(dictionary.get_index(UNK))
    kenlm = KenLM(str(path), dictionary)
    for sentence in ["la casa es grande", "el perro come la caza", "mi casa", "xyz casa", "grande"]:
        state, total_log10 = kenlm.start(False), 0.0
        for word in sentence.split():
            state, score = kenlm.score(state, dictionary.get_index(word) if dictionary.contains(word)
                                       else dictionary.get_index(UNK))
            total_log10 += score
        total_log10 += kenlm.finish(state)[1]
        assert total_log10 == pytest.approx(model.logprob(sentence.split()), abs=1e-3), sentence


def test_lm_prefers_seen_word_order():
    model = train_ngram(CORPUS, order=3)
    assert model.logprob(["la", "casa", "es", "grande"]) > model.logprob(["grande", "es", "casa", "la"])
    assert math.isfinite(model.logprob(["nunca"]))


def test_degenerate_counts_fall_back_to_the_default_discount():
    model = train_ngram(["a b c"], order=2)  # every count is 1: n2 = 0
    assert model.discounts == (0.75, 0.75)


@pytest.mark.parametrize(("kwargs", "sentences", "match"), [
    ({"order": 0}, CORPUS, "order must be"),
    ({"discount": 1.0}, CORPUS, "discount must be"),
    ({}, ["", "  "], "no non-empty sentences"),
    ({}, ["ok", "a </s> b"], "sentence 1: holds a sentence marker"),
])
def test_bad_input_is_an_error(kwargs, sentences, match):
    with pytest.raises(NGramError, match=match):
        train_ngram(sentences, **kwargs)
