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
layer norm; :mod:`speechtl.models.encoder_stages`). ``frozen_stages`` counts
the leading stages with nothing to train; that prefix is what can be cached.

The CTC family's strategies (:func:`apply_ctc_strategy`) live here too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from speechtl.models.encoder_stages import frozen_stages, num_encoder_stages
from speechtl.models.wav2vec2 import CTC_STRATEGIES, WHISPER_KIND, CtcASR, encoder_layers
from speechtl.train.config import LORA_TARGETS, STRATEGIES

log = logging.getLogger(__name__)

ADAPTER_NAME = "default"  # peft's adapter name


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


def param_groups(module: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: no decay on biases and norms (1-D tensors)."""
    decay, plain = [], []
    seen: set[int] = set()
    for _, p in module.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            (decay if p.ndim >= 2 else plain).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


# ------------------------------------------------------------------ training data








def apply_ctc_strategy(asr: CtcASR, strategy: str, *, top_k: int = 2) -> dict[str, Any]:
    """Set ``requires_grad`` for ``strategy``; returns counts and the leading encoder stages left frozen.

    ``frozen_stages`` (Whisper kind) is what the encoder cache can hold:
    everything for ``head``, the conv stem and lower layers for ``top-k``, the
    conv stem for ``full``. The HF kind reports 0 (it is not cached).
    """
    if strategy not in CTC_STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of the CTC strategies {CTC_STRATEGIES}")
    model = asr.model
    layers = encoder_layers(asr)
    n_layers = len(layers)
    model.requires_grad_(False)
    model.lm_head.requires_grad_(True)
    frozen = 0
    if strategy == "adapters":
        if asr.kind == WHISPER_KIND or not getattr(model.config, "adapter_attn_dim", None):
            raise ValueError("strategy 'adapters' needs a checkpoint with MMS attention adapters (adapter_attn_dim); "
                             "use head, top-k or full")
        for name, p in model.named_parameters():
            if ".adapter_layer." in name:
                p.requires_grad_(True)
    elif strategy == "top-k":
        if not 1 <= top_k <= n_layers:
            raise ValueError(f"top_k={top_k} must be between 1 and the model's {n_layers} encoder layers")
        for layer in layers[n_layers - top_k:]:
            layer.requires_grad_(True)
    elif strategy == "full":
        model.requires_grad_(True)
    if asr.kind == WHISPER_KIND:
        enc = model.model.encoder
        enc.embed_positions.requires_grad_(False)
        if strategy == "full":
            enc.conv1.requires_grad_(False)
            enc.conv2.requires_grad_(False)
        if strategy in ("top-k", "full"):
            enc.layer_norm.requires_grad_(True)

        frozen = frozen_stages(model)
    else:
        model.freeze_feature_encoder()
        if strategy in ("top-k", "full") and getattr(model.config, "do_stable_layer_norm", False):
            model.base_model.encoder.layer_norm.requires_grad_(True)  # applied after the last layer
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("CTC strategy %s: %d of %d parameters train (%.2f%%)", strategy, trainable, total,
             100 * trainable / total)
    return {"trainable_params": trainable, "total_params": total, "frozen_stages": frozen}
