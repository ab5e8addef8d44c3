"""Recipe config: the shipped recipes load, and bad input names the key."""

from pathlib import Path

import pytest
import yaml

from speechtl.config import ConfigError, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_load(path):
    recipe, resolved = load_recipe(path)
    assert recipe.name == path.stem
    for source in recipe.sources:
        for sentences in source.sentences:
            assert (ROOT / sentences).is_file(), sentences
    if recipe.eval.terms:
        assert (ROOT / recipe.eval.terms).is_file()


def test_overrides_apply_by_dotted_key_and_list_item_name():
    recipe, resolved = load_recipe(
        ROOT / "recipes/es.yaml",
        {"model": "whisper-small", "train.strategy": "lora", "data.sources.asterisk.path": "/corpora/x"},
    )
    assert recipe.model == "whisper-small"
    assert recipe.train.strategy == "lora"
    assert recipe.source("asterisk").path == "/corpora/x"
    assert resolved["train"]["strategy"] == "lora"
    # YAML 1.1 reads 1e-4 (no dot) as a string; a number field still takes it
    recipe, _ = load_recipe(ROOT / "recipes/es.yaml", {"train.learning_rate": "1e-4", "train.dropout": "0.1"})
    assert recipe.train.learning_rate == 1e-4 and recipe.train.dropout == 0.1


def _minimal(**changes):
    data = {
        "name": "t",
        "lang": "es",
        "model": "whisper-base",
        "data": {"sources": [{"name": "a", "kind": "corpus", "format": "folder", "path": "/x"}]},
        "eval": {"primary": "a/test"},
    }
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"modle": "x"}, r"unknown key\(s\) \['modle'\]"),
        ({"train": {"strategy": "everything"}}, "strategy"),
        ({"train": {"learning_rate": "fast"}}, "learning_rate"),
        ({"eval": {"primary": "b/test"}}, "eval: 'b/test' must be"),
        ({"data": {"sources": [{"name": "a", "kind": "tts", "sentences": ["x"]}]}}, "kind"),
        ({"data": {"sources": [{"name": "a", "kind": "synth"}]}}, "a synth source needs sentence files"),
        ({"data": {"sources": [{"name": "a", "use": ["training"]}]}}, "'training' is not train"),
        ({"data": {"sources": [{"name": "a", "split": {"test_share": 1.5}}]}}, "test_share"),
        ({"data": {"sources": [{"name": "a", "num_voices": "ten"}]}}, r"data.sources.a.num_voices: expected an integer"),
        ({"lang": None}, "lang: expected a string"),
        ({"train": {"prompt_share": 0.5}}, "prompted training needs train.prompt or eval.terms"),
        ({"train": {"prompt_share": 1.5}}, "prompt_share"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, changes, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_minimal(**changes)), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)


def test_override_of_unknown_list_item_is_an_error():
    with pytest.raises(ConfigError, match="no item named 'nope'"):
        load_recipe(ROOT / "recipes/es.yaml", {"data.sources.nope.path": "/x"})
