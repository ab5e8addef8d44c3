"""LoRA adapters folded back into plain weights, so an exported checkpoint needs no peft."""

from __future__ import annotations

from typing import Any

from speechtl.train.parts import require_torch
from speechtl.train.strategies import ADAPTER_NAME


def merge_lora_state_dict(state: dict[str, Any], scaling: float) -> dict[str, Any]:
    """Plain weights from a state dict with peft LoRA layers: ``W = W0 + scaling * B @ A``."""
    torch = require_torch()
    out: dict[str, Any] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            prefix, _, leaf = key.partition(".base_layer.")
            if leaf == "weight" and f"{prefix}.lora_A.{ADAPTER_NAME}.weight" in state:
                a = state[f"{prefix}.lora_A.{ADAPTER_NAME}.weight"].float()
                b = state[f"{prefix}.lora_B.{ADAPTER_NAME}.weight"].float()
                value = (value.float() + scaling * (b @ a)).to(value.dtype)
            key = f"{prefix}.{leaf}"
        out[key] = value
    with torch.no_grad():
        return {k: v.detach().clone() for k, v in out.items()}
