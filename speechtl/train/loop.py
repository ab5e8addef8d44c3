"""Fine-tune with accelerate: one loop for both model families and every strategy, checkpoint and resume.

The loop is family-independent; :func:`whisper_parts` (seq2seq) and
:func:`speechtl.train.ctc.ctc_parts` (a CTC head) hand it a
:class:`TrainParts`: the module, batches, dev decoding and model export.

``train(model_dir, train_manifest, dev_manifest, out_dir, config, normalizer)``
runs unchanged on one CPU or under ``accelerate launch`` (multi-GPU,
multi-node, DDP/FSDP/DeepSpeed): processes, devices, mixed precision,
gradient accumulation and data sharding all come from ``Accelerator``.

Per run, in ``out_dir``:

- ``best/`` - the model with the lowest dev WER so far: a plain transformers
  Whisper directory (model, processor, generation config; LoRA merged) plus
  ``speechtl_train.json`` (config, step, dev WER), or a CTC model directory
  (see :mod:`speechtl.models.wav2vec2`);
- ``last/`` - ``accelerator.save_state`` plus ``trainer_state.json`` (step,
  epoch position, best WER, elapsed time); ``train(..., resume=True)``
  continues from it and ends where an uninterrupted run would have;
- ``history.jsonl`` - step, loss, learning rate, dev WER, elapsed seconds,
  training utterances/s;
- ``encoder_cache/`` - frozen encoder outputs (unless ``cache_dir`` says
  elsewhere), see :mod:`speechtl.models.encoder_cache`.

Dev evaluation is greedy decoding of the whole dev manifest (shared between
processes), scored with jiwer on text passed through the caller's
normalizer. Training utterances are batched by label length inside seeded
windows, so batches carry little padding and the order is reproducible.

Several processes: ``accelerate launch --num_processes N ... script.py``. On
CPUs, accelerate 1.15 only starts N processes for ``--cpu`` through mpirun;
``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N``
starts N CPU processes (gloo) through torchrun. Exporting ``best/`` gathers the
full state dict with ``accelerator.get_state_dict``, so FSDP and DeepSpeed
ZeRO-3 runs export whole weights; dev decoding runs on each process's local
model, which under FSDP/ZeRO-3 holds only a shard (use DDP there, or ZeRO-1/2).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechtl.audio import load as load_audio
from speechtl.data.manifest import atomic_write_text, read_manifest, validate, write_jsonl
from speechtl.train.config import TrainConfig, check_resume, config_json, resolve_mixed_precision

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
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
    """What a model family hands the shared loop (see :func:`whisper_parts`, :func:`speechtl.train.ctc.ctc_parts`)."""

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


def train(model_dir: Path | str, train_manifest: Path | str, dev_manifest: Path | str, out_dir: Path | str,
          config: TrainConfig, normalizer: Callable[[str], str],
          progress: Callable[[TrainEvent], object] | None = None, *, resume: bool = False) -> TrainResult:
    """Fine-tune the model in ``model_dir``; see the module docstring for what lands in ``out_dir``.

    ``config.route`` picks the family: ``seq2seq`` (Whisper), ``ctc``
    (:mod:`speechtl.train.ctc`: a wav2vec2-family checkpoint, or a Whisper
    encoder under a new CTC head) or ``auto`` (the checkpoint's architecture).
    ``normalizer`` is applied to dev references and hypotheses before WER.
    ``progress`` is called with :class:`TrainEvent` on every process. With
    ``resume`` the run continues from ``out_dir/last`` when it exists; without
    it an existing ``out_dir/last`` is an error (nothing is overwritten).
    """
    try:
        import torch
        from accelerate import Accelerator, PartialState
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import gather_object, parse_flag_from_env, set_seed
        from transformers import get_linear_schedule_with_warmup
    except ImportError as exc:
        raise ImportError(f"training needs {exc.name}: pip install 'speechtl[train]'") from exc
    from speechtl.models.wav2vec2 import architecture
    from speechtl.train.strategies import normalize_hypothesis, references, swap_dir, weights_sha256

    started = time.perf_counter()
    out_dir, emit = Path(out_dir), (progress or (lambda event: None))
    last_dir, best_dir, history_path = out_dir / "last", out_dir / "best", out_dir / "history.jsonl"
    saved: dict[str, Any] | None = None
    if (last_dir / STATE_FILE).is_file():
        if not resume:
            raise FileExistsError(f"{last_dir} holds an earlier run: pass resume=True to continue it, or use a new "
                                  "out_dir")
        saved = json.loads((last_dir / STATE_FILE).read_text(encoding="utf-8"))
        check_resume(saved["config"], config, last_dir)
    elif resume:
        log.info("resume: nothing saved in %s, starting from scratch", last_dir)

    AcceleratorState._reset_state()  # a fresh precision/accumulation setup per call (PartialState is kept)
    GradientState._reset_state()
    # the same CPU flag Accelerator reads, or a multi-process CPU launch would start undistributed
    precision = resolve_mixed_precision(config.mixed_precision,
                                        PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device)
    acc = Accelerator(mixed_precision=precision, gradient_accumulation_steps=config.grad_accum_steps)
    if precision == "fp16" and acc.device.type == "cpu":
        raise ValueError("TrainConfig.mixed_precision='fp16' needs a GPU; use 'bf16', 'auto' or 'no' on a CPU")
    rank, world, is_main = acc.process_index, acc.num_processes, acc.is_main_process
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed)

    dev_utts = read_manifest(dev_manifest)
    problems = validate(dev_utts)
    if problems or not dev_utts:
        raise ValueError(f"{dev_manifest}: " + ("; ".join(problems[:5]) if problems else "no utterances"))
    refs = references(dev_utts, normalizer, str(dev_manifest))
    route = architecture(model_dir) if config.route == "auto" else config.route
    if route == "ctc":
        from speechtl.train.ctc import ctc_parts as build
    else:
        build = whisper_parts
    parts = build(acc, Path(model_dir), read_manifest(train_manifest), dev_utts, out_dir, config,
                  normalizer=normalizer, precision=precision, emit=emit, where=str(train_manifest))
    module = parts.module
    module.train()
    # a private generator: creating an iterator draws a worker seed, which must not move the global RNG
    loader = torch.utils.data.DataLoader(parts.dataset, batch_sampler=parts.sampler, collate_fn=parts.collator,
                                         num_workers=config.dataloader_workers,
                                         generator=torch.Generator().manual_seed(config.seed))
    # fused AdamW: one kernel over all tensors (on a 2-core CPU, ~0.05 s a step instead of ~0.17 s at 58M params)
    optimizer = torch.optim.AdamW(parts.param_groups, lr=config.peak_learning_rate,
                                  fused=acc.device.type in ("cpu", "cuda"))
    sampler = parts.sampler
    micro_per_epoch = math.ceil(len(sampler) / world)
    total_steps = config.max_steps or config.num_epochs * math.ceil(micro_per_epoch / config.grad_accum_steps)
    # accelerate steps a prepared scheduler once per process per optimizer step: lengths are scaled to match
    scheduler = get_linear_schedule_with_warmup(optimizer, min(config.warmup_steps, total_steps) * world,
                                                total_steps * world)
    module, optimizer, loader, scheduler = acc.prepare(module, optimizer, loader, scheduler)
    inner = acc.unwrap_model(module)

    st: dict[str, Any] = {"step": 0, "epoch": 0, "consumed": 0, "best_wer": None, "best_step": None,
                          "baseline_wer": None, "bad_evals": 0, "train_time_s": 0.0, "utterances": 0,
                          "last_eval_step": None}
    if saved is not None:
        acc.load_state(str(last_dir))
        st.update(saved["state"])
        log.info("resumed %s at step %d (epoch %d, batch %d)", last_dir, st["step"], st["epoch"], st["consumed"])
        if is_main and history_path.is_file():
            kept = [ln for ln in history_path.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= st["step"]]
            atomic_write_text(history_path, "".join(ln + "\n" for ln in kept))
    elif is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        history_path.unlink(missing_ok=True)

    def record(**row: Any) -> None:
        if is_main:
            full = {"step": st["step"], "epoch": st["epoch"], "loss": None, "lr": None, "dev_wer": None,
                    "elapsed_s": round(time.perf_counter() - started, 3), "utterances_per_s": None, **row}
            with history_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(full) + "\n")

    def evaluate() -> float:
        inner.eval()
        # batches of similar duration (a decoding limit sized to the longest clip of each, for Whisper)
        mine = sorted(range(rank, len(dev_utts), world), key=lambda i: dev_utts[i].duration or 0.0)
        hyps: list[str] = []
        with torch.no_grad(), acc.autocast():
            for lo in range(0, len(mine), config.eval_batch_size):
                hyps += parts.decode_dev(mine[lo:lo + config.eval_batch_size])
        inner.train()
        pairs = dict(gather_object(list(zip(mine, hyps, strict=True))))
        import jiwer

        return float(jiwer.wer(refs, [normalize_hypothesis(normalizer, pairs[i]) for i in range(len(dev_utts))]))

    def save_best(wer: float) -> None:
        state_dict = acc.get_state_dict(module)  # collective under FSDP/DeepSpeed
        if is_main:
            meta = {"config": config_json(config), "step": st["step"], "dev_wer": wer, "strategy": config.strategy,
                    "base_model": str(model_dir), "route": route}
            tmp = best_dir.with_name(f".{best_dir.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            parts.export_best(state_dict, meta, tmp)
            swap_dir(tmp, best_dir)
        acc.wait_for_everyone()

    def save_last() -> None:
        tmp = out_dir / ".last.tmp"
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if is_main:
            atomic_write_text(tmp / STATE_FILE, json.dumps({"config": config_json(config), "state": st}, indent=2))
            swap_dir(tmp, last_dir)
        acc.wait_for_everyone()

    def run_eval() -> bool:
        """Evaluate, keep the best; True when early stopping says stop."""
        wer = evaluate()
        st["last_eval_step"] = st["step"]
        improved = st["best_wer"] is None or wer < st["best_wer"]
        if improved:
            st.update(best_wer=wer, best_step=st["step"], bad_evals=0)
            save_best(wer)
        else:
            st["bad_evals"] += 1
        log.info("step %d: dev WER %.4f (best %.4f at step %s)", st["step"], wer, st["best_wer"], st["best_step"])
        record(dev_wer=wer)
        emit(TrainEvent("eval", st["step"], total_steps, dev_wer=wer))
        patience = config.early_stopping_patience
        return patience is not None and st["bad_evals"] >= patience

    if saved is None and config.eval_at_start:
        run_eval()
        st["baseline_wer"] = st["best_wer"]
    save_every = config.save_every_steps or config.eval_every_steps
    loop_started = tick = time.perf_counter()  # tick: end of the last timed stretch (data loading is timed)
    window: dict[str, Any] = {"loss": 0.0, "micro": 0, "utts": 0, "time": 0.0, "ids": []}
    stop_reason: str | None = None
    while stop_reason is None:
        if st["step"] >= total_steps:
            stop_reason = "max_steps" if config.max_steps else "epochs"
            break
        sampler.use_epoch(st["epoch"])
        batches = acc.skip_first_batches(loader, st["consumed"]) if st["consumed"] else loader
        for batch in batches:
            index = batch.pop("index").tolist()
            with acc.accumulate(module):
                loss = module(**batch)
                acc.backward(loss)
                if acc.sync_gradients and config.max_grad_norm is not None:
                    acc.clip_grad_norm_(module.parameters(), config.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            st["consumed"] += 1
            window["loss"] += loss.detach()
            window["micro"] += 1
            window["utts"] += len(index) * world
            window["ids"] += [parts.train_ids[i] for i in index]
            if not acc.sync_gradients:
                continue
            mean_loss = float(window["loss"]) / window["micro"]  # one device sync per optimizer step
            now = time.perf_counter()
            window["time"] += now - tick
            st["step"] += 1
            st["train_time_s"] += window["time"]
            st["utterances"] += window["utts"]
            emit(TrainEvent("step", st["step"], total_steps, loss=mean_loss, lr=lr,
                            utterance_ids=tuple(window["ids"])))
            if st["step"] % config.log_every_steps == 0 or st["step"] == total_steps:
                shared = float(acc.reduce(torch.tensor(mean_loss, device=acc.device), "mean"))
                record(loss=shared, lr=lr, utterances_per_s=round(window["utts"] / max(window["time"], 1e-9), 3))
            window = {"loss": 0.0, "micro": 0, "utts": 0, "time": 0.0, "ids": []}
            if st["step"] % config.eval_every_steps == 0 and run_eval():
                stop_reason = "early_stopping"
            elif config.max_train_time_s is not None:
                over = torch.tensor(float(time.perf_counter() - loop_started > config.max_train_time_s),
                                    device=acc.device)
                if float(acc.reduce(over, "sum")) > 0:
                    stop_reason = "time_budget"
            if st["step"] >= total_steps and stop_reason is None:
                stop_reason = "max_steps" if config.max_steps else "epochs"
            if stop_reason is None and st["step"] % save_every == 0:
                save_last()
            if stop_reason is not None:
                break
            tick = time.perf_counter()  # evaluation and checkpoint time is not training time
        else:
            st["epoch"] += 1
            st["consumed"] = 0

    if st["last_eval_step"] != st["step"] and stop_reason != "early_stopping":
        run_eval()
    save_last()
    wer = st["best_wer"]
    emit(TrainEvent("done", st["step"], total_steps, dev_wer=wer))
    result = TrainResult(
        best_dir=best_dir if best_dir.is_dir() else None, best_dev_wer=wer, baseline_dev_wer=st["baseline_wer"],
        best_step=st["best_step"], steps=st["step"], stop_reason=stop_reason or "max_steps",
        wall_time_s=time.perf_counter() - started, train_time_s=st["train_time_s"],
        train_utterances_per_s=st["utterances"] / max(st["train_time_s"], 1e-9),
        trainable_params=parts.trainable_params, total_params=parts.total_params, strategy=config.strategy,
        cache_build_s=parts.cache_build_s, cache_stage=parts.cache_stage, mixed_precision=precision,
        num_processes=world, route=route,
        weights_sha256=weights_sha256(inner), history_path=history_path)
    log.info("training done: %s after %d steps, best dev WER %s, %.2f utterances/s", result.stop_reason,
             result.steps, wer, result.train_utterances_per_s)
    return result


def cached_rows(acc: Any, asr: Any, train_utts: list[Any], dev_utts: list[Any], stage: int, out_dir: Path,
                config: TrainConfig, precision: str, emit: Callable[[TrainEvent], object]) -> tuple[Any, Any, float]:
    """Cached outputs of Whisper encoder stages ``[0, stage)`` for the train and dev utterances (built where
    missing, shared between processes), and the seconds spent building; ``(None, None, 0.0)`` when stage is 0."""
    if not stage:
        return None, None, 0.0
    from speechtl.models.encoder_cache import cache_whisper_encoder

    rows, stats = cache_whisper_encoder(
        asr, train_utts + dev_utts, stage, Path(config.cache_dir or out_dir / "encoder_cache"),
        precision=precision, batch_size=config.cache_batch_size, rank=acc.process_index, world=acc.num_processes,
        barrier=acc.wait_for_everyone,
        progress=lambda done, total: emit(TrainEvent("cache", 0, 0, done=done, total=total)))
    return rows.part(0, len(train_utts)), rows.part(len(train_utts), len(rows)), stats.build_s


def whisper_parts(acc: Any, model_dir: Path, train_utts: list[Any], dev_utts: list[Any], out_dir: Path,
                  config: TrainConfig, *, normalizer: Callable[[str], str], precision: str,
                  emit: Callable[[TrainEvent], object], where: str) -> TrainParts:
    """Whisper (seq2seq): model, strategy, encoder cache, batches and dev decoding for the loop."""
    import torch

    from speechtl.models.whisper import SpecAugmentConfig, WhisperASR, WhisperCollator, token_budget
    from speechtl.train.strategies import (
        LengthBucketSampler,
        TrainSet,
        apply_strategy,
        export_model,
        param_groups,
        set_dropout,
        train_module,
        training_items,
    )

    asr = WhisperASR.load(model_dir, device=acc.device, max_label_tokens=config.max_label_tokens)
    try:
        prefix = asr.prefix_tokens(config.lang, config.task)
    except ValueError as exc:
        raise ValueError(f"TrainConfig.lang={config.lang!r}: {exc}") from exc
    train_utts, tokens, skipped = training_items(train_utts, asr, lang=config.lang, task=config.task,
                                                 long_labels=config.long_labels, where=where)
    if skipped and acc.is_main_process:
        write_jsonl(out_dir / "skipped.jsonl", skipped)
    if config.dropout is not None:
        set_dropout(asr.model, config.dropout)
    setup = apply_strategy(asr.model, config.strategy, top_k=config.top_k, lora_r=config.lora_r,
                           lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                           lora_targets=config.lora_targets, freeze_embeddings=config.freeze_embeddings)
    cache_stage = setup.frozen_stages if config.cache_encoder else 0
    rows, dev_rows, cache_s = cached_rows(acc, asr, train_utts, dev_utts, cache_stage, out_dir, config,
                                          precision, emit)

    module = train_module(asr.model, cache_stage, setup.frozen_stages)
    sampler = LengthBucketSampler([len(t) for t in tokens], config.batch_size, config.bucket_batches, config.seed)
    spec = (SpecAugmentConfig(config.spec_time_masks, config.spec_time_mask_frames, config.spec_freq_masks,
                              config.spec_freq_mask_bins, config.seed) if config.spec_augment else None)

    def decode_dev(chunk: list[int]) -> list[str]:
        if dev_rows is not None:
            x = torch.from_numpy(dev_rows.rows(chunk)).to(torch.float32)
        else:
            x = asr.features([load_audio(dev_utts[i].audio_filepath) for i in chunk],
                             ids=[dev_utts[i].id for i in chunk])
        hidden = module.encoder_output(x.to(acc.device))
        budget = token_budget(max(dev_utts[i].duration or 0.0 for i in chunk) or None, config.eval_max_new_tokens)
        return asr.transcribe_encoded(hidden, config.lang, task=config.task, batch_size=len(chunk),
                                      max_new_tokens=budget)

    def export_best(state_dict: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
        export_model(state_dict, asr, out, lora_scaling=setup.lora_scaling, meta=meta)

    return TrainParts(
        module=module, param_groups=param_groups(module, config.weight_decay),
        dataset=TrainSet(train_utts, tokens, rows, sampler),
        collator=WhisperCollator(asr, num_prefix=len(prefix), from_audio=rows is None, spec=spec), sampler=sampler,
        train_ids=[u.id for u in train_utts], decode_dev=decode_dev, export_best=export_best,
        trainable_params=setup.trainable_params, total_params=setup.total_params, cache_stage=cache_stage,
        cache_build_s=cache_s)
