"""The data stage of ``speechtl adapt``: each source of the recipe prepared into ``runs/<name>/data/<source>/``
(reused while its config is unchanged), then the run's train and dev manifests and its evaluation sets."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from speechtl.adapt import heldout
from speechtl.config import ConfigError, RecipeConfig, SourceConfig
from speechtl.data.importers import read_corpus
from speechtl.data.importers.asterisk import DEFAULT_VOICE, default_root
from speechtl.data.joining import pack_windows
from speechtl.data.manifest import Utterance, read_manifest, sentence_key, write_jsonl
from speechtl.data.nonspeech import KINDS as NONSPEECH_KINDS
from speechtl.data.nonspeech import nonspeech_items
from speechtl.data.prepare import PrepareConfig, prepare, write_splits
from speechtl.data.synth.channel import ChannelConfig
from speechtl.data.synth.corpus import SynthConfig, read_sentences, synthesize_corpus
from speechtl.evaluate.scoring import read_terms
from speechtl.fsio import atomic_write_text, file_sha256

Notify = Callable[[str], None]

DATA_VERSION = 3  # bump when prepared data from an older speechtl must not be reused (2: content-named synth
# audio, 3: source.json holds the digests of the manifests and clips, checked before they are reused)


# source fields that only choose what the run takes from prepared data, or check it later: changing them
# re-prepares nothing
_COMBINE_FIELDS = ("use", "max_train_utterances", "drop_train_sentences", "verify_transcripts", "pack_train_s",
                   "train_speed")


@dataclass(frozen=True)
class RunData:
    """What the data stage hands the rest of the run."""

    prepared: dict[str, dict[str, Path]]  # source -> split -> manifest
    train: Path  # the combined train manifest
    dev: Path  # the combined dev manifest (checkpoint choice)
    sets: dict[str, Path]  # "<source>/<split>" -> manifest: the primary set, the other test sets, forgetting
    dev_sets: dict[str, Path]  # "<source>/dev" -> manifest: every dev split the run uses (alpha choice)
    nonspeech_test: Path | None = None  # held-out clips without speech (no reference: scored by words output)
    nonspeech_dev: Path | None = None  # more of them (other seeds), for the alpha choice
    packed_train: Path | None = None  # the train utterances with packing sources joined into windows

    @property
    def train_input(self) -> Path:
        """The manifest training reads (and the encoder cache holds): packed windows where a source packs.
        Every held-out check reads ``train``, utterance by utterance."""
        return self.packed_train or self.train


def prepare_data(recipe: RecipeConfig, run_dir: Path, notify: Notify) -> RunData:
    """Prepare every source, combine the train and dev splits, hold the evaluation sets out of training."""
    prepared: dict[str, dict[str, Path]] = {}
    for s in recipe.sources:
        prepared[s.name] = prepare_source(s, recipe, run_dir / "data" / s.name, notify, prepared)
    nonspeech = _nonspeech(recipe, run_dir / "data" / "nonspeech", notify)
    train = _combine(recipe, prepared, "train", run_dir / "data" / "train.jsonl", extra=nonspeech.get("train"))
    packed = None
    if any(s.pack_train_s is not None and "train" in s.use for s in recipe.sources):
        packed = _combine(recipe, prepared, "train", run_dir / "data" / "train.packed.jsonl",
                          extra=nonspeech.get("train"), pack=True)
        notify(f"data train: {len(read_manifest(train))} utterances in {len(read_manifest(packed))} training "
               f"items (packed windows) -> {packed}")
    heldout.drop_train_sentences(recipe, prepared, train, notify)
    dev = _combine(recipe, prepared, "dev", run_dir / "data" / "dev.jsonl")
    data = RunData(prepared, train, dev, _eval_sets(recipe, prepared), _dev_sets(recipe, prepared),
                   nonspeech.get("test"), nonspeech.get("dev"), packed)
    heldout.check_disjoint(train, {**data.sets, **data.dev_sets})
    return data


def _fingerprint(source: SourceConfig, lang: str, held_out: dict[str, str] | None) -> str:
    """What a prepared source depends on: its config, the content of its text files, the held-out sentences."""
    fields = {k: v for k, v in asdict(source).items() if k not in _COMBINE_FIELDS}
    files = [*source.sentences, *([source.terms] if source.terms else [])]
    key: dict[str, Any] = {"source": fields, "lang": lang, "v": DATA_VERSION,
                           "files": {str(f): file_sha256(f) for f in files}}
    if held_out is not None:
        key["held_out"] = held_out
    payload = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_source(source: SourceConfig, recipe: RecipeConfig, out_dir: Path, notify: Notify,
                   prepared: dict[str, dict[str, Path]] | None = None) -> dict[str, Path]:
    """Prepare and split one source into ``out_dir``; reuse it when the config is unchanged.

    ``prepared`` holds the sources prepared before this one (what ``sentences_from`` reads).
    """

    held_out = heldout.held_out_sentences(source, prepared or {})
    fingerprint = _fingerprint(source, recipe.lang, held_out)
    stamp = out_dir / "source.json"
    splits = {name: out_dir / f"{name}.jsonl" for name in ("train", "dev", "test")}
    saved = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if saved.get("fingerprint") == fingerprint and all(p.is_file() for p in splits.values()):
        damaged = [f for f, digest in saved["files"].items() if not Path(f).is_file() or file_sha256(f) != digest]
        if not damaged:
            notify(f"data {source.name}: reusing {out_dir}")
            return splits
        notify(f"data {source.name}: {len(damaged)} prepared file(s) missing or not matching their digest "
               f"(first: {damaged[0]}); preparing the source again")
    started = time.perf_counter()
    if source.kind == "corpus":
        items = _corpus_items(source)
    elif held_out is not None:
        sentences = [(f"{split_name}-{i:04d}", text) for i, (text, split_name) in enumerate(held_out.items())]
        notify(f"data {source.name}: the {len(sentences)} dev and test sentences of {source.sentences_from}")
        items = _synth_items(source, recipe, out_dir, notify, sentences)
    else:
        items = _synth_items(source, recipe, out_dir, notify)
    config = PrepareConfig(lang=recipe.lang, max_reject_share=source.max_reject_share, num_workers=recipe.num_workers)
    result = prepare(items, out_dir, config, extra_summary={"source": source.name, "kind": source.kind})
    if held_out is not None:  # the splits of the source the sentences come from
        split_summary = heldout.write_splits_like(result.utterances, held_out, out_dir)
    else:
        split_summary = write_splits(result.utterances, out_dir, source.split)
    s = result.summary
    notify(
        f"data {source.name}: {s['utterances']} utterances ({s['hours']:.2f} h, {s['speakers']} speakers), "
        f"{s['rejected']} rejected -> {out_dir / 'quarantine.jsonl'}; "
        + ", ".join(f"{k} {split_summary[k]['utterances']}" for k in ("train", "dev", "test"))
    )
    files = [*splits.values(), *(u.audio_filepath for p in splits.values() for u in read_manifest(p))]
    atomic_write_text(stamp, json.dumps({"fingerprint": fingerprint, "seconds": round(time.perf_counter() - started, 1),
                                         "files": {str(f): file_sha256(f) for f in files}}) + "\n")
    return splits


def _corpus_items(source: SourceConfig) -> list:
    if source.path is None:
        if source.format != "asterisk":
            raise ConfigError(f"data.sources.{source.name}.path: required for format {source.format!r}")

        path: Path = default_root(source.options.get("voice", DEFAULT_VOICE))
    else:
        path = Path(source.path)
    return list(read_corpus(path, format=source.format, **source.options))


def pick_sentences(sentences: list[tuple[str, str]], source: SourceConfig, seed: int) -> list[tuple[str, str]]:
    """The seeded subset of ``source.max_sentences`` sentences, in file order.

    With ``source.terms``, sentences holding each term (matched as whole
    words, case and accents aside) are taken first, in seeded order, until the
    term has ``min_term_sentences`` of them or none are left; random sentences
    fill the rest. A subset too small for that is an error, not a silent cut.
    """
    n = source.max_sentences
    rng = random.Random(f"{seed}:{source.name}")
    if not source.terms or not source.min_term_sentences:
        keep = set(rng.sample(range(len(sentences)), n))
        return [s for i, s in enumerate(sentences) if i in keep]

    order = list(range(len(sentences)))
    rng.shuffle(order)
    keys = [f" {sentence_key(text)} " for _, text in sentences]
    chosen: set[int] = set()
    for term in read_terms(source.terms):
        key = f" {sentence_key(term)} "
        have = sum(key in keys[i] for i in chosen)
        for i in order:
            if have >= source.min_term_sentences:
                break
            if i not in chosen and key in keys[i]:
                chosen.add(i)
                have += 1
    if len(chosen) > n:
        raise ConfigError(f"data.sources.{source.name}.max_sentences: {n} sentences cannot hold "
                          f"{source.min_term_sentences} sentences of each term in {source.terms} "
                          f"({len(chosen)} needed)")
    chosen.update([i for i in order if i not in chosen][: n - len(chosen)])
    return [s for i, s in enumerate(sentences) if i in chosen]


def _synth_items(source: SourceConfig, recipe: RecipeConfig, out_dir: Path, notify: Notify,
                 sentences: list[tuple[str, str]] | None = None) -> list:

    if sentences is None:
        sentences = [s for path in source.sentences for s in read_sentences(Path(path))]
    if source.max_sentences is not None and source.max_sentences < len(sentences):
        sentences = pick_sentences(sentences, source, recipe.seed)
    channel = None
    if source.channel is not None:
        channel = ChannelConfig(**asdict(source.channel), seed=recipe.seed)
    config = SynthConfig(
        engine=source.engine,
        lang=recipe.lang,
        num_voices=source.num_voices,
        voices_per_sentence=source.voices_per_sentence,
        seed=recipe.seed,
        num_workers=recipe.num_workers,
        channel=channel,
    )
    notify(f"data {source.name}: synthesizing {len(sentences)} sentences with {source.engine}")
    holdout = None if source.sentences_from else source.split
    return synthesize_corpus(sentences, out_dir / "raw", config, holdout=holdout)


def _nonspeech(recipe: RecipeConfig, out_dir: Path, notify: Notify) -> dict[str, Path]:
    """The no-speech train, dev and test manifests (clips of distinct seeds, 16 kHz mono as made, empty texts)."""
    config = recipe.nonspeech
    kinds = config.kinds or NONSPEECH_KINDS
    out: dict[str, Path] = {}
    for split_name, count, seed in (("train", config.train_clips, recipe.seed),
                                    ("dev", config.dev_clips, recipe.seed + 7907),
                                    ("test", config.test_clips, recipe.seed + 7919)):
        if not count:
            continue
        items = nonspeech_items(out_dir / "audio", count, seed, kinds=kinds, min_s=config.min_s,
                                max_s=config.max_s, prefix=f"nonspeech-{split_name}")
        utts = [Utterance(id=i.id, audio_filepath=str(Path(i.audio_path).resolve()), text="",
                          duration=i.extra["seconds"], speaker=i.speaker, lang=recipe.lang, extra=dict(i.extra))
                for i in items]
        out[split_name] = out_dir / f"{split_name}.jsonl"
        write_jsonl(out[split_name], utts)
        notify(f"data nonspeech/{split_name}: {count} clips without speech ({', '.join(kinds)}) -> {out[split_name]}")
    return out


def _combine(recipe: RecipeConfig, prepared: dict[str, dict[str, Path]], split_name: str, out: Path,
             extra: Path | None = None, *, pack: bool = False) -> Path:
    """Every source's ``split_name`` split the recipe uses (and ``extra``'s utterances) in one manifest.

    With ``pack``, the train utterances of each source with ``pack_train_s`` are joined into windows
    (:func:`speechtl.data.joining.pack_windows`, under ``<out's folder>/<source>/packed/``)."""
    utts = []
    for source in recipe.sources:
        if split_name in source.use:
            part = read_manifest(prepared[source.name][split_name])
            n = source.max_train_utterances
            if split_name == "train" and n is not None and n < len(part):
                keep = set(random.Random(f"{recipe.seed}:{source.name}:train").sample(range(len(part)), n))
                part = [u for i, u in enumerate(part) if i in keep]
            if pack and source.pack_train_s is not None:
                part = pack_windows(part, out.parent / source.name / "packed", max_s=source.pack_train_s,
                                    seed=recipe.seed, prefix=f"{source.name}-packed", speed=source.train_speed)
            utts.extend(part)
    if not utts:
        raise ConfigError(f"no source uses its {split_name} split; set data.sources.NAME.use")
    if extra is not None:
        utts.extend(read_manifest(extra))
    write_jsonl(out, utts)
    return out


def _dev_sets(recipe: RecipeConfig, prepared: dict[str, dict[str, Path]]) -> dict[str, Path]:
    """``<source>/dev`` -> manifest, for every source whose dev split the run uses (what alpha is chosen on)."""
    return {f"{s.name}/dev": prepared[s.name]["dev"] for s in recipe.sources if "dev" in s.use}


def _eval_sets(recipe: RecipeConfig, prepared: dict[str, dict[str, Path]]) -> dict[str, Path]:
    refs = [recipe.eval.primary, *recipe.eval.test_sets]
    if recipe.eval.forgetting:
        refs.append(recipe.eval.forgetting)
    out = {}
    for ref in dict.fromkeys(refs):
        source, _, split_name = ref.partition("/")
        out[ref] = prepared[source][split_name]
    return out
