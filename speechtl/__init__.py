"""speechtl: adapt a pretrained speech recognizer (Whisper or wav2vec2) to a language or a domain vocabulary,
prove the gain against the unadapted model, and ship a model a voice agent can load.

The public face, one name per stage of the data flow (DESIGN.md): each is imported on first use, so
``import speechtl`` stays cheap and pulls in no optional dependency.

    recipe, resolved = speechtl.load_recipe("recipes/es-medical.yaml")
    payload = speechtl.adapt(recipe, resolved, Path("runs"))          # the whole job
    metrics = speechtl.evaluate_manifest(speechtl.load_runtime("runs/es-medical/export/ct2"),
                                         "runs/es-medical/data/medical/test.jsonl", "eval/ct2", lang="es")
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("speechtl")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    # recipe and job
    "load_recipe": "speechtl.config", "RecipeConfig": "speechtl.config", "ConfigError": "speechtl.config",
    "adapt": "speechtl.adapt.run", "Run": "speechtl.adapt.run",
    # data
    "Utterance": "speechtl.data.manifest", "read_manifest": "speechtl.data.manifest",
    "write_jsonl": "speechtl.data.manifest", "read_corpus": "speechtl.data.importers",
    "prepare": "speechtl.data.prepare", "synthesize_corpus": "speechtl.data.synth.corpus",
    "get_normalizer": "speechtl.text.normalize",
    # models and runtimes
    "resolve": "speechtl.models.registry", "load_runtime": "speechtl.runtimes",
    # training
    "train": "speechtl.train.loop", "Trainer": "speechtl.train.loop", "TrainConfig": "speechtl.train.config",
    # evaluation
    "evaluate_manifest": "speechtl.evaluate.decode", "score": "speechtl.evaluate.scoring",
    "scoring_normalizer": "speechtl.evaluate.scoring",
    # export and serving
    "export": "speechtl.export.parity", "create_app": "speechtl.serve.app",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'speechtl' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
