"""Held-out data of ``speechtl adapt``: what keeps every test set honest about its relation to training.

- ``sentences_from`` sources speak another source's dev and test sentences (in an engine the run does not
  train on) and keep that source's splits (:func:`held_out_sentences`, :func:`write_splits_like`);
- ``drop_train_sentences`` sources lose every sentence of the run's training manifest
  (:func:`drop_train_sentences`), and no dev or test sentence may be trained on (:func:`check_disjoint`);
- ``verify_transcripts`` sources keep only the recordings that say their text, by the unadapted model's
  transcript (:func:`verify_sources`, :mod:`speechtl.evaluate.verify`);
- each test set is labelled by its relation to the training data (:func:`relations`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechtl.config import ConfigError, RecipeConfig, SourceConfig
from speechtl.data.manifest import read_manifest, sentence_key, summarize, write_jsonl
from speechtl.evaluate.decode import evaluate_manifest
from speechtl.evaluate.verify import ReplayTranscriber, verify_transcripts
from speechtl.fsio import atomic_write_text
from speechtl.report.data import read_rows, relation
from speechtl.text.normalize import Normalizer

Notify = Callable[[str], None]


def held_out_sentences(source: SourceConfig, prepared: dict[str, dict[str, Path]]) -> dict[str, str] | None:
    """For ``sentences_from``: text -> "dev" or "test", the held-out sentences of the named source."""
    if source.sentences_from is None:
        return None
    out: dict[str, str] = {}
    for split_name in ("dev", "test"):
        for utt in read_manifest(prepared[source.sentences_from][split_name]):
            out.setdefault(utt.text, split_name)
    if not out:
        raise ConfigError(f"data.sources.{source.name}.sentences_from: source {source.sentences_from!r} holds no "
                          "dev or test sentence")
    return out


def write_splits_like(utterances: list, held_out: dict[str, str], out_dir: Path) -> dict[str, Any]:
    """dev/test by the split each sentence has in its origin source; no train split."""
    parts: dict[str, list] = {"train": [], "dev": [], "test": []}
    for utt in utterances:
        parts[held_out[utt.extra["raw_text"]]].append(utt)
    for name, utts in parts.items():
        write_jsonl(out_dir / f"{name}.jsonl", utts)
    summary = {name: summarize(utts) for name, utts in parts.items()}
    atomic_write_text(out_dir / "splits.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    return summary


def check_disjoint(train: Path, tests: dict[str, Path]) -> None:
    """Never train on what we test on: no test sentence may appear in the training manifest."""
    train_keys = {sentence_key(u.text) for u in read_manifest(train)}
    for name, path in tests.items():
        shared = {sentence_key(u.text) for u in read_manifest(path)} & train_keys
        if shared:
            example = sorted(shared)[0]
            raise ConfigError(f"{len(shared)} sentence(s) of test set {name} are in the training data, "
                              f"e.g. {example!r}")


def drop_train_sentences(recipe: RecipeConfig, prepared: dict[str, dict[str, Path]], train: Path,
                          notify: Notify) -> None:
    """Point the dev/test splits of each ``drop_train_sentences`` source at a copy without training sentences."""
    train_keys = {sentence_key(u.text) for u in read_manifest(train)}
    for source in recipe.sources:
        if not source.drop_train_sentences:
            continue
        for split_name in ("dev", "test"):
            if split_name not in source.use:
                continue
            path = prepared[source.name][split_name]
            utts = read_manifest(path)
            kept = [u for u in utts if sentence_key(u.text) not in train_keys]
            out = path.with_name(f"{split_name}.heldout.jsonl")
            write_jsonl(out, kept)
            prepared[source.name][split_name] = out
            notify(f"data {source.name}/{split_name}: {len(kept)} of {len(utts)} utterances say no training "
                   f"sentence and remain -> {out}")
            if not kept:
                raise ConfigError(f"data.sources.{source.name}: every {split_name} sentence is in the training data")


def verify_sources(recipe: RecipeConfig, baseline: Any, sets: dict[str, Path], normalizer: Normalizer,
                   notify: Notify) -> dict[str, Any]:
    """Quarantine the utterances of ``verify_transcripts`` sources whose recording does not say their text.

    The unadapted model decodes the set once; ``sets`` then points at the kept utterances, and the returned
    replays hand the baseline evaluation the same hypotheses.
    """

    replays = {}
    for ref, path in list(sets.items()):
        source_name, _, split_name = ref.partition("/")
        max_cer = recipe.source(source_name).verify_transcripts
        if max_cer is None:
            continue
        out_dir = path.parent / f"verify-{split_name}"
        evaluate_manifest(baseline, path, out_dir, lang=recipe.lang, normalizer=normalizer,
                          batch_size=recipe.eval.batch_size, model_name=recipe.model)
        rows = read_rows(out_dir / "hypotheses.jsonl")
        kept, rejected = verify_transcripts(read_manifest(path), rows, max_cer, witness=f"unadapted {recipe.model}")
        sets[ref] = path.with_name(f"{split_name}.verified.jsonl")
        mismatch = path.with_name(f"{split_name}.mismatch.jsonl")
        write_jsonl(sets[ref], kept)
        write_jsonl(mismatch, rejected)
        replays[ref] = ReplayTranscriber(rows, name=f"{recipe.model} (hypotheses of the transcript check)")
        notify(f"data {ref}: {len(kept)} utterances kept, {len(rejected)} quarantined as transcript_mismatch "
               f"(CER of the unadapted model over {max_cer}) -> {mismatch}")
        if not kept:
            raise ConfigError(f"data.sources.{source_name}.verify_transcripts: no {split_name} utterance passed")
    return replays


def relations(train: Path, sets: dict[str, Path]) -> dict[str, dict[str, Any]]:
    train_utts = read_manifest(train)
    return {ref: relation(train_utts, read_manifest(path)) for ref, path in sets.items()}
