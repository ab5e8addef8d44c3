"""What makes :class:`speechtl.models.whisper.WhisperASR`'s decoding faster without changing a transcript: the
decoder cache it decodes with beams through, and logits for the last decoder position only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def beam_cache(model: Any = None, hidden: Any = None, num_beams: int = 1) -> Any:
    """A decoder cache for beam search: the cross-attention keys and values computed once per clip, and only
    the self-attention ones reordered.

    transformers computes every decoder layer's cross-attention keys and values on the encoder output repeated
    for each beam, and reorders them after every step. A clip's beams share its encoder rows and never move
    to another clip, so here they are computed on the clip's rows (``hidden``, for ``model``'s decoder) and
    repeated, and left in place: the same transcripts, 1.56x faster for whisper-base with beams of 2 on CPU
    (bench/decode.py). Without ``model`` the cross-attention part fills itself as transformers' does."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    class BeamCache(EncoderDecoderCache):
        def reorder_cache(self, beam_idx: Any) -> None:
            self.self_attention_cache.reorder_cache(beam_idx)

    cache = BeamCache(DynamicCache(), DynamicCache())
    if model is None:
        return cache
    with torch.no_grad():
        for i, layer in enumerate(model.model.decoder.layers):
            attn = layer.encoder_attn
            shape = (hidden.shape[0], -1, attn.num_heads, attn.head_dim)
            keys, values = (proj(hidden).view(shape).transpose(1, 2).repeat_interleave(num_beams, dim=0)
                            for proj in (attn.k_proj, attn.v_proj))
            cache.cross_attention_cache.update(keys.contiguous(), values.contiguous(), i)
            cache.is_updated[i] = True
    return cache


@contextlib.contextmanager
def last_position_logits(model: Any) -> Iterator[None]:
    """Within the block, ``model.proj_out`` projects only the last decoder position of a sequence.

    Generation reads the logits of the last position only, but Whisper's forward projects every position onto
    the vocabulary: with a prompt of the full 224 tokens, the first step of a batch of 8 clips with beams of 2
    makes 16 x 224 rows of 51,865 logits where 16 are read. Inputs that are not (batch, positions, width) pass
    through untouched."""

    def keep_last(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        hidden = args[0]
        return (hidden[:, -1:], *args[1:]) if hidden.dim() == 3 and hidden.shape[1] > 1 else None

    handle = model.proj_out.register_forward_pre_hook(keep_last)
    try:
        yield
    finally:
        handle.remove()
