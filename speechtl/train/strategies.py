"""What trains: the transfer-learning strategies for Whisper, and the module the loop optimizes.

- ``head``: the encoder is frozen; the decoder trains. The whole encoder output
  is cached (see :mod:`speechtl.models.encoder_cache`).
- ``top-k``: the top ``k`` encoder layers, the encoder's final layer norm and
  the decoder train; the output of the frozen prefix (conv stem + lower
  layers) is cached and the top layers run every step.
- ``lora``: peft LoRA adapters on the target linear layers of encoder and
  decoder; the base weights stay frozen. The conv stem is frozen, so its
  output can be cached too. Adapters are merged into plain weights when a
  checkpoint is exported (:func:`merge_lora_state_dict`).
- ``full``: everything trains (except Whisper's fixed sinusoidal encoder
  positions, which transformers never trains either).

The encoder runs in *stages* (0 = conv stem, 1..L = layers, L+1 = final
layer norm). :func:`frozen_stages` counts the leading stages with nothing to
train; that prefix is what can be cached.

Also here, the training data side: seeded length-bucketed batches, the
dataset, label checks and WER text handling.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.audio import load as load_audio
from speechtl.data.manifest import QuarantineRecord, Utterance, validate
from speechtl.models.whisper import LabelTooLong, num_encoder_stages, run_encoder
from speechtl.text.normalize import Normalizer, TextConfig, TextRejected

log = logging.getLogger(__name__)

STRATEGIES = ("head", "top-k", "lora", "full")
# learning rate used when the config leaves it unset (adapters tolerate far larger steps than full weights)
DEFAULT_LEARNING_RATE = {"head": 3e-5, "top-k": 2e-5, "lora": 1e-3, "full": 1e-5, "adapters": 1e-3}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
_ADAPTER = "default"  # peft's adapter name


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError("training needs torch: pip install 'speechtl[train]'") from exc
    return torch


@dataclass(frozen=True)
class StrategySetup:
    """The outcome of :func:`apply_strategy` on a model."""

    strategy: str  # one of STRATEGIES
    trainable_params: int  # parameters that receive gradients (tied weights counted once)
    total_params: int  # all parameters, adapters included (tied weights counted once)
    frozen_stages: int  # leading encoder stages with nothing to train (0 = the conv stem trains)
    groups: dict[str, int]  # trainable parameter count per top-level part, e.g. "decoder", "encoder.layers.5"
    lora_scaling: float | None = None  # alpha / r of the adapters (lora only)
    peft_model: Any = field(default=None, compare=False, repr=False)  # the PeftModel (lora only)


def _count(params: Any) -> int:
    seen: set[int] = set()
    total = 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _group(name: str) -> str:
    parts = name.split(".")
    if parts[:2] == ["model", "encoder"] and len(parts) > 3 and parts[2] == "layers":
        return f"encoder.layers.{parts[3]}"
    if parts[:2] in (["model", "encoder"], ["model", "decoder"]):
        return parts[1]
    return parts[0]


def frozen_stages(model: Any) -> int:
    """Leading encoder stages of ``model`` in which no parameter requires a gradient."""
    enc = model.model.encoder
    stages = [[enc.conv1, enc.conv2], *[[layer] for layer in enc.layers], [enc.layer_norm]]
    for i, modules in enumerate(stages):
        if any(p.requires_grad for m in modules for p in m.parameters()):
            return i
    return len(stages)


def frozen_prefix(strategy: str, num_layers: int, top_k: int) -> int | None:
    """The leading encoder stages ``strategy`` never trains, known before it is applied (None: they depend on
    which modules it adapts). Equals ``apply_strategy(...).frozen_stages`` for ``head`` and ``top-k``."""
    return {"head": num_layers + 2, "top-k": num_layers + 1 - top_k}.get(strategy)


def apply_strategy(model: Any, strategy: str, *, top_k: int = 2, lora_r: int = 32, lora_alpha: float = 64.0,
                   lora_dropout: float = 0.0, lora_targets: tuple[str, ...] = LORA_TARGETS,
                   freeze_embeddings: bool = False) -> StrategySetup:
    """Set ``requires_grad`` on a WhisperForConditionalGeneration for ``strategy`` (LoRA: inject adapters).

    ``freeze_embeddings`` keeps the decoder's token embedding (tied to the
    output projection) and position embedding fixed (head/top-k/full).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}")
    enc, dec = model.model.encoder, model.model.decoder
    n_layers = len(enc.layers)
    model.requires_grad_(False)
    peft_model, scaling = None, None
    if strategy == "full":
        model.requires_grad_(True)
        enc.embed_positions.requires_grad_(False)
    elif strategy in ("head", "top-k"):
        dec.requires_grad_(True)
        if strategy == "top-k":
            if not 1 <= top_k <= n_layers:
                raise ValueError(f"top_k={top_k} must be between 1 and the model's {n_layers} encoder layers")
            for layer in enc.layers[n_layers - top_k:]:
                layer.requires_grad_(True)
            enc.layer_norm.requires_grad_(True)
    else:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise ImportError("the lora strategy needs peft: pip install 'speechtl[train]'") from exc
        lora = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules=list(lora_targets), bias="none")
        try:
            peft_model = get_peft_model(model, lora)
        except ValueError as exc:
            raise ValueError(f"lora_targets={list(lora_targets)}: {exc}") from exc
        scaling = lora_alpha / lora_r
    if freeze_embeddings and strategy != "lora":
        dec.embed_tokens.requires_grad_(False)
        dec.embed_positions.requires_grad_(False)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups: dict[str, int] = {}
    for name, p in trainable:
        groups[_group(name)] = groups.get(_group(name), 0) + p.numel()
    setup = StrategySetup(
        strategy=strategy,
        trainable_params=_count(p for _, p in trainable),
        total_params=_count(model.parameters()),
        frozen_stages=frozen_stages(model),
        groups=groups,
        lora_scaling=scaling,
        peft_model=peft_model,
    )
    log.info("strategy %s: %d of %d parameters train (%.2f%%); %d frozen encoder stages of %d", strategy,
             setup.trainable_params, setup.total_params, 100 * setup.trainable_params / setup.total_params,
             setup.frozen_stages, num_encoder_stages(model))
    return setup


def set_dropout(model: Any, p: float) -> int:
    """Residual dropout ``p`` in Whisper's encoder, decoder and their layers (not attention); returns modules set.

    Whisper checkpoints ship with dropout 0, and the recipes keep it (0.1 made
    dev WER worse for the decoder-only medical run); it is here for corpora
    where fine-tuning overfits. Frozen, cached encoder stages never run during
    training, so it only acts where weights train.
    """
    model.config.dropout = p
    changed = 0
    for module in model.modules():
        name = type(module).__name__
        if name.endswith(("Encoder", "Decoder", "EncoderLayer", "DecoderLayer")) and hasattr(module, "dropout"):
            module.dropout = p
            changed += 1
    return changed


@functools.lru_cache(maxsize=1)
def _module_class() -> type:
    torch = _torch()

    class WhisperTrainModule(torch.nn.Module):
        """Loss of a Whisper model whose encoder input enters at ``start_stage``.

        Stages ``[start_stage, grad_stage)`` are frozen and run without
        autograd; the rest of the encoder and the decoder run with it. The
        output projection only runs at positions that have a label.
        """

        def __init__(self, whisper: Any, start_stage: int, grad_stage: int) -> None:
            super().__init__()
            self.whisper = whisper
            self.start_stage = start_stage
            self.grad_stage = max(grad_stage, start_stage)

        def encoder_output(self, encoder_input: Any) -> Any:
            x = encoder_input
            if self.start_stage < self.grad_stage:
                with torch.no_grad():
                    x = run_encoder(self.whisper, x, self.start_stage, self.grad_stage)
            return run_encoder(self.whisper, x, self.grad_stage, num_encoder_stages(self.whisper))

        def forward(self, encoder_input: Any, decoder_input_ids: Any, labels: Any) -> Any:
            hidden = self.encoder_output(encoder_input)
            out = self.whisper.model.decoder(input_ids=decoder_input_ids, encoder_hidden_states=hidden,
                                             use_cache=False)
            mask = labels != -100
            logits = self.whisper.proj_out(out.last_hidden_state[mask])
            return torch.nn.functional.cross_entropy(logits.float(), labels[mask])

    return WhisperTrainModule


def train_module(whisper: Any, start_stage: int, grad_stage: int) -> Any:
    """The ``torch.nn.Module`` the loop optimizes: ``module(encoder_input, decoder_input_ids, labels) -> loss``."""
    return _module_class()(whisper, start_stage, grad_stage)


def param_groups(module: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: no decay on biases and norms (1-D tensors)."""
    decay, plain = [], []
    seen: set[int] = set()
    for _, p in module.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            (decay if p.ndim >= 2 else plain).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def weights_sha256(module: Any) -> str:
    """SHA-256 over a module's state dict (names and bytes, in name order)."""
    torch = _torch()
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def swap_dir(tmp: Path, final: Path) -> None:
    """Put the finished directory ``tmp`` in place of ``final`` (renames; the old one is removed)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def export_model(state: dict[str, Any], asr: Any, out_dir: Path, *, lora_scaling: float | None,
                 meta: dict[str, Any]) -> None:
    """Write a plain transformers directory from a train-module state dict (LoRA merged) into ``out_dir``.

    ``out_dir`` gets model.safetensors, config, processor, generation config
    and ``speechtl_train.json`` (``meta``); the caller writes to a temporary
    folder and swaps it in (see :func:`swap_dir`).
    """
    from safetensors.torch import save_file

    sd = {k[len("whisper."):]: v for k, v in state.items() if k.startswith("whisper.")}
    if lora_scaling is not None:
        sd = merge_lora_state_dict(sd, lora_scaling)
    if getattr(asr.model.config, "tie_word_embeddings", True):
        sd.pop("proj_out.weight", None)  # tied to the token embedding; transformers re-ties it on load
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    asr.model.config.save_pretrained(out_dir)
    asr.processor.save_pretrained(out_dir)
    asr.generation_config.save_pretrained(out_dir)
    (out_dir / "speechtl_train.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def merge_lora_state_dict(state: dict[str, Any], scaling: float) -> dict[str, Any]:
    """Plain weights from a state dict with peft LoRA layers: ``W = W0 + scaling * B @ A``."""
    torch = _torch()
    out: dict[str, Any] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            prefix, _, leaf = key.partition(".base_layer.")
            if leaf == "weight" and f"{prefix}.lora_A.{_ADAPTER}.weight" in state:
                a = state[f"{prefix}.lora_A.{_ADAPTER}.weight"].float()
                b = state[f"{prefix}.lora_B.{_ADAPTER}.weight"].float()
                value = (value.float() + scaling * (b @ a)).to(value.dtype)
            key = f"{prefix}.{leaf}"
        out[key] = value
    with torch.no_grad():
        return {k: v.detach().clone() for k, v in out.items()}


# ------------------------------------------------------------------ training data


class LengthBucketSampler:
    """Seeded batches of dataset positions, sorted by label length inside windows.

    Each epoch: a permutation drawn from ``(seed, epoch)``, cut into windows
    of ``batch_size * bucket_batches`` items; each window is sorted by length
    and cut into batches; the batch order is then shuffled. Same seed and
    epoch, same batches, on every process and after a resume. The epoch is
    set with :meth:`use_epoch` (deliberately not ``set_epoch``, which
    accelerate calls with its own counter).
    """

    drop_last = False

    def __init__(self, lengths: list[int], batch_size: int, bucket_batches: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.bucket_batches = bucket_batches
        self.seed = seed
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        window = self.batch_size * self.bucket_batches
        out: list[list[int]] = []
        for lo in range(0, len(order), window):
            chunk = order[lo:lo + window]
            if self.bucket_batches > 1:
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            out += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


class TrainSet:
    """Dataset of training examples for :class:`speechtl.models.whisper.WhisperCollator`."""

    def __init__(self, utts: list[Utterance], tokens: list[list[int]], rows: Any, sampler: LengthBucketSampler):
        self.utts, self.tokens, self.rows, self.sampler = utts, tokens, rows, sampler

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        source = self.rows[i] if self.rows is not None else load_audio(self.utts[i].audio_filepath)
        return {"index": i, "input": source, "tokens": self.tokens[i], "epoch": self.sampler.epoch}


def training_items(utts: list[Utterance], asr: Any, *, lang: str, task: str, long_labels: str,
                   where: str) -> tuple[list[Utterance], list[list[int]], list[QuarantineRecord]]:
    """Utterances, their decoder token sequences and the ones skipped for over-long labels."""
    problems = validate(utts)
    if problems or not utts:
        raise ValueError(f"{where}: " + ("; ".join(problems[:5]) if problems else "no utterances"))
    ids, texts = [u.id for u in utts], [u.text for u in utts]
    try:
        return utts, asr.token_sequences(texts, lang, ids=ids, task=task), []
    except LabelTooLong as exc:
        if long_labels != "skip":
            raise ValueError(f"{where}: {exc} (TrainConfig.long_labels='skip' leaves them out)") from exc
        too_long = dict(exc.items)
    kept = [u for u in utts if u.id not in too_long]
    skipped = [QuarantineRecord(id=u.id, field="text", reason="label_too_long",
                                detail=f"{too_long[u.id]} tokens > max_label_tokens={asr.max_label_tokens}",
                                source=u.audio_filepath, text=u.text) for u in utts if u.id in too_long]
    log.warning("%s: %d utterance(s) left out for labels over %d tokens", where, len(skipped), asr.max_label_tokens)
    if not kept:
        raise ValueError(f"{where}: every utterance has a label over max_label_tokens={asr.max_label_tokens}")
    return kept, asr.token_sequences([u.text for u in kept], lang, ids=[u.id for u in kept], task=task), skipped


def references(utts: list[Utterance], normalizer: Callable[[str], str], where: str) -> list[str]:
    """Normalized dev references; a transcript the normalizer rejects is an error naming it."""
    out = []
    for utt in utts:
        try:
            out.append(normalizer(utt.text))
        except TextRejected as exc:
            raise ValueError(f"{where}: id={utt.id}: field 'text' rejected by the normalizer ({exc})") from exc
    return out


@functools.lru_cache(maxsize=8)
def _lenient(config: TextConfig) -> Normalizer:
    return Normalizer(dataclasses.replace(config, check_alphabet=False))


def normalize_hypothesis(normalizer: Callable[[str], str], text: str) -> str:
    """A hypothesis as scored: normalized; nothing speakable -> ""; off-alphabet text is kept (and counts)."""
    try:
        return normalizer(text)
    except TextRejected as exc:
        if exc.reason in ("empty", "non_speech"):
            return ""
        if isinstance(normalizer, Normalizer):
            try:
                return _lenient(normalizer.config)(text)
            except TextRejected:
                pass
        return " ".join(text.lower().split())
