"""Held-out checks: transcript verification, sentences dropped for being trained on, the relation of each test
set to the training data, sentences_from sources and the config rules that guard them."""

import json

import pytest

from speechtl.config import ConfigError, SourceConfig, recipe_from_dict
from speechtl.data.manifest import Utterance, read_manifest, write_jsonl
from speechtl.data.splits import SplitConfig
from speechtl.evaluate.verify import ReplayTranscriber, verify_transcripts
from speechtl.report.data import relation, relation_text


def _utt(uid, text, speaker="s1", **extra):
    return Utterance(id=uid, audio_filepath=f"/a/{uid}.wav", text=text, duration=1.0, speaker=speaker, lang="es",
                     extra=extra)


def test_verify_keeps_what_the_recording_says_and_quarantines_the_rest_with_both_texts():
    utts = [_utt("a", "marque uno"), _utt("b", "adiós"), _utt("c", "buzón de voz")]
    rows = [{"id": "a", "hypothesis": "marque 1", "cer": 0.1}, {"id": "b", "hypothesis": "gracias", "cer": 0.9},
            {"id": "c", "hypothesis": "buzón de vos", "cer": 0.5}]
    kept, rejected = verify_transcripts(utts, rows, 0.5, witness="unadapted whisper-base")
    assert [u.id for u in kept] == ["a", "c"]  # the threshold itself is kept
    (bad,) = rejected
    assert (bad.id, bad.field, bad.reason, bad.text) == ("b", "text", "transcript_mismatch", "adiós")
    assert "'gracias'" in bad.detail and "0.90" in bad.detail and bad.source == "/a/b.wav"
    with pytest.raises(KeyError, match="c"):
        verify_transcripts(utts, rows[:2], 0.5, witness="w")


def test_replay_hands_back_the_stored_hypotheses_and_refuses_what_it_cannot_know():
    replay = ReplayTranscriber([{"id": "a", "hypothesis": "hola"}, {"id": "b", "hypothesis": ""}], name="r")
    assert replay.transcribe_utterances([_utt("b", "x"), _utt("a", "y")], "es") == ["", "hola"]
    with pytest.raises(KeyError):
        replay.transcribe_utterances([_utt("z", "x")], "es")
    with pytest.raises(ValueError, match="prompt"):
        replay.transcribe_utterances([_utt("a", "x")], "es", prompt="términos")


@pytest.mark.parametrize("train,test,label", [
    ([_utt("t", "x", "allison")], [_utt("e", "y", "july")], "real speech, unseen speaker"),
    ([_utt("t", "x", "allison")], [_utt("e", "y", "allison")], "real speech, seen speaker (in training)"),
    ([_utt("t", "x", "k1", engine="kokoro")], [_utt("e", "y", "k2", engine="kokoro"), _utt("f", "y", "k3",
                                                                                           engine="kokoro")],
     "synthetic speech: kokoro, held-out voices of a training engine"),
    ([_utt("t", "x", "k1", engine="kokoro")], [_utt("e", "y", "e1", engine="espeak")],
     "synthetic speech: espeak, unseen TTS engine"),
    ([_utt("t", "x", "a"), _utt("u", "x", "b")], [_utt("e", "y", "a"), _utt("f", "y", "c")],
     "real speech, seen speakers (1 of 2 in training)"),
])
def test_each_test_set_is_labelled_by_its_relation_to_training(train, test, label):
    assert relation_text(relation(train, test)) == label


def _recipe(**source):
    base = {"name": "r", "lang": "es", "model": "m", "eval": {"primary": "a/test"},
            "data": {"sources": [{"name": "a", "kind": "synth", "sentences": ["s.txt"]}, {"name": "b", **source}]}}
    return recipe_from_dict(base)


@pytest.mark.parametrize("source,message", [
    ({"kind": "corpus", "sentences_from": "a"}, "only for a synth source"),
    ({"kind": "synth", "sentences_from": "a", "use": ["train", "test"]}, "held-out sentences only"),
    ({"kind": "synth", "sentences_from": "zz", "use": ["test"]}, "must name a source listed before it"),
    ({"kind": "corpus", "verify_transcripts": 0.5, "use": ["dev", "test"]}, "only for a test-only source"),
    ({"kind": "corpus", "verify_transcripts": 1.5, "use": ["test"]}, r"a CER in \(0, 1\]"),
])
def test_held_out_source_rules(source, message):
    with pytest.raises(ConfigError, match=message):
        _recipe(**source)


def test_an_evaluation_only_corpus_is_all_test():
    from speechtl.data.splits import split

    utts = [_utt(f"u{i}", f"frase {i}") for i in range(7)]
    parts, leftovers = split(utts, SplitConfig(dev_share=0.0, test_share=1.0, by_speaker=False))
    assert len(parts["test"]) == 7 and not parts["train"] and not parts["dev"] and not leftovers
    with pytest.raises(ValueError):
        SplitConfig(dev_share=0.1, test_share=1.0)
    assert _recipe(kind="corpus", verify_transcripts=0.5, use=["test"]).sources[1].verify_transcripts == 0.5


def test_drop_train_sentences_keeps_only_sentences_training_never_saw(tmp_path):
    from speechtl.adapt.heldout import drop_train_sentences

    recipe = _recipe(kind="corpus", drop_train_sentences=True, use=["test"])
    write_jsonl(tmp_path / "train.jsonl", [_utt("t1", "marque uno", "allison"), _utt("t2", "adiós", "allison")])
    write_jsonl(tmp_path / "test.jsonl", [_utt("e1", "Marque uno.", "july"), _utt("e2", "buzón", "july")])
    prepared = {"a": {}, "b": {"test": tmp_path / "test.jsonl"}}
    said = []
    drop_train_sentences(recipe, prepared, tmp_path / "train.jsonl", said.append)
    assert prepared["b"]["test"] == tmp_path / "test.heldout.jsonl"
    assert [u.id for u in read_manifest(prepared["b"]["test"])] == ["e2"]  # case and punctuation aside
    assert "1 of 2 utterances" in said[0]
    write_jsonl(tmp_path / "test.jsonl", [_utt("e1", "adiós", "july")])
    prepared["b"]["test"] = tmp_path / "test.jsonl"
    with pytest.raises(ConfigError, match="every test sentence"):
        drop_train_sentences(recipe, prepared, tmp_path / "train.jsonl", said.append)


def test_sentences_from_speaks_the_origin_dev_and_test_sentences_and_keeps_their_splits(tmp_path):
    from speechtl.adapt.heldout import held_out_sentences, write_splits_like

    write_jsonl(tmp_path / "dev.jsonl", [_utt("d1", "uno dos"), _utt("d2", "uno dos", "s2")])
    write_jsonl(tmp_path / "test.jsonl", [_utt("e1", "tres cuatro")])
    source = SourceConfig(name="x", kind="synth", engine="espeak", sentences_from="a", use=("dev", "test"))
    held_out = held_out_sentences(source, {"a": {"dev": tmp_path / "dev.jsonl", "test": tmp_path / "test.jsonl"}})
    assert held_out == {"uno dos": "dev", "tres cuatro": "test"}
    spoken = [_utt("v1_dev-0000", "uno dos", "v1", raw_text="uno dos", engine="espeak"),
              _utt("v2_test-0001", "tres cuatro", "v2", raw_text="tres cuatro", engine="espeak")]
    out = tmp_path / "x"
    out.mkdir()
    summary = write_splits_like(spoken, held_out, out)
    assert [u.id for u in read_manifest(out / "dev.jsonl")] == ["v1_dev-0000"]
    assert [u.id for u in read_manifest(out / "test.jsonl")] == ["v2_test-0001"]
    assert read_manifest(out / "train.jsonl") == [] and summary["test"]["utterances"] == 1
    assert json.loads((out / "splits.json").read_text())["dev"]["utterances"] == 1
