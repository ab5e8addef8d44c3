"""Training settings: :class:`TrainConfig` (validated on construction), precision and resume rules."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STRATEGIES = ("head", "top-k", "lora", "full")
# learning rate used when the config leaves it unset (adapters tolerate far larger steps than full weights)
DEFAULT_LEARNING_RATE = {"head": 3e-5, "top-k": 2e-5, "lora": 1e-3, "full": 1e-5, "adapters": 1e-3}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

MIXED_PRECISION = ("no", "bf16", "fp16", "auto")
# fields that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = frozenset({"max_train_time_s", "num_threads", "dataloader_workers", "log_every_steps", "cache_dir",
                               "cache_batch_size", "eval_batch_size"})


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune; validated on construction (errors name the field)."""

    route: str = "auto"  # model family: seq2seq (Whisper) | ctc (wav2vec2 family, or Whisper encoder + CTC head) |
    # auto (seq2seq for a Whisper checkpoint, ctc for a wav2vec2-family one)
    strategy: str = "head"  # what trains: head | top-k | lora | full (see speechtl.train.strategies); ctc also adapters
    top_k: int = 2  # top-k: encoder layers that train, counted from the top
    lora_r: int = 32  # lora: adapter rank
    lora_alpha: float = 64.0  # lora: adapter scale numerator (scale = lora_alpha / lora_r)
    lora_dropout: float = 0.0  # lora: dropout on the adapter input (a random mask per adapted activation: slow on CPU)
    lora_targets: tuple[str, ...] = LORA_TARGETS  # lora: names of the linear layers that get adapters
    freeze_embeddings: bool = False  # keep decoder token + position embeddings fixed (not lora): less optimizer state
    dropout: float | None = None  # residual dropout of the trainable transformer layers; None = the model's own (0)
    learning_rate: float | None = None  # peak AdamW rate; None = the strategy's DEFAULT_LEARNING_RATE
    head_learning_rate: float | None = None  # ctc: peak rate of the new output layer; None = 1e-3
    weight_decay: float = 0.0  # AdamW weight decay (never on biases and norms)
    warmup_steps: int = 50  # linear warmup in optimizer steps, then linear decay to 0 at the last step
    max_steps: int | None = None  # optimizer steps to run; wins over num_epochs when set
    num_epochs: int = 5  # passes over the training set when max_steps is None
    batch_size: int = 8  # utterances per micro-batch on each process
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0  # gradient-norm clipping; None = off
    eval_every_steps: int = 100  # dev evaluation every N optimizer steps (and always at the end); 0 = never: the
    # last step is the checkpoint (best_dir), for a run that scores it on dev afterwards (WiSE-FT's alpha decodes)
    eval_at_start: bool = True  # score the untrained model first; it stays "best" until training beats it
    eval_batch_size: int = 16  # dev utterances per decoding batch
    eval_max_new_tokens: int = 128  # decoding limit per dev utterance
    early_stopping_patience: int | None = 5  # stop after N evaluations without a lower dev WER; None = never
    save_every_steps: int | None = None  # write out_dir/last every N steps; None = at each evaluation
    log_every_steps: int = 10  # one history.jsonl row every N steps (evaluations add theirs)
    max_label_tokens: int = 448  # longest decoder sequence (prefix + text + end token)
    long_labels: str = "error"  # over-long labels: "error" (fail, listing them) or "skip" (out_dir/skipped.jsonl)
    spec_augment: bool = False  # SpecAugment on log-mels (on the cached encoder states when cache_encoder)
    spec_time_masks: int = 2  # SpecAugment: time masks per utterance
    spec_time_mask_frames: int = 40  # SpecAugment: widest time mask, in 10 ms frames
    spec_freq_masks: int = 2  # SpecAugment: frequency masks per utterance
    spec_freq_mask_bins: int = 10  # SpecAugment: widest frequency mask, in mel bins
    mixed_precision: str = "auto"  # no | bf16 | fp16 | auto (bf16 where the CPU or GPU has it, fp16 on older GPUs)
    cache_encoder: bool = True  # cache the frozen encoder prefix on disk (fp16 memmap); False = recompute each step
    cache_dir: str | None = None  # encoder cache root; None = speechtl.cache.encoder_cache_dir (shared by runs)
    window_step_s: float | None = None  # seq2seq: training encodes each clip in a window of its length rounded up
    # to this step (speechtl.models.windows; dev decoding while training too); the model is evaluated and served on
    # Whisper's 30-s windows. None = 30-s windows in training too
    timestamp_share: float = 0.0  # seq2seq: seeded share of speech targets written with Whisper timestamp tokens
    # (<|0.00|> text <|end|>, the clip's start and end) instead of <|notimestamps|>, so long-form decoding still works
    prompt_share: float = 0.0  # seq2seq: seeded share of targets (clips without speech too) conditioned on
    # ``prompt`` as Whisper's previous-text prompt, so the model learns to use a term prompt (served as hotwords)
    prompt: str = ""  # that prompt; the adapt run sets the recipe's term list here (WhisperASR.term_prompt)
    cache_batch_size: int = 8  # utterances per encoder batch while building the cache
    bucket_batches: int = 50  # batches per length-sorting window (1 = random batches, no sorting)
    max_train_time_s: float | None = None  # wall-clock budget of this call's loop (evaluations in, cache build out)
    num_threads: int | None = None  # torch CPU threads; None = torch's default
    dataloader_workers: int = 0  # DataLoader worker processes
    seed: int = 0  # seeds torch/numpy/random, data order, SpecAugment masks and adapter init
    lang: str = "es"  # language token forced in labels and in decoding
    task: str = "transcribe"  # transcribe | translate

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ValueError(f"TrainConfig.{name} {rule}, got {getattr(self, name)!r}")

        def integer(name: str, low: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                fail(name, f"must be an integer >= {low}" + (" or null" if optional else ""))

        def number(name: str, low: float, low_open: bool, high: float | None = None, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
            if not ok or (v <= low if low_open else v < low) or (high is not None and v > high):
                span = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
                fail(name, f"must be a number {span}" + (" or null" if optional else ""))

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                fail(name, f"must be one of {list(options)}")

        choice("route", ("auto", "seq2seq", "ctc"))
        choice("strategy", (*STRATEGIES, "adapters"))
        if self.strategy == "adapters" and self.route == "seq2seq":
            fail("strategy", "'adapters' (MMS attention adapters) is a ctc strategy; Whisper has lora")
        choice("mixed_precision", MIXED_PRECISION)
        choice("long_labels", ("error", "skip"))
        choice("task", ("transcribe", "translate"))
        for name in ("top_k", "lora_r", "num_epochs", "batch_size", "grad_accum_steps", "eval_batch_size", "eval_max_new_tokens", "log_every_steps", "cache_batch_size",
                     "bucket_batches"):
            integer(name, 1)
        for name in ("warmup_steps", "eval_every_steps", "spec_time_masks", "spec_time_mask_frames", "spec_freq_masks",
                     "spec_freq_mask_bins", "dataloader_workers", "seed"):
            integer(name, 0)
        for name in ("max_steps", "save_every_steps", "num_threads"):
            integer(name, 1, optional=True)
        integer("early_stopping_patience", 1, optional=True)
        if self.eval_every_steps == 0 and self.eval_at_start is True:
            fail("eval_at_start", "needs dev evaluations during training (eval_every_steps is 0): the untrained "
                 "model would stay the best checkpoint")
        integer("max_label_tokens", 5)
        number("lora_alpha", 0, True)
        number("lora_dropout", 0, False, 1)
        number("dropout", 0, False, 0.9, optional=True)
        number("learning_rate", 0, True, optional=True)
        number("head_learning_rate", 0, True, optional=True)
        number("weight_decay", 0, False)
        number("max_grad_norm", 0, True, optional=True)
        number("max_train_time_s", 0, True, optional=True)
        number("window_step_s", 0, True, 30, optional=True)
        number("timestamp_share", 0, False, 1)
        number("prompt_share", 0, False, 1)
        if not isinstance(self.prompt, str):
            fail("prompt", "must be a string")
        for name in ("freeze_embeddings", "eval_at_start", "spec_augment", "cache_encoder"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be true or false")
        if (not isinstance(self.lora_targets, tuple) or not self.lora_targets
                or not all(isinstance(t, str) and t for t in self.lora_targets)):
            fail("lora_targets", "must be a non-empty tuple of module names")
        if not isinstance(self.lang, str) or not self.lang.isalpha() or not self.lang.islower():
            fail("lang", "must be a lower-case language code such as 'es'")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            fail("cache_dir", "must be a path string or null")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """From a mapping (e.g. YAML); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train setting(s) {unknown}; valid settings are {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("lora_targets"), list):
            data["lora_targets"] = tuple(data["lora_targets"])
        return cls(**data)

    @property
    def peak_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE[self.strategy]


def resolve_mixed_precision(setting: str, device: Any) -> str:
    """``auto`` -> ``bf16`` on a GPU or CPU with bf16 support, ``fp16`` on other GPUs, else ``no``."""
    if setting != "auto":
        return setting
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        if any(check is not None and check() for check in checks):
            return "bf16"
    return "no"


def check_resume(saved: dict[str, Any], config: TrainConfig, last_dir: Path) -> None:
    now = config_json(config)
    changed = sorted(k for k, v in saved.items() if k not in RESUMABLE_CHANGES and now.get(k, v) != v)
    changed += sorted(k for k in now if k not in saved)
    if changed:
        raise ValueError(f"cannot resume {last_dir}: setting(s) {changed} differ from the interrupted run "
                         f"(only {sorted(RESUMABLE_CHANGES)} may change)")


def config_json(config: TrainConfig) -> dict[str, Any]:
    """The config as JSON-able data (what checkpoints record)."""
    data = dataclasses.asdict(config)
    data["lora_targets"] = list(config.lora_targets)
    return data
