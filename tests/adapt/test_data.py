"""The data stage of `speechtl adapt`: packed training windows beside the utterance-level train manifest."""

import pytest
from tone_corpus import folder_corpus

from speechtl.adapt.data import prepare_data
from speechtl.config import ConfigError, recipe_from_dict
from speechtl.data.manifest import read_manifest

SENTENCES = ["hola qué tal", "buenos días", "muchas gracias", "hasta luego", "por favor", "buenas noches",
             "sí señor", "de nada", "perdone usted", "hasta mañana"]


def _recipe(corpus, **source):
    return recipe_from_dict({
        "name": "p", "lang": "es", "model": "m", "eval": {"primary": "corpus/test"},
        "data": {"sources": [{"name": "corpus", "kind": "corpus", "format": "folder", "path": str(corpus),
                              "split": {"dev_share": 0.2, "test_share": 0.2, "by_speaker": False, "seed": 1},
                              **source}]},
        "nonspeech": {"train_clips": 2, "test_clips": 0, "min_s": 0.5, "max_s": 1.0}})


def test_packing_sources_train_on_windows_and_every_check_reads_utterances(tmp_path):
    corpus = folder_corpus(tmp_path / "corpus", SENTENCES)
    data = prepare_data(_recipe(corpus, pack_train_s=3.0), tmp_path / "run", lambda _: None)
    utts = read_manifest(data.train)
    windows = read_manifest(data.train_input)
    assert data.train_input == data.packed_train == tmp_path / "run/data/train.packed.jsonl"
    speech = [u for u in utts if not u.extra.get("nonspeech")]
    packed = [w for w in windows if "joined_ids" in w.extra]
    # the windows hold every training utterance once (clips without speech stay as they are), and fewer
    # items reach the encoder than there are utterances
    assert sorted(i for w in packed for i in w.extra["joined_ids"]) == sorted(u.id for u in speech)
    assert [u.id for u in windows if u.extra.get("nonspeech")] == [u.id for u in utts if u.extra.get("nonspeech")]
    assert len(packed) < len(speech) and all(w.duration <= 3.0 or len(w.extra["joined_ids"]) == 1 for w in packed)
    # the utterance-level manifest is what the held-out checks compare with the test sets
    assert all("joined_ids" not in u.extra for u in utts)
    plain = prepare_data(_recipe(corpus), tmp_path / "plain", lambda _: None)
    assert plain.packed_train is None and plain.train_input == plain.train


def test_pack_train_s_is_at_most_one_window(tmp_path):
    with pytest.raises(ConfigError, match="pack_train_s"):
        _recipe(tmp_path, pack_train_s=45.0)


def test_train_speed_needs_packing(tmp_path):
    with pytest.raises(ConfigError, match="train_speed"):
        _recipe(tmp_path, train_speed=[0.9, 1.1])
    assert _recipe(tmp_path, pack_train_s=20.0, train_speed=[0.9, 1.1]).sources[0].train_speed == (0.9, 1.1)


def test_a_damaged_prepared_clip_or_manifest_is_prepared_again_never_reused(tmp_path):
    corpus = folder_corpus(tmp_path / "corpus", SENTENCES)
    recipe, said = _recipe(corpus), []
    first = read_manifest(prepare_data(recipe, tmp_path / "run", said.append).prepared["corpus"]["test"])
    prepare_data(recipe, tmp_path / "run", said.append)
    assert any("data corpus: reusing" in line for line in said)
    clip = first[0].audio_filepath
    good = open(clip, "rb").read()
    with open(clip, "r+b") as handle:  # the header kept, the samples silenced: still a valid WAV file
        handle.seek(44)
        handle.write(bytes(len(good) - 44))
    said.clear()
    again = prepare_data(recipe, tmp_path / "run", said.append).prepared["corpus"]["test"]
    assert any("not matching their digest" in line and clip in line for line in said)
    assert not any("reusing" in line for line in said)
    assert open(clip, "rb").read() == good and read_manifest(again) == first
    (tmp_path / "run/data/corpus/train.jsonl").write_text("", encoding="utf-8")  # a manifest emptied
    said.clear()
    prepare_data(recipe, tmp_path / "run", said.append)
    assert any("not matching their digest" in line and "train.jsonl" in line for line in said)
