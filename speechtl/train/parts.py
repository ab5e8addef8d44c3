"""What a model family hands the training loop (:class:`TrainParts`), what the loop reports while it runs
(:class:`TrainEvent`) and what it returns (:class:`TrainResult`), and the pieces both families share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechtl.cache import encoder_cache_dir
from speechtl.models.encoder_cache import cache_whisper_encoder
from speechtl.train.config import TrainConfig


def require_torch() -> Any:
    """torch, or an ImportError that says which extra installs it."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError("training needs torch: pip install 'speechtl[train]'") from exc
    return torch


@dataclass(frozen=True)
class TrainEvent:
    """Progress report passed to ``train(progress=...)`` on every process."""

    kind: str  # "cache" (encoder cache build), "step" (optimizer step), "eval" (dev WER) or "done"
    step: int  # optimizer steps done
    total_steps: int  # optimizer steps planned
    done: int = 0  # "cache": rows built so far
    total: int = 0  # "cache": rows to build
    loss: float | None = None  # "step": mean micro-batch loss on this process
    lr: float | None = None  # "step": learning rate used
    dev_wer: float | None = None  # "eval"/"done": dev WER
    utterance_ids: tuple[str, ...] = ()  # "step": utterances this process trained on in this step


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced and what it cost."""

    best_dir: Path | None  # out_dir/best (None if no evaluation happened)
    best_dev_wer: float | None  # dev WER of best_dir
    baseline_dev_wer: float | None  # dev WER of the untrained model (eval_at_start)
    best_step: int | None  # optimizer step of best_dir
    steps: int  # optimizer steps done
    stop_reason: str  # "max_steps", "epochs", "early_stopping" or "time_budget"
    wall_time_s: float  # seconds in train(), cache build and evaluations included
    train_time_s: float  # seconds spent in training steps (across resumptions)
    train_utterances_per_s: float  # training utterances (all processes) per second of train_time_s
    trainable_params: int  # parameters that were trained
    total_params: int  # all parameters (adapters included)
    strategy: str  # strategy that ran
    cache_build_s: float  # seconds this process spent building encoder cache rows (0 = all hits or no cache)
    cache_stage: int  # encoder stages read from the cache (0 = no cache)
    mixed_precision: str  # precision that ran ("no", "bf16", "fp16")
    num_processes: int  # processes that trained
    weights_sha256: str  # hash of the final in-memory weights of this process (equal on every process)
    history_path: Path  # out_dir/history.jsonl
    route: str = "seq2seq"  # model family that trained: "seq2seq" (Whisper) or "ctc"


@dataclass
class TrainParts:
    """What a model family hands the shared loop (:func:`speechtl.train.seq2seq.whisper_parts`,
    :func:`speechtl.train.ctc.ctc_parts`)."""

    module: Any  # torch module: module(**batch) -> loss (batch without "index")
    param_groups: list[dict[str, Any]]  # AdamW parameter groups (each may carry its own "lr")
    dataset: Any  # items the collator batches
    collator: Callable[[list[Any]], dict[str, Any]]  # -> batch dict with an "index" tensor of dataset positions
    sampler: Any  # LengthBucketSampler: seeded batches of dataset positions
    train_ids: list[str]  # utterance id of each dataset position
    decode_dev: Callable[[list[int]], list[str]]  # dev positions -> hypotheses, with the current weights
    export_best: Callable[[dict[str, Any], dict[str, Any], Path], None]  # (state dict, meta, out dir): write a model
    trainable_params: int
    total_params: int
    cache_stage: int = 0  # encoder stages read from a cache
    cache_build_s: float = 0.0  # seconds spent building cache rows


def cached_rows(acc: Any, asr: Any, train_utts: list[Any], dev_utts: list[Any], stage: int, out_dir: Path,
                config: TrainConfig, precision: str, emit: Callable[[TrainEvent], object]) -> tuple[Any, Any, float]:
    """Cached outputs of Whisper encoder stages ``[0, stage)`` for the train and dev utterances (built where
    missing, shared between processes), and the seconds spent building; ``(None, None, 0.0)`` when stage is 0."""
    if not stage:
        return None, None, 0.0

    rows, stats = cache_whisper_encoder(
        asr, train_utts + dev_utts, stage, encoder_cache_dir(config.cache_dir, out_dir),
        precision=precision, batch_size=config.cache_batch_size, rank=acc.process_index, world=acc.num_processes,
        barrier=acc.wait_for_everyone,
        progress=lambda done, total: emit(TrainEvent("cache", 0, 0, done=done, total=total)))
    return rows.part(0, len(train_utts)), rows.part(len(train_utts), len(rows)), stats.build_s


def weights_sha256(module: Any) -> str:
    """SHA-256 over a module's state dict (names and bytes, in name order)."""
    torch = require_torch()
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
