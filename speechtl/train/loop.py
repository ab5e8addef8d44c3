"""Fine-tune with accelerate: one loop for both model families and every strategy, checkpoint and resume.

The loop is family-independent; :func:`speechtl.train.seq2seq.whisper_parts`
(Whisper) and :func:`speechtl.train.ctc.ctc_parts` (a CTC head) hand it a
:class:`~speechtl.train.parts.TrainParts`: the module, batches, dev decoding
and model export.

``train(model_dir, train_manifest, dev_manifest, out_dir, config, normalizer)``
(a :class:`Trainer` whose state lives on ``self``) runs unchanged on one CPU
or under ``accelerate launch`` (multi-GPU, multi-node, DDP/FSDP/DeepSpeed):
processes, devices, mixed precision, gradient accumulation and data sharding
all come from ``Accelerator``.

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
- frozen encoder outputs live in ``cache_dir``, by default the machine's
  shared cache (:func:`speechtl.cache.encoder_cache_dir`,
  :mod:`speechtl.models.encoder_cache`).

Dev evaluation is greedy decoding of the whole dev manifest (shared between
processes), scored by :func:`speechtl.evaluate.scoring.score` with the
caller's normalizer: the very function that scores the report. Training
utterances are batched by label length inside seeded windows, so batches
carry little padding and the order is reproducible.

Several processes: ``accelerate launch --num_processes N ... script.py``. On
CPUs, accelerate 1.15 only starts N processes for ``--cpu`` through mpirun;
``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N``
starts N CPU processes (gloo) through torchrun. Exporting ``best/`` gathers the
full state dict with ``accelerator.get_state_dict``, so FSDP and DeepSpeed
ZeRO-3 runs export whole weights; dev decoding runs on each process's local
model, which under FSDP/ZeRO-3 holds only a shard (use DDP there, or ZeRO-1/2).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechtl import faults
from speechtl.data.manifest import Utterance, read_manifest, validate
from speechtl.evaluate.scoring import normalize_references, score
from speechtl.fsio import atomic_write_text, file_sha256, swap_dir
from speechtl.models.wav2vec2 import architecture
from speechtl.text.normalize import Normalizer
from speechtl.train.config import TrainConfig, check_resume, config_json, resolve_mixed_precision
from speechtl.train.ctc import ctc_parts
from speechtl.train.parts import TrainEvent, TrainParts, TrainResult, require_torch, weights_sha256
from speechtl.train.seq2seq import whisper_parts

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where a run stands; saved in ``last/trainer_state.json`` and restored by a resumed run."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs started
    consumed: int = 0  # micro-batches of the current epoch done
    best_wer: float | None = None  # lowest dev WER so far
    best_step: int | None = None  # step of best_wer
    baseline_wer: float | None = None  # dev WER of the untrained model (eval_at_start)
    bad_evals: int = 0  # evaluations since the last improvement
    train_time_s: float = 0.0  # seconds in training steps
    utterances: int = 0  # training utterances seen (all processes)
    last_eval_step: int | None = None  # step of the last dev evaluation


@dataclass
class _Window:
    """Micro-batches since the last optimizer step."""

    loss: Any = 0.0
    micro: int = 0
    utts: int = 0
    time: float = 0.0
    ids: list[str] = field(default_factory=list)


def dev_wer(utts: list[Utterance], hyps: list[str], normalizer: Normalizer) -> float:
    """WER of ``hyps`` on ``utts``, scored exactly as the report scores (one normalization path)."""
    return score([u.text for u in utts], hyps, normalizer, ids=[u.id for u in utts]).wer


class Trainer:
    """Fine-tunes the model in ``model_dir``; see the module docstring for what lands in ``out_dir``.

    ``config.route`` picks the family: ``seq2seq`` (Whisper), ``ctc``
    (:mod:`speechtl.train.ctc`: a wav2vec2-family checkpoint, or a Whisper
    encoder under a new CTC head) or ``auto`` (the checkpoint's architecture).
    ``progress`` is called with :class:`TrainEvent` on every process. With
    ``resume`` the run continues from ``out_dir/last`` when it exists; without
    it an existing ``out_dir/last`` is an error (nothing is overwritten).
    """

    def __init__(self, model_dir: Path | str, train_manifest: Path | str, dev_manifest: Path | str,
                 out_dir: Path | str, config: TrainConfig, normalizer: Normalizer,
                 progress: Callable[[TrainEvent], object] | None = None, *, resume: bool = False) -> None:
        self.started = time.perf_counter()
        self.model_dir, self.config, self.normalizer = Path(model_dir), config, normalizer
        self.train_manifest, self.dev_manifest = Path(train_manifest), Path(dev_manifest)
        self.out_dir = Path(out_dir)
        self.last_dir, self.best_dir = self.out_dir / "last", self.out_dir / "best"
        self.history_path = self.out_dir / "history.jsonl"
        self.emit = progress or (lambda event: None)
        self.resume = resume
        self.state = TrainerState()
        self.saved = self._setup_saved()

    # ------------------------------------------------------------------ setup

    def _setup_saved(self) -> dict[str, Any] | None:
        """The saved state of an earlier run of ``out_dir`` (None: a fresh run)."""
        state_file = self.last_dir / STATE_FILE
        if state_file.is_file():
            if not self.resume:
                raise FileExistsError(f"{self.last_dir} holds an earlier run: pass resume=True to continue it, or "
                                      "use a new out_dir")
            saved = json.loads(state_file.read_text(encoding="utf-8"))
            check_resume(saved["config"], self.config, self.last_dir)
            _check_digests(self.last_dir, saved.get("files", {}))
            return saved
        if self.resume:
            log.info("resume: nothing saved in %s, starting from scratch", self.last_dir)
        return None

    def _setup_accelerator(self) -> None:
        torch = require_torch()
        try:
            from accelerate import Accelerator, PartialState
            from accelerate.state import AcceleratorState, GradientState
            from accelerate.utils import parse_flag_from_env, set_seed
        except ImportError as exc:
            raise ImportError(f"training needs {exc.name}: pip install 'speechtl[train]'") from exc
        AcceleratorState._reset_state()  # a fresh precision/accumulation setup per call (PartialState is kept)
        GradientState._reset_state()
        # the same CPU flag Accelerator reads, or a multi-process CPU launch would start undistributed
        self.precision = resolve_mixed_precision(self.config.mixed_precision,
                                                 PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device)
        self.acc = acc = Accelerator(mixed_precision=self.precision,
                                     gradient_accumulation_steps=self.config.grad_accum_steps)
        if self.precision == "fp16" and acc.device.type == "cpu":
            raise ValueError("TrainConfig.mixed_precision='fp16' needs a GPU; use 'bf16', 'auto' or 'no' on a CPU")
        self.rank, self.world, self.is_main = acc.process_index, acc.num_processes, acc.is_main_process
        if self.config.num_threads:
            torch.set_num_threads(self.config.num_threads)
        set_seed(self.config.seed)

    def _setup_data(self) -> None:
        self.dev_utts = read_manifest(self.dev_manifest)
        problems = validate(self.dev_utts)
        if problems or not self.dev_utts:
            raise ValueError(f"{self.dev_manifest}: " + ("; ".join(problems[:5]) if problems else "no utterances"))
        # every dev reference must be scorable before any training time is spent
        normalize_references([u.text for u in self.dev_utts], [u.id for u in self.dev_utts], self.normalizer)
        self.route = architecture(self.model_dir) if self.config.route == "auto" else self.config.route

    def _setup_parts(self) -> None:
        build = ctc_parts if self.route == "ctc" else whisper_parts
        self.parts: TrainParts = build(self.acc, self.model_dir, read_manifest(self.train_manifest), self.dev_utts,
                                       self.out_dir, self.config, normalizer=self.normalizer,
                                       precision=self.precision, emit=self.emit, where=str(self.train_manifest))

    def _setup_optimizer(self) -> None:
        torch = require_torch()
        from transformers import get_linear_schedule_with_warmup

        config, parts = self.config, self.parts
        parts.module.train()
        # a private generator: creating an iterator draws a worker seed, which must not move the global RNG
        loader = torch.utils.data.DataLoader(parts.dataset, batch_sampler=parts.sampler, collate_fn=parts.collator,
                                             num_workers=config.dataloader_workers,
                                             generator=torch.Generator().manual_seed(config.seed))
        # fused AdamW: one kernel over all tensors (on a 2-core CPU, ~0.05 s a step instead of ~0.17 s at 58M params)
        optimizer = torch.optim.AdamW(parts.param_groups, lr=config.peak_learning_rate,
                                      fused=self.acc.device.type in ("cpu", "cuda"))
        micro_per_epoch = math.ceil(len(parts.sampler) / self.world)
        self.total_steps = (config.max_steps
                            or config.num_epochs * math.ceil(micro_per_epoch / config.grad_accum_steps))
        # accelerate steps a prepared scheduler once per process per optimizer step: lengths are scaled to match
        scheduler = get_linear_schedule_with_warmup(optimizer, min(config.warmup_steps, self.total_steps) * self.world,
                                                    self.total_steps * self.world)
        self.module, self.optimizer, self.loader, self.scheduler = self.acc.prepare(parts.module, optimizer, loader,
                                                                                    scheduler)
        self.inner = self.acc.unwrap_model(self.module)

    def _restore(self) -> None:
        """Continue a saved run (weights, optimizer, RNG, position), or start a fresh history."""
        if self.saved is None:
            if self.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                self.history_path.unlink(missing_ok=True)
            return
        self.acc.load_state(str(self.last_dir))
        known = {f.name for f in dataclasses.fields(TrainerState)}
        self.state = TrainerState(**{k: v for k, v in self.saved["state"].items() if k in known})
        st = self.state
        log.info("resumed %s at step %d (epoch %d, batch %d)", self.last_dir, st.step, st.epoch, st.consumed)
        if self.is_main and self.history_path.is_file():
            kept = [ln for ln in self.history_path.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= st.step]
            atomic_write_text(self.history_path, "".join(ln + "\n" for ln in kept))

    # ------------------------------------------------------------------ evaluation and checkpoints

    def _record(self, **row: Any) -> None:
        if self.is_main:
            full = {"step": self.state.step, "epoch": self.state.epoch, "loss": None, "lr": None, "dev_wer": None,
                    "elapsed_s": round(time.perf_counter() - self.started, 3), "utterances_per_s": None, **row}
            with self.history_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(full) + "\n")

    def _evaluate(self) -> float:
        torch = require_torch()
        from accelerate.utils import gather_object

        self.inner.eval()
        utts, size = self.dev_utts, self.config.eval_batch_size
        # batches of similar duration (a decoding limit sized to the longest clip of each, for Whisper)
        mine = sorted(range(self.rank, len(utts), self.world), key=lambda i: utts[i].duration or 0.0)
        hyps: list[str] = []
        with torch.no_grad(), self.acc.autocast():
            for lo in range(0, len(mine), size):
                hyps += self.parts.decode_dev(mine[lo:lo + size])
        self.inner.train()
        pairs = dict(gather_object(list(zip(mine, hyps, strict=True))))
        return dev_wer(utts, [pairs[i] for i in range(len(utts))], self.normalizer)

    def _save_best(self, wer: float | None) -> None:
        state_dict = self.acc.get_state_dict(self.module)  # collective under FSDP/DeepSpeed
        if self.is_main:
            meta = {"config": config_json(self.config), "step": self.state.step, "dev_wer": wer,
                    "strategy": self.config.strategy, "base_model": str(self.model_dir), "route": self.route}
            tmp = self.best_dir.with_name(f".{self.best_dir.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.parts.export_best(state_dict, meta, tmp)
            swap_dir(tmp, self.best_dir)
        self.acc.wait_for_everyone()

    def _save_last(self) -> None:
        acc, tmp = self.acc, self.out_dir / ".last.tmp"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if self.is_main:
            files = {f.name: file_sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
            payload = {"config": config_json(self.config), "state": dataclasses.asdict(self.state), "files": files}
            atomic_write_text(tmp / STATE_FILE, json.dumps(payload, indent=2))
            swap_dir(tmp, self.last_dir)
        acc.wait_for_everyone()

    def _run_eval(self) -> bool:
        """Evaluate, keep the best; True when early stopping says stop."""
        st = self.state
        wer = self._evaluate()
        st.last_eval_step = st.step
        if st.best_wer is None or wer < st.best_wer:
            st.best_wer, st.best_step, st.bad_evals = wer, st.step, 0
            self._save_best(wer)
        else:
            st.bad_evals += 1
        log.info("step %d: dev WER %.4f (best %.4f at step %s)", st.step, wer, st.best_wer, st.best_step)
        self._record(dev_wer=wer)
        self.emit(TrainEvent("eval", st.step, self.total_steps, dev_wer=wer))
        patience = self.config.early_stopping_patience
        return patience is not None and st.bad_evals >= patience

    # ------------------------------------------------------------------ the loop

    def _micro_step(self, batch: dict[str, Any], window: _Window) -> float:
        """Forward and backward one micro-batch (an optimizer step when accumulation is complete); the lr used."""
        acc, config = self.acc, self.config
        index = batch.pop("index").tolist()
        with acc.accumulate(self.module):
            loss = self.module(**batch)
            acc.backward(loss)
            if acc.sync_gradients and config.max_grad_norm is not None:
                acc.clip_grad_norm_(self.module.parameters(), config.max_grad_norm)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.state.consumed += 1
        window.loss += loss.detach()
        window.micro += 1
        window.utts += len(index) * self.world
        window.ids += [self.parts.train_ids[i] for i in index]
        return lr

    def _finish_step(self, window: _Window, lr: float) -> None:
        """Book an optimizer step: counters, progress event and (every log_every_steps) a history row."""
        torch, st = require_torch(), self.state
        mean_loss = float(window.loss) / window.micro  # one device sync per optimizer step
        st.step += 1
        st.train_time_s += window.time
        st.utterances += window.utts
        self.emit(TrainEvent("step", st.step, self.total_steps, loss=mean_loss, lr=lr,
                             utterance_ids=tuple(window.ids)))
        if self.last_dir.is_dir():
            faults.point("training")  # weights past the last checkpoint
        if st.step % self.config.log_every_steps == 0 or st.step == self.total_steps:
            shared = float(self.acc.reduce(torch.tensor(mean_loss, device=self.acc.device), "mean"))
            rate = window.utts / max(window.time, 1e-9)
            self._record(loss=shared, lr=lr, utterances_per_s=round(rate, 3))
            if self.is_main:  # progress between evaluations: the ETA counts training steps, not dev decoding
                per_step = st.train_time_s / st.step  # both carry over a resume
                eta = per_step * (self.total_steps - st.step)
                log.info("step %d/%d: loss %.4f, lr %.2e, %.2f utterances/s, ETA %d min %02d s (training only)",
                         st.step, self.total_steps, shared, lr, rate, eta // 60, eta % 60)

    def _stop_reason(self, loop_started: float) -> str | None:
        """Why training stops after this step (evaluating when it is due), or None to go on."""
        config, st = self.config, self.state
        if config.eval_every_steps and st.step % config.eval_every_steps == 0 and self._run_eval():
            return "early_stopping"
        if config.max_train_time_s is not None:
            torch = require_torch()
            over = torch.tensor(float(time.perf_counter() - loop_started > config.max_train_time_s),
                                device=self.acc.device)
            if float(self.acc.reduce(over, "sum")) > 0:
                return "time_budget"
        if st.step >= self.total_steps:
            return "max_steps" if config.max_steps else "epochs"
        return None

    def _loop(self) -> str:
        st, config = self.state, self.config
        save_every = config.save_every_steps or config.eval_every_steps  # 0: only at the end
        loop_started = tick = time.perf_counter()  # tick: end of the last timed stretch (data loading is timed)
        window = _Window()
        while st.step < self.total_steps:
            self.parts.sampler.use_epoch(st.epoch)
            batches = self.acc.skip_first_batches(self.loader, st.consumed) if st.consumed else self.loader
            for batch in batches:
                lr = self._micro_step(batch, window)
                if not self.acc.sync_gradients:
                    continue
                window.time += time.perf_counter() - tick
                self._finish_step(window, lr)
                window = _Window()
                reason = self._stop_reason(loop_started)
                if reason is not None:
                    return reason
                if save_every and st.step % save_every == 0:
                    self._save_last()
                tick = time.perf_counter()  # evaluation and checkpoint time is not training time
            st.epoch += 1
            st.consumed = 0
        return "max_steps" if config.max_steps else "epochs"

    def run(self) -> TrainResult:
        """Set up, train until a stop condition, evaluate the last step, save; what the run produced."""
        self._setup_accelerator()
        self._setup_data()
        self._setup_parts()
        self._setup_optimizer()
        self._restore()
        st = self.state
        if self.saved is None and self.config.eval_at_start:
            self._run_eval()
            st.baseline_wer = st.best_wer
        stop_reason = self._loop()
        if not self.config.eval_every_steps:  # no dev evaluation: the last step is the checkpoint
            self._save_best(None)
            st.best_step = st.step
        elif st.last_eval_step != st.step and stop_reason != "early_stopping":
            self._run_eval()
        self._save_last()
        self.emit(TrainEvent("done", st.step, self.total_steps, dev_wer=st.best_wer))
        result = self._result(stop_reason)
        log.info("training done: %s after %d steps, best dev WER %s, %.2f utterances/s", result.stop_reason,
                 result.steps, result.best_dev_wer, result.train_utterances_per_s)
        return result

    def _result(self, stop_reason: str) -> TrainResult:
        st, parts = self.state, self.parts
        return TrainResult(
            best_dir=self.best_dir if self.best_dir.is_dir() else None, best_dev_wer=st.best_wer,
            baseline_dev_wer=st.baseline_wer, best_step=st.best_step, steps=st.step, stop_reason=stop_reason,
            wall_time_s=time.perf_counter() - self.started, train_time_s=st.train_time_s,
            train_utterances_per_s=st.utterances / max(st.train_time_s, 1e-9),
            trainable_params=parts.trainable_params, total_params=parts.total_params, strategy=self.config.strategy,
            cache_build_s=parts.cache_build_s, cache_stage=parts.cache_stage, mixed_precision=self.precision,
            num_processes=self.world, route=self.route, weights_sha256=weights_sha256(self.inner),
            history_path=self.history_path)


def _check_digests(last_dir: Path, files: dict[str, str]) -> None:
    """Refuse to resume from a checkpoint whose files do not match the digests saved with them."""
    for name, digest in files.items():
        path = last_dir / name
        if not path.is_file():
            raise ValueError(f"cannot resume {last_dir}: {name} is missing; remove {last_dir} to train afresh")
        if file_sha256(path) != digest:
            raise ValueError(f"cannot resume {last_dir}: {name} does not match the digest saved with it (corrupt); "
                             f"remove {last_dir} to train afresh")


def train(model_dir: Path | str, train_manifest: Path | str, dev_manifest: Path | str, out_dir: Path | str,
          config: TrainConfig, normalizer: Normalizer, progress: Callable[[TrainEvent], object] | None = None, *,
          resume: bool = False) -> TrainResult:
    """Fine-tune the model in ``model_dir`` (see :class:`Trainer`); ``normalizer`` scores the dev WER."""
    return Trainer(model_dir, train_manifest, dev_manifest, out_dir, config, normalizer, progress,
                   resume=resume).run()
