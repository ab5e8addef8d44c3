"""Whisper (seq2seq) for the training loop: labels, the loss module over cached encoder stages, dev decoding,
and the exported checkpoint."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechtl.audio import load as load_audio
from speechtl.data.manifest import QuarantineRecord, Utterance, validate, write_jsonl
from speechtl.models.collate import WhisperCollator, no_speech_aware_loss
from speechtl.models.encoder_stages import num_encoder_stages, run_encoder
from speechtl.models.specaugment import SpecAugmentConfig
from speechtl.models.whisper import LabelTooLong, WhisperASR, token_budget
from speechtl.models.windows import window_seconds
from speechtl.train.batches import LengthBucketSampler, TrainSet
from speechtl.train.config import TrainConfig
from speechtl.train.lora import merge_lora_state_dict
from speechtl.train.parts import TrainEvent, TrainParts, cached_rows, require_torch
from speechtl.train.strategies import apply_strategy, param_groups, set_dropout

log = logging.getLogger(__name__)


def whisper_parts(acc: Any, model_dir: Path, train_utts: list[Any], dev_utts: list[Any], out_dir: Path,
                  config: TrainConfig, *, normalizer: Callable[[str], str], precision: str,
                  emit: Callable[[TrainEvent], object], where: str) -> TrainParts:
    """Whisper (seq2seq): model, strategy, encoder cache, batches and dev decoding for the loop."""
    import torch

    asr = WhisperASR.load(model_dir, device=acc.device, max_label_tokens=config.max_label_tokens)
    asr.window_step_s = config.window_step_s
    try:
        prefix = asr.prefix_tokens(config.lang, config.task)
    except ValueError as exc:
        raise ValueError(f"TrainConfig.lang={config.lang!r}: {exc}") from exc
    train_utts, tokens, skipped = training_items(train_utts, asr, lang=config.lang, task=config.task,
                                                 long_labels=config.long_labels, where=where,
                                                 timestamp_share=config.timestamp_share, seed=config.seed,
                                                 prompt=config.prompt, prompt_share=config.prompt_share)
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
    sampler = LengthBucketSampler([len(t) for t in tokens], config.batch_size, config.bucket_batches, config.seed,
                                  groups=[window_seconds(u.duration, asr.window_step_s) for u in train_utts])
    spec = (SpecAugmentConfig(config.spec_time_masks, config.spec_time_mask_frames, config.spec_freq_masks,
                              config.spec_freq_mask_bins, config.seed) if config.spec_augment else None)

    def decode_window(chunk: list[int]) -> list[str]:  # clips of one encoder window
        frames = asr.window_frames([dev_utts[i].duration for i in chunk])
        if dev_rows is not None:
            x = torch.from_numpy(dev_rows.rows(chunk)[:, :frames // 2]).to(torch.float32)
        else:
            x = asr.features([load_audio(dev_utts[i].audio_filepath) for i in chunk],
                             ids=[dev_utts[i].id for i in chunk])
        hidden = module.encoder_output(x.to(acc.device))
        budget = token_budget(max(dev_utts[i].duration or 0.0 for i in chunk) or None, config.eval_max_new_tokens)
        return asr.transcribe_encoded(hidden, config.lang, task=config.task, batch_size=len(chunk),
                                      max_new_tokens=budget)

    def decode_dev(chunk: list[int]) -> list[str]:
        out = [""] * len(chunk)
        for group in asr.batches([dev_utts[i].duration for i in chunk], len(chunk)):
            for j, text in zip(group, decode_window([chunk[j] for j in group]), strict=True):
                out[j] = text
        return out

    def export_best(state_dict: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
        export_model(state_dict, asr, out, lora_scaling=setup.lora_scaling, meta=meta)

    return TrainParts(
        module=module, param_groups=param_groups(module, config.weight_decay),
        dataset=TrainSet(train_utts, tokens, rows, sampler),
        collator=WhisperCollator(asr, num_prefix=len(prefix), from_audio=rows is None, spec=spec), sampler=sampler,
        train_ids=[u.id for u in train_utts], decode_dev=decode_dev, export_best=export_best,
        trainable_params=setup.trainable_params, total_params=setup.total_params, cache_stage=cache_stage,
        cache_build_s=cache_s)


@functools.lru_cache(maxsize=1)
def _module_class() -> type:
    torch = require_torch()

    class WhisperTrainModule(torch.nn.Module):
        """Loss of a Whisper model whose encoder input enters at ``start_stage``.

        Stages ``[start_stage, grad_stage)`` are frozen and run without
        autograd; the rest of the encoder and the decoder run with it, on the
        first ``encoder_frames`` positions when that is given (the clips'
        window: see ``TrainConfig.window_step_s``). The output
        projection only runs at positions that have a label.
        """

        def __init__(self, whisper: Any, start_stage: int, grad_stage: int) -> None:
            super().__init__()
            self.whisper = whisper
            self.start_stage = start_stage
            self.grad_stage = max(grad_stage, start_stage)

        def encoder_output(self, encoder_input: Any, frames: int | None = None) -> Any:
            x = encoder_input
            if self.start_stage < self.grad_stage:
                with torch.no_grad():
                    x = run_encoder(self.whisper, x, self.start_stage, self.grad_stage)
            start = self.grad_stage
            if frames is not None:
                if start == 0:  # a trainable conv stem still needs the whole window
                    x, start = run_encoder(self.whisper, x, 0, 1), 1
                x = x[:, :frames]
            return run_encoder(self.whisper, x, start, num_encoder_stages(self.whisper))

        def forward(self, encoder_input: Any, decoder_input_ids: Any, labels: Any,
                    encoder_frames: int | None = None) -> Any:
            hidden = self.encoder_output(encoder_input, encoder_frames)
            out = self.whisper.model.decoder(input_ids=decoder_input_ids, encoder_hidden_states=hidden,
                                             use_cache=False)
            mask = labels != -100
            logits = self.whisper.proj_out(out.last_hidden_state[mask])
            return no_speech_aware_loss(logits, labels[mask])

    return WhisperTrainModule


def train_module(whisper: Any, start_stage: int, grad_stage: int) -> Any:
    """The ``torch.nn.Module`` the loop optimizes: ``module(encoder_input, decoder_input_ids, labels) -> loss``."""
    return _module_class()(whisper, start_stage, grad_stage)


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


def training_items(utts: list[Utterance], asr: Any, *, lang: str, task: str, long_labels: str, where: str,
                   timestamp_share: float = 0.0, seed: int = 0, prompt: str = "", prompt_share: float = 0.0,
                   ) -> tuple[list[Utterance], list[list[int]], list[QuarantineRecord]]:
    """Utterances, their decoder token sequences and the ones skipped for over-long labels.

    A seeded ``timestamp_share`` of them (chosen by id, so the choice does not move when others are added)
    get timestamped targets spanning the clip: prepared clips are trimmed to their speech, so the speech
    starts at 0 and ends at the clip's duration. Another seeded ``prompt_share`` (clips without speech
    included) is conditioned on ``prompt`` as Whisper's previous-text prompt, where it fits the decoder."""
    problems = validate(utts)
    if problems or not utts:
        raise ValueError(f"{where}: " + ("; ".join(problems[:5]) if problems else "no utterances"))
    prompt_ids = asr.prompt_tokens(prompt) if prompt.strip() and prompt_share > 0 else []

    def sequences(items: list[Utterance]) -> list[list[int]]:
        spans = [(0.0, u.duration) if u.duration and drawn(u.id, timestamp_share, seed) else None
                 for u in items]
        seqs = asr.token_sequences([u.text for u in items], lang, ids=[u.id for u in items], task=task,
                                   empty_ok=_nonspeech(items), spans=spans)
        room = asr.model.config.max_target_positions - len(prompt_ids)
        return [prompt_ids + seq if prompt_ids and len(seq) <= room and drawn(u.id, prompt_share, seed, "prompt")
                else seq for u, seq in zip(items, seqs, strict=True)]

    try:
        return utts, sequences(utts), []
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
    return kept, sequences(kept), skipped


def drawn(utt_id: str, share: float, seed: int, salt: str = "") -> bool:
    """Whether utterance ``utt_id`` is drawn (e.g. for a timestamped target): a seeded hash of the id under ``share``
    (another ``salt``, e.g. "prompt", draws another, independent choice)."""
    digest = hashlib.sha256(f"{seed}\0{salt}{utt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2 ** 64


def _nonspeech(utts: list[Utterance]) -> list[bool]:
    """Which utterances are clips without speech (speechtl.data.nonspeech): their target is empty."""
    return [bool(u.extra.get("nonspeech")) for u in utts]
