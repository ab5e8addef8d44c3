"""Training batches for Whisper: decoder labels from token sequences (:func:`collate_tokens`), the loss that
reads the no-speech label (:func:`no_speech_aware_loss`) and the collator that turns dataset examples into
batches (:class:`WhisperCollator`). The model itself is :class:`speechtl.models.whisper.WhisperASR`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from speechtl.models.specaugment import SpecAugmentConfig, hidden_spec_augment, spec_augment
from speechtl.models.windows import window_positions

NO_SPEECH = -2  # last "token" of a clip without speech in token_sequences; a label: no word is likely (uniform)


def collate_tokens(seqs: Sequence[Sequence[int]], num_prefix: int | Sequence[int], pad_id: int, *,
                   no_speech_id: int | None = None, starts: Sequence[int] | None = None) -> tuple[Any, Any]:
    """``(labels, decoder_input_ids)`` from full sequences ``prefix + text + eot`` (or, for a clip without
    speech, ``prefix + [NO_SPEECH]``), each possibly after a prompt (``<|startofprev|>`` and its text).

    ``decoder_input_ids`` is each sequence without its last token, padded with
    ``pad_id``; ``labels`` is the sequence shifted left, with the prompt, the forced prefix
    positions and the padding set to -100. ``num_prefix`` is the prefix length
    of every row, or one per row (a timestamped target has no
    ``<|notimestamps|>``, so its prefix is a token shorter); ``starts`` is where each row's
    ``<|startoftranscript|>`` stands (its prompt's length; default 0: no prompt). The prompt
    conditions the row but is never a target, as in Whisper's training. With ``no_speech_id`` (a model whose
    no-speech rule is on) the token after ``<|startoftranscript|>`` is trained
    too: the language for speech, the no-speech token for a clip without any,
    whose label after the prefix is NO_SPEECH (the loss reads it as a uniform
    target); so the no-speech probability the rule reads learns both sides.
    """
    import torch

    width = max(len(s) for s in seqs) - 1
    dec = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    first = 0 if no_speech_id is None else 1
    prefixes = [num_prefix] * len(seqs) if isinstance(num_prefix, int) else list(num_prefix)
    starts = [0] * len(seqs) if starts is None else list(starts)
    if not len(prefixes) == len(starts) == len(seqs):
        raise ValueError(f"{len(prefixes)} prefix lengths and {len(starts)} starts for {len(seqs)} sequences")
    for i, (seq, prefix, start) in enumerate(zip(seqs, prefixes, starts, strict=True)):
        n = len(seq) - 1
        dec[i, :n] = torch.as_tensor(seq[:-1])
        lab[i, :n] = torch.as_tensor(seq[1:])
        lab[i, :start] = -100
        lab[i, start + first:start + prefix - 1] = -100
        if seq[-1] == NO_SPEECH:
            if no_speech_id is None:
                raise ValueError(f"row {i}: a no-speech target needs the model's no-speech token")
            lab[i, start] = no_speech_id
    return lab, dec


def no_speech_aware_loss(logits: Any, labels: Any) -> Any:
    """Mean loss of ``logits`` (n, vocab) against ``labels`` (n,): cross-entropy, except where the label is
    NO_SPEECH, whose target is the uniform distribution (no token is likely); there the loss is KL(uniform ||
    model), zero when every token is as likely, so the logged loss stays comparable to cross-entropy."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    unsure = labels == NO_SPEECH
    picked = logp.gather(1, labels.clamp(min=0)[:, None])[:, 0]
    uniform = logp.mean(dim=-1) + math.log(logp.shape[-1])  # minus KL(uniform || model)
    return -torch.where(unsure, uniform, picked).mean()


class WhisperCollator:
    """Training batches from examples ``{"index", "input", "tokens", "epoch"}``.

    ``input`` is 16 kHz audio when ``from_audio`` (log-mel features are computed
    here, SpecAugment applied when configured) or a cached encoder row
    otherwise (SpecAugment then masks the row: :func:`hidden_spec_augment`).
    Returns ``encoder_input``, ``decoder_input_ids``, ``labels`` and ``index``
    (the dataset positions, for bookkeeping). When the model encodes clips in
    windows sized to them (``asr.window_step_s``: :mod:`speechtl.models.windows`)
    it adds ``encoder_frames``: the positions of the batch's window, which
    every clip of the batch shares (the sampler groups clips by window; a
    cached row is zero after its window).
    """

    def __init__(self, asr: Any, *, num_prefix: int, from_audio: bool,
                 spec: SpecAugmentConfig | None = None) -> None:
        self.asr = asr
        self.num_prefix = num_prefix
        self.from_audio = from_audio
        self.spec = spec

    def start(self, tokens: Sequence[int]) -> int:
        """Where ``<|startoftranscript|>`` stands in one sequence: after its prompt, if it has one."""
        return 0 if not tokens or tokens[0] == self.asr.sot_id else list(tokens).index(self.asr.sot_id)

    def prefix_length(self, tokens: Sequence[int]) -> int:
        """The forced prefix of one target, from ``<|startoftranscript|>``: ``num_prefix``, or one less for a
        timestamped target (whose prefix lacks ``<|notimestamps|>``; its first timestamp is learned)."""
        tokens = tokens[self.start(tokens):]
        timestamped = len(tokens) >= self.num_prefix and tokens[self.num_prefix - 1] != self.asr.no_timestamps_id
        return self.num_prefix - 1 if timestamped else self.num_prefix

    def encoder_frames(self, seconds: list[float | None]) -> int:
        """Encoder positions of the window every clip of ``seconds`` is encoded in; an error when they differ."""
        positions = {window_positions(s, self.asr.window_step_s, self.asr.model.config.max_source_positions)
                     for s in seconds}
        if len(positions) != 1:
            raise ValueError(f"a training batch mixes encoder windows ({sorted(positions)} positions): clips of "
                             f"{seconds} s; batches must be grouped by window")
        return positions.pop()

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        index = torch.as_tensor([e["index"] for e in examples], dtype=torch.long)
        if self.from_audio:
            enc = self.asr.features([e["input"] for e in examples])
            if self.spec is not None:
                frames = [math.ceil(len(e["input"]) / self.asr.feature_extractor.hop_length) for e in examples]
                enc = spec_augment(enc, frames, self.spec, [(e["epoch"], e["index"]) for e in examples])
        else:
            enc = torch.from_numpy(np.stack([np.asarray(e["input"]) for e in examples])).to(torch.float32)
            if self.spec is not None:
                enc = hidden_spec_augment(enc, [e.get("seconds") for e in examples], self.spec,
                                          [(e["epoch"], e["index"]) for e in examples],
                                          n_mels=self.asr.feature_extractor.feature_size)
        tokens = [e["tokens"] for e in examples]
        labels, dec = collate_tokens(tokens, [self.prefix_length(t) for t in tokens], self.asr.eot_id,
                                     no_speech_id=self.asr.no_speech_id if self.asr.no_speech_gate else None,
                                     starts=[self.start(t) for t in tokens])
        batch = {"encoder_input": enc, "decoder_input_ids": dec, "labels": labels, "index": index}
        if self.asr.window_step_s is not None:
            batch["encoder_frames"] = self.encoder_frames([e.get("seconds") for e in examples])
        return batch
