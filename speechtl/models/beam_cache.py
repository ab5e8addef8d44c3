"""What makes :class:`speechtl.models.whisper.WhisperASR`'s decoding faster without changing a transcript: the
decoder cache it decodes with beams through, attention over one row of encoder keys and values per clip, and
logits for the last decoder position only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

_CLIP_ROWS = "speechtl_clip_rows"  # registered as _CLIP_ROWS + "_" + the attention it falls back to


def beam_cache(model: Any, hidden: Any, start: Sequence[int] = (), num_beams: int = 1) -> Any:
    """A decoder cache for beam search: one row of cross-attention keys and values per clip, the decoder's
    states for ``start`` (the tokens generation starts from, but the last) computed once per clip and repeated
    for its ``num_beams`` beams, and only the self-attention states reordered. Decode with it inside
    :func:`clip_rows_attention`, from ``start`` plus its last token: generation then runs that one token.

    transformers computes every decoder layer's cross-attention keys and values on the encoder output repeated
    for each beam, reorders them after every step and attends each beam to its own copy; it also runs the
    start tokens (a prompt: up to 224) once per beam. A clip's beams share its encoder rows, never move to
    another clip, and start from the same tokens, so here those are computed once per clip (``hidden``, for
    ``model``'s decoder): the same transcripts, faster for whisper-base with beams of 2 on CPU
    (bench/decode.py)."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    class BeamCache(EncoderDecoderCache):
        def reorder_cache(self, beam_idx: Any) -> None:
            self.self_attention_cache.reorder_cache(beam_idx)

    cache = BeamCache(DynamicCache(), DynamicCache())
    with torch.no_grad():
        for i, layer in enumerate(model.model.decoder.layers):
            attn = layer.encoder_attn
            shape = (hidden.shape[0], -1, attn.num_heads, attn.head_dim)
            keys, values = (proj(hidden).view(shape).transpose(1, 2).contiguous()
                            for proj in (attn.k_proj, attn.v_proj))
            cache.cross_attention_cache.update(keys, values, i)
            cache.is_updated[i] = True
        if len(start) > 0:
            ids = torch.tensor([list(start)] * hidden.shape[0], device=hidden.device)
            model.model.decoder(input_ids=ids, encoder_hidden_states=hidden, cache=cache, use_cache=True)
            for layer in cache.self_attention_cache.layers:
                layer.keys = layer.keys.repeat_interleave(num_beams, dim=0)
                layer.values = layer.values.repeat_interleave(num_beams, dim=0)
    return cache


def _attention_over_clip_rows(fallback: Callable[..., Any]) -> Callable[..., Any]:
    """An attention function that reads keys and values of one row per clip for queries of ``beams`` rows per
    clip (the clip's beams, next to each other); batches whose rows match go to ``fallback``.

    Cross-attention has no mask and no order among queries, so a clip's beams are attended as extra query
    positions of the clip: (clips x beams, heads, positions, width) -> (clips, heads, beams x positions,
    width), then back."""
    import torch

    def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
                  dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
        if key.shape[0] == query.shape[0]:
            return fallback(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        clips, heads, _, width = key.shape
        beams, positions = query.shape[0] // clips, query.shape[2]
        if attention_mask is not None or query.shape[0] != clips * beams:
            raise ValueError(f"attention over clip rows: {query.shape[0]} query rows for {clips} clips"
                             + (" with a mask" if attention_mask is not None else ""))
        grouped = query.reshape(clips, beams, heads, positions, width).transpose(1, 2)
        out = torch.nn.functional.scaled_dot_product_attention(
            grouped.reshape(clips, heads, beams * positions, width), key, value, scale=scaling)
        out = out.reshape(clips, heads, beams, positions, width).permute(0, 2, 3, 1, 4)
        return out.reshape(clips * beams, positions, heads, width), None

    return attention


@contextlib.contextmanager
def clip_rows_attention(model: Any) -> Iterator[None]:
    """Within the block, ``model``'s attention layers take keys and values of one row per clip for the clip's
    beams (what :func:`beam_cache` holds); every other call runs the model's own attention."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.whisper.modeling_whisper import eager_attention_forward

    own = model.config._attn_implementation
    name = f"{_CLIP_ROWS}_{own}"
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _attention_over_clip_rows(
            ALL_ATTENTION_FUNCTIONS.get_interface(own, eager_attention_forward)))
    model.config._attn_implementation = name
    try:
        yield
    finally:
        model.config._attn_implementation = own


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
