"""The CTC family for the training loop of :mod:`speechtl.train.loop`: vocabulary, model, strategy, batches.

:func:`ctc_parts` builds what :func:`speechtl.train.loop.train` needs for a
``route: ctc`` run:

- the character vocabulary from the *train* manifest only, its transcripts
  passed through the run's normalizer with accents kept (the head spells
  á, é, ñ ...; scoring may still strip accents), written to
  ``out_dir/vocab.json`` with a report of characters outside the alphabet;
- the model (:class:`speechtl.models.wav2vec2.CtcASR`) with a fresh head and
  the strategy applied; for the Whisper-encoder kind the frozen encoder prefix
  is read from the encoder cache, as in Whisper fine-tuning;
- batches of similar duration (wav2vec2 family) or label length (Whisper
  encoder, whose input is always 30 s), and a dev decoder (greedy).

The new output layer trains at ``head_learning_rate`` (default 1e-3), the
pretrained layers at ``learning_rate``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.audio import load as load_audio
from speechtl.data.manifest import Utterance, validate
from speechtl.evaluate.scoring import normalize_references
from speechtl.models.ctc.batches import pad_labels
from speechtl.models.ctc.vocab import PAD, CtcVocab, build_vocab
from speechtl.models.encoder_stages import num_encoder_stages, run_encoder
from speechtl.models.wav2vec2 import (
    DEFAULT_HEAD_LEARNING_RATE,
    WHISPER_KIND,
    CtcASR,
    whisper_frames,
)
from speechtl.text.normalize import Normalizer
from speechtl.train.batches import LengthBucketSampler
from speechtl.train.config import TrainConfig
from speechtl.train.parts import TrainEvent, TrainParts, cached_rows, require_torch
from speechtl.train.strategies import apply_ctc_strategy, param_groups

log = logging.getLogger(__name__)


def label_normalizer(normalizer: Callable[[str], str]) -> Callable[[str], str]:
    """The run's normalizer with accents kept (labels spell what scoring may fold away)."""
    if isinstance(normalizer, Normalizer) and normalizer.config.strip_accents:
        return Normalizer(dataclasses.replace(normalizer.config, strip_accents=False))
    return normalizer


def label_texts(utts: list[Utterance], normalizer: Normalizer, where: str) -> list[str]:
    """Normalized transcripts, checked as every reference is (:func:`speechtl.evaluate.scoring.normalize_references`);
    one left empty is an error naming it."""
    texts = normalize_references([u.text for u in utts], [u.id for u in utts], normalizer)
    for utt, text in zip(utts, texts):
        if not text.strip():
            raise ValueError(f"{where}: id={utt.id}: field 'text' is empty after normalization")
    return texts


def run_vocab(train_utts: list[Utterance], texts: list[str], lang: str, out_dir: Path, is_main: bool) -> CtcVocab:
    """Build the vocabulary from the train transcripts; report (never drop) characters outside the alphabet."""
    vocab = build_vocab(zip([u.id for u in train_utts], texts), lang)
    if vocab.outside_alphabet:
        log.warning("CTC vocabulary: %d character(s) outside the %s alphabet kept as symbols: %s",
                    len(vocab.outside_alphabet), lang,
                    ", ".join(f"{ch!r} (e.g. {ids[0]})" for ch, ids in vocab.outside_alphabet.items()))
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        vocab.save(out_dir / "vocab.json")
    log.info("CTC vocabulary: %d symbols from %d train utterances", len(vocab.symbols), len(train_utts))
    return vocab


class _Items:
    """Dataset of ``{"index", "input", "labels"}``: a cached encoder row or the utterance's audio."""

    def __init__(self, utts: list[Utterance], labels: list[list[int]], rows: Any) -> None:
        self.utts, self.labels, self.rows = utts, labels, rows

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        source = self.rows[i] if self.rows is not None else load_audio(self.utts[i].audio_filepath)
        return {"index": i, "input": source, "labels": self.labels[i]}


def ctc_parts(acc: Any, model_dir: Path, train_utts: list[Utterance], dev_utts: list[Utterance], out_dir: Path,
              config: TrainConfig, *, normalizer: Callable[[str], str], precision: str,
              emit: Callable[[TrainEvent], object], where: str) -> TrainParts:
    """A CTC head over the train vocabulary on ``model_dir`` (wav2vec2 family or Whisper encoder)."""
    import torch

    problems = validate(train_utts)
    if problems or not train_utts:
        raise ValueError(f"{where}: " + ("; ".join(problems[:5]) if problems else "no utterances"))
    if config.strategy == "lora":
        raise ValueError("TrainConfig.strategy='lora' is a Whisper strategy; the CTC route has head, top-k, full "
                         "and adapters")
    texts = label_texts(train_utts, label_normalizer(normalizer), where)
    vocab = run_vocab(train_utts, texts, config.lang, out_dir, acc.is_main_process)
    asr = CtcASR.load(model_dir, lang=config.lang, vocab=vocab, device=acc.device, seed=config.seed)
    setup = apply_ctc_strategy(asr, config.strategy, top_k=config.top_k)
    whisper = asr.kind == WHISPER_KIND

    cache_stage = setup["frozen_stages"] if whisper and config.cache_encoder else 0
    rows, dev_rows, cache_s = cached_rows(acc, asr, train_utts, dev_utts, cache_stage, out_dir, config,
                                          precision, emit)
    module = ctc_train_module(asr, cache_stage, setup["frozen_stages"] if whisper else 0)
    labels = [vocab.encode(t) for t in texts]
    # Whisper kind: CTC reads the encoder frames that cover each utterance's audio
    num_frames = [whisper_frames(round((u.duration or 30.0) * 16000)) for u in train_utts]
    # similar lengths together: label length for the fixed 30 s Whisper input, duration otherwise
    lengths = [len(ids) for ids in labels] if whisper else [round(1000 * (u.duration or 0.0)) for u in train_utts]
    sampler = LengthBucketSampler(lengths, config.batch_size, config.bucket_batches, config.seed)

    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        index = torch.as_tensor([e["index"] for e in items], dtype=torch.long)
        batch_labels = pad_labels([e["labels"] for e in items])
        if not whisper:
            batch = asr.features([e["input"] for e in items])
            return {**batch, "labels": batch_labels, "index": index}
        if rows is None:
            x = asr.features([e["input"] for e in items])
        else:
            x = torch.from_numpy(np.stack([np.asarray(e["input"]) for e in items])).to(torch.float32)
        frames = [whisper_frames(len(e["input"])) if rows is None else num_frames[e["index"]] for e in items]
        return {"encoder_input": x, "num_frames": torch.as_tensor(frames, dtype=torch.long), "labels": batch_labels,
                "index": index}

    def decode_dev(chunk: list[int]) -> list[str]:
        if not whisper:
            return asr.transcribe([load_audio(dev_utts[i].audio_filepath) for i in chunk], config.lang,
                                  batch_size=len(chunk))

        if dev_rows is not None:
            x = torch.from_numpy(dev_rows.rows(chunk)).to(device=acc.device, dtype=torch.float32)
        else:
            x = asr.features([load_audio(dev_utts[i].audio_filepath) for i in chunk])
        hidden = run_encoder(asr.model, x, cache_stage, num_encoder_stages(asr.model))
        return asr.transcribe_encoded(hidden, config.lang, durations_s=[dev_utts[i].duration for i in chunk])

    def export_best(state_dict: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
        state = {k[len("net."):]: v for k, v in state_dict.items() if k.startswith("net.")}
        asr.save(out, lang=config.lang, state_dict=state, meta=meta)

    head = {id(p) for p in asr.model.lm_head.parameters()}
    groups = []
    for group in param_groups(module, config.weight_decay):
        body = [p for p in group["params"] if id(p) not in head]
        new = [p for p in group["params"] if id(p) in head]
        if body:
            groups.append({**group, "params": body})
        if new:
            groups.append({**group, "params": new, "lr": config.head_learning_rate or DEFAULT_HEAD_LEARNING_RATE})
    return TrainParts(
        module=module, param_groups=groups, dataset=_Items(train_utts, labels, rows), collator=collate,
        sampler=sampler, train_ids=[u.id for u in train_utts], decode_dev=decode_dev, export_best=export_best,
        trainable_params=setup["trainable_params"], total_params=setup["total_params"], cache_stage=cache_stage,
        cache_build_s=cache_s)


@functools.lru_cache(maxsize=1)
def _module_class() -> type:
    torch = require_torch()

    class CtcTrainModule(torch.nn.Module):
        """CTC loss of a :class:`CtcASR` model; Whisper kind: encoder input enters at ``start_stage``."""

        def __init__(self, asr: CtcASR, start_stage: int, grad_stage: int) -> None:
            super().__init__()
            self.net = asr.model
            self.kind = asr.kind
            self.blank = asr.vocab.symbols.index(PAD)
            self.start_stage, self.grad_stage = start_stage, max(grad_stage, start_stage)

        def forward(self, labels: Any, encoder_input: Any = None, num_frames: Any = None, input_values: Any = None,
                    attention_mask: Any = None) -> Any:
            if self.kind != WHISPER_KIND:
                return self.net(input_values, attention_mask=attention_mask, labels=labels).loss

            x = encoder_input
            if self.start_stage < self.grad_stage:
                with torch.no_grad():
                    x = run_encoder(self.net, x, self.start_stage, self.grad_stage)
            x = run_encoder(self.net, x, self.grad_stage, num_encoder_stages(self.net))
            log_probs = torch.log_softmax(self.net.lm_head(x).float(), dim=-1)
            mask = labels != -100
            targets = labels[mask]
            input_lengths = num_frames.to(x.device)
            return torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, input_lengths, mask.sum(-1),
                                                blank=self.blank, reduction="mean", zero_infinity=True)

    return CtcTrainModule


def ctc_train_module(asr: CtcASR, start_stage: int = 0, grad_stage: int = 0) -> Any:
    """The module the loop optimizes: ``module(labels=..., encoder_input=..., num_frames=...)`` (Whisper kind) or
    ``module(labels=..., input_values=..., attention_mask=...)`` (HF kind) -> mean CTC loss."""
    return _module_class()(asr, start_stage, grad_stage)
