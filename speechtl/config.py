"""Typed recipe config: YAML -> frozen dataclasses, validated, with ``key=value`` overrides.

A recipe (``recipes/<name>.yaml``) names the model, the data sources, how they
are split and used, the training strategy and hyperparameters, and what the
evaluation scores. Unknown keys are errors that name the key and where it
was found; ``key=value`` overrides use dotted paths (``train.strategy=lora``,
``model=whisper-small``, ``data.sources.asterisk.path=/corpora/x``) and are
validated like the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from speechtl.data.nonspeech import KINDS as NONSPEECH_KINDS
from speechtl.data.splits import SplitConfig
from speechtl.train.config import TrainConfig


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the key."""


@dataclass(frozen=True)
class ChannelSpec:
    codec: str = "none"  # "none", "mulaw" (G.711), "g722", "gsm", "opus"
    snr_db: tuple[float, float] | None = None  # additive noise SNR range in dB; None = no noise
    noise: tuple[str, ...] = ("white", "pink")  # noise kinds drawn per item: "white", "pink", "babble"
    level_jitter_db: float = 0.0  # random gain within +- this many dB


@dataclass(frozen=True)
class SourceConfig:
    """One data source; it becomes a prepared, split manifest under runs/<name>/data/<source>/."""

    name: str  # short id used in paths and reports, e.g. "asterisk"
    kind: str = "corpus"  # "corpus" (an importer) or "synth" (sentences -> TTS)
    format: str | None = None  # importer name for corpora; None = detect
    path: str | None = None  # corpus folder/file, or None for the importer's default (asterisk)
    options: dict[str, Any] = field(default_factory=dict)  # importer options
    sentences: tuple[str, ...] = ()  # synth: sentence files, relative to the repo root
    max_sentences: int | None = None  # synth: seeded subset of the sentences (CPU budget); None = all
    terms: str | None = None  # synth: term list the subset must cover (one term a line)
    min_term_sentences: int = 0  # synth: the subset keeps at least this many sentences of each term
    engine: str = "kokoro"  # synth: "kokoro" or "espeak"
    num_voices: int = 10  # synth: voices (speakers) to create
    voices_per_sentence: int | None = 1  # synth: voices that say each sentence
    channel: ChannelSpec | None = None  # synth: telephone channel simulation
    split: SplitConfig = field(default_factory=SplitConfig)  # held-out rules for this source
    use: tuple[str, ...] = ("train", "dev", "test")  # which splits the run uses
    max_train_utterances: int | None = None  # a seeded sample of at most N train utterances (e.g. rehearsal data)
    max_reject_share: float = 0.2  # data prep fails above this rejected share
    sentences_from: str | None = None  # synth: speak the dev and test sentences of this earlier source instead of
    # `sentences` (e.g. held-out sentences in an engine the run does not train on); the splits follow that source's
    drop_train_sentences: bool = False  # its dev/test splits lose every sentence of the run's training manifest
    # (a corpus that says the training prompts in another voice); how many remain is reported
    verify_transcripts: float | None = None  # max CER of the unadapted model's transcript against the reference
    # (texts matched to audio by id); above it the utterance is quarantined as transcript_mismatch
    pack_train_s: float | None = None  # Whisper: its train utterances joined into windows of up to this many
    # seconds (sizes drawn per window, speechtl.data.joining.pack_windows): fewer 30-s encoder passes per utterance
    train_speed: tuple[float, float] | None = None  # with pack_train_s: each packed train utterance played at a
    # seeded speed in [low, high] (speed perturbation, e.g. [0.9, 1.1]: tempo and pitch, as if another speaker)

    def __post_init__(self) -> None:
        if self.kind not in ("corpus", "synth"):
            raise ConfigError(f"data.sources.{self.name}.kind: {self.kind!r} must be 'corpus' or 'synth'")
        if self.kind == "synth" and not self.sentences and not self.sentences_from:
            raise ConfigError(f"data.sources.{self.name}.sentences: a synth source needs sentence files "
                              "(or sentences_from: SOURCE)")
        if self.sentences_from is not None:
            if self.kind != "synth" or self.sentences:
                raise ConfigError(f"data.sources.{self.name}.sentences_from: only for a synth source without "
                                  "'sentences'")
            if "train" in self.use:
                raise ConfigError(f"data.sources.{self.name}.use: a sentences_from source holds held-out "
                                  "sentences only; use [dev, test]")
        if self.verify_transcripts is not None:
            if not 0 < self.verify_transcripts <= 1:
                raise ConfigError(f"data.sources.{self.name}.verify_transcripts: a CER in (0, 1], or null")
            if set(self.use) != {"test"}:
                raise ConfigError(f"data.sources.{self.name}.verify_transcripts: only for a test-only source "
                                  "(use: [test]); the unadapted model's agreement must not pick training data")
        if self.pack_train_s is not None and not 0 < self.pack_train_s <= 30:
            raise ConfigError(f"data.sources.{self.name}.pack_train_s: seconds in (0, 30] (one Whisper window), "
                              "or null")
        if self.train_speed is not None and (self.pack_train_s is None
                                             or not 0.5 <= self.train_speed[0] <= self.train_speed[1] <= 2.0):
            raise ConfigError(f"data.sources.{self.name}.train_speed: [low, high] within [0.5, 2], with "
                              "pack_train_s set (the speeds are applied as the windows are packed)")
        if self.max_train_utterances is not None and self.max_train_utterances < 1:
            raise ConfigError(f"data.sources.{self.name}.max_train_utterances: must be >= 1 or null")
        if self.min_term_sentences and not self.terms:
            raise ConfigError(f"data.sources.{self.name}.min_term_sentences: needs a 'terms' file")
        for split_name in self.use:
            if split_name not in ("train", "dev", "test"):
                raise ConfigError(f"data.sources.{self.name}.use: {split_name!r} is not train, dev or test")


@dataclass(frozen=True)
class EvalConfig:
    primary: str  # "<source>/<split>" whose WER is the headline result, e.g. "asterisk/test"
    test_sets: tuple[str, ...] = ()  # more "<source>/<split>" sets scored before and after
    forgetting: str | None = None  # "<source>/<split>" of general speech training did not target
    terms: str | None = None  # term list file for per-term recall
    prompt_with_terms: bool = False  # also score the baseline prompted with the term list (primary and test_sets)
    term_prompt: str = "off"  # Whisper: "dev" decodes the adapted model's dev sets again with the term list as its
    # prompt and, where that lowers the joined dev WER and gets words on no more no-speech dev clips, scores it
    # on every set as system "adapted+prompt" (the export's model card and speechtl_run.json record the
    # choice); "off": never
    batch_size: int = 8  # decoding batch size
    num_beams: int = 1  # 1 = greedy
    decode_cache: bool = True  # reuse the unadapted model's transcripts across runs (evaluate.cached_decodes)
    longform: bool = True  # Whisper: also score the primary set joined into 1-3 min recordings, decoded whole
    timestamp_recordings: int = 2  # Whisper with a ct2 export: check the segment timestamps of this many long-form
    # recordings through faster-whisper, baseline and adapted (evaluate.timestamps); 0 = no check
    max_wer: float | None = 1.0  # a WER above this, or no word output on a whole set, fails the run (a broken
    # model or cache, not a result); null = no check (e.g. a random test model)

    def __post_init__(self) -> None:
        if self.timestamp_recordings < 0:
            raise ConfigError(f"eval.timestamp_recordings: must be >= 0, got {self.timestamp_recordings}")
        if self.term_prompt not in ("off", "dev"):
            raise ConfigError(f"eval.term_prompt: {self.term_prompt!r} is not off or dev")
        if self.term_prompt == "dev" and not self.terms:
            raise ConfigError("eval.term_prompt: dev needs eval.terms (the term list is the prompt)")


@dataclass(frozen=True)
class DecodeConfig:
    """CTC route: the LM beam search scored as system "adapted+lm" (the Whisper route ignores this section)."""

    lm: bool = True  # also decode the adapted CTC model with the n-gram LM beam search
    lm_sentences: tuple[str, ...] = ()  # LM text files (one sentence a line) besides the train transcripts;
    # any dev or test sentence in them is removed first
    lm_order: int = 3  # n-gram order
    beam_size: int = 50  # hypotheses kept per frame
    lm_weights: tuple[float, ...] = (0.5, 1.0, 2.0)  # candidates; the lowest dev WER decodes the test sets
    word_scores: tuple[float, ...] = (0.0, 1.0)  # candidate per-word bonuses, tried with every lm_weight
    term_boost: float = 1.0  # log10 LM bonus per word of an eval.terms term

    def __post_init__(self) -> None:
        if self.lm_order < 1 or self.beam_size < 1:
            raise ConfigError("decode: lm_order and beam_size must be >= 1")
        if not self.lm_weights or not self.word_scores:
            raise ConfigError("decode: lm_weights and word_scores need at least one candidate each")


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = ("hf", "ct2")  # "hf" (transformers dir), "ct2" (CTranslate2: Whisper), "onnx" (CTC)
    ct2_quantization: str = "float16"  # CTranslate2 weight type: float16, int8, int8_float16, float32
    ct2_compute_type: str = "int8"  # CTranslate2 runtime type of the parity check (what a CPU service runs)
    parity_margin_points: float = 1.0  # an export whose test WER is worse by more WER points fails
    hf_check_utts: int | None = 8  # hf: byte-identical weight files + this many utterances through from_pretrained
    # (the export is a copy of the evaluated weights); null = decode the whole primary test set again
    check_unpadded: bool = False  # ct2: also decode unpadded audio (as Pipecat's WhisperSTTService calls it)

    def __post_init__(self) -> None:
        for fmt in self.formats:
            if fmt not in ("hf", "ct2", "onnx"):
                raise ConfigError(f"export.formats: {fmt!r} is not hf, ct2 or onnx")
        if self.parity_margin_points < 0:
            raise ConfigError("export.parity_margin_points: must be >= 0")


@dataclass(frozen=True)
class InterpolateConfig:
    """Weight-space interpolation of the base and the adapted Whisper (WiSE-FT), chosen on dev data only."""

    enabled: bool = True  # Whisper route; the CTC route's new head has no base weights to interpolate with
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # weight of the adapted model: 0 = base, 1 = adapted
    # a candidate decodes the dev split of each source the run uses for dev; the lowest WER of those
    # sets joined into one wins (a tie goes to the smaller alpha, nearer the base model)
    search: str = "grid"  # grid: decode every alpha; descend: down from the largest while the joined WER falls
    # (speechtl.train.interpolate.select_alpha)

    def __post_init__(self) -> None:
        if not self.alphas or any(not 0 <= a <= 1 for a in self.alphas):
            raise ConfigError(f"interpolate.alphas: {list(self.alphas)} must be non-empty numbers in [0, 1]")
        if self.search not in ("grid", "descend"):
            raise ConfigError(f"interpolate.search: {self.search!r} is not grid or descend")


@dataclass(frozen=True)
class NonspeechConfig:
    """Audio without speech (speechtl.data.nonspeech): its empty target in training, its own test set."""

    train_clips: int = 0  # clips mixed into the train manifest (about that share of every batch); 0 = none
    dev_clips: int = 0  # clips (other seeds) whose share with words joins the dev WERs alpha is chosen on
    test_clips: int = 48  # held-out clips (other seeds) every run decodes: share of clips with any word; 0 = none
    kinds: tuple[str, ...] = ()  # which kinds (default: all of speechtl.data.nonspeech.KINDS)
    min_s: float = 1.0  # clip length range, seconds
    max_s: float = 10.0

    def __post_init__(self) -> None:
        if min(self.train_clips, self.dev_clips, self.test_clips) < 0:
            raise ConfigError("nonspeech: train_clips, dev_clips and test_clips must be >= 0")
        if not 0 < self.min_s <= self.max_s <= 30:
            raise ConfigError(f"nonspeech: need 0 < min_s <= max_s <= 30, got {self.min_s}, {self.max_s}")
        unknown = sorted(set(self.kinds) - set(NONSPEECH_KINDS))
        if unknown:
            raise ConfigError(f"nonspeech.kinds: {unknown} not in {list(NONSPEECH_KINDS)}")


@dataclass(frozen=True)
class RecipeConfig:
    name: str  # run name: results go to runs/<name>/
    lang: str  # target language (ISO 639-1)
    model: str  # model name, hub id or local directory (see speechtl.models.registry)
    sources: tuple[SourceConfig, ...]  # data sources
    eval: EvalConfig  # what to score
    train: TrainConfig = field(default_factory=TrainConfig)  # strategy and hyperparameters
    export: ExportConfig = field(default_factory=ExportConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # CTC route: LM beam search
    interpolate: InterpolateConfig = field(default_factory=InterpolateConfig)  # WiSE-FT, alpha chosen on dev
    nonspeech: NonspeechConfig = field(default_factory=NonspeechConfig)  # no speech in: no words out
    seed: int = 0  # the seed every stage derives its own from
    num_workers: int = 2  # worker processes for data prep and synthesis

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.sources: names must be unique, got {names}")
        for ref in (self.eval.primary, *self.eval.test_sets, *([self.eval.forgetting] if self.eval.forgetting else [])):
            source, _, split_name = ref.partition("/")
            if source not in names or split_name not in ("train", "dev", "test"):
                raise ConfigError(f"eval: {ref!r} must be '<source>/<split>' with a source in {names}")
        for i, s in enumerate(self.sources):
            if s.sentences_from is not None and s.sentences_from not in names[:i]:
                raise ConfigError(f"data.sources.{s.name}.sentences_from: {s.sentences_from!r} must name a source "
                                  f"listed before it, one of {names[:i]}")
        if self.train.prompt_share > 0 and not (self.train.prompt.strip() or self.eval.terms):
            raise ConfigError("train.prompt_share: prompted training needs train.prompt or eval.terms (the term list "
                              "is the prompt)")

    def source(self, name: str) -> SourceConfig:
        return next(s for s in self.sources if s.name == name)


# ------------------------------------------------------------------ building


def _hint(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build(hint, value, where)
    if origin is tuple:
        if isinstance(value, str | int | float):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        if len(args) == 2 and args[1] is not Ellipsis:  # fixed pair
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a mapping; unknown keys and bad types are ConfigErrors."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, _hint(cls, name), f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):  # a list of named items: address by name
            match = [item for item in node if isinstance(item, dict) and item.get("name") == part]
            if not match:
                raise ConfigError(f"override {key}: no item named {part!r} under {'.'.join(parts[:i]) or 'root'}")
            node = match[0]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a mapping")
    if isinstance(node, list):
        raise ConfigError(f"override {key}: address a list item by its name, e.g. data.sources.NAME.field")
    node[parts[-1]] = value


def load_recipe(path: Path | str, overrides: dict[str, Any] | None = None) -> tuple[RecipeConfig, dict[str, Any]]:
    """Read a recipe, apply ``overrides`` (dotted keys), validate; returns the config and the resolved mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return recipe_from_dict(data, where=str(path)), data


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> RecipeConfig:
    data = dict(data)
    payload = data.pop("data", None)
    if not isinstance(payload, dict) or "sources" not in payload:
        raise ConfigError(f"{where}: 'data.sources' is required")
    extra = sorted(set(payload) - {"sources"})
    if extra:
        raise ConfigError(f"{where}: data: unknown key(s) {extra}; known: ['sources']")
    sources = payload["sources"]
    if not isinstance(sources, list) or not sources:
        raise ConfigError(f"{where}: data.sources must be a non-empty list")
    for i, source in enumerate(sources):
        if not isinstance(source, dict) or "name" not in source:
            raise ConfigError(f"{where}: data.sources[{i}] needs a 'name'")
    data["sources"] = [build(SourceConfig, s, f"data.sources.{s['name']}") for s in sources]
    for required in ("name", "lang", "model", "eval"):
        if required not in data:
            raise ConfigError(f"{where}: missing required key {required!r}")
    return build(RecipeConfig, data)
