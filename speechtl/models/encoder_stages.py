"""Whisper's encoder as a sequence of *stages*: 0 = the conv stem (with positions), 1..L = the layers,
L+1 = the final layer norm. Training caches the frozen leading stages and runs the rest
(:mod:`speechtl.models.encoder_cache`, :mod:`speechtl.train.strategies`)."""

from __future__ import annotations

from typing import Any


def num_encoder_stages(model: Any) -> int:
    """Stages of ``model``'s encoder: conv stem, each layer, final layer norm."""
    return len(model.model.encoder.layers) + 2


def run_encoder(model: Any, x: Any, start: int = 0, stop: int | None = None) -> Any:
    """Run encoder stages ``[start, stop)`` of a WhisperForConditionalGeneration.

    ``x`` is the input of stage ``start``: log-mel features (batch, mels,
    frames) for stage 0, hidden states (batch, positions, d_model) otherwise;
    a window shorter than 30 s takes the first positions' embeddings.
    Mirrors ``WhisperEncoder.forward`` (layerdrop aside), so the full range
    gives ``last_hidden_state``.
    """
    import torch

    enc = model.model.encoder
    n_layers = len(enc.layers)
    stop = n_layers + 2 if stop is None else stop
    if not 0 <= start <= stop <= n_layers + 2:
        raise ValueError(f"encoder stages [{start}, {stop}) are outside [0, {n_layers + 2})")
    dtype = enc.conv1.weight.dtype
    if not torch.is_autocast_enabled(x.device.type) and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    if start == 0 and stop > 0:
        stride = enc.conv1.stride[0] * enc.conv2.stride[0]
        window = enc.config.max_source_positions * stride
        if not 0 < x.shape[-1] <= window or x.shape[-1] % stride:
            raise ValueError(f"Whisper takes a window of up to {window} feature frames (a multiple of {stride}), "
                             f"got {x.shape[-1]}")
        x = torch.nn.functional.gelu(enc.conv1(x))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[:x.shape[1]]  # a shorter window (models.windows): its first positions
        x = torch.nn.functional.dropout(x, p=enc.dropout, training=enc.training)
    for stage in range(max(start, 1), min(stop, n_layers + 1)):
        x = enc.layers[stage - 1](x, None)
    if start <= n_layers + 1 < stop:
        x = enc.layer_norm(x)
    return x


def frozen_stages(model: Any) -> int:
    """Leading encoder stages of ``model`` in which no parameter requires a gradient."""
    enc = model.model.encoder
    stages = [[enc.conv1, enc.conv2], *[[layer] for layer in enc.layers], [enc.layer_norm]]
    for i, modules in enumerate(stages):
        if any(p.requires_grad for m in modules for p in m.parameters()):
            return i
    return len(stages)
