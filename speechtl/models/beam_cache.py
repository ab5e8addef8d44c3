"""The decoder cache :class:`speechtl.models.whisper.WhisperASR` decodes with beams through."""

from __future__ import annotations

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
