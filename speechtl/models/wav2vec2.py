"""CTC models: a wav2vec2-family encoder or the Whisper encoder under a new character head.

Two kinds share one interface (:class:`CtcASR`):

* ``hf``: any transformers ``*ForCTC`` checkpoint of the wav2vec2 family
  (wav2vec2, XLS-R, MMS, HuBERT, WavLM, data2vec-audio, UniSpeech, SEW).
  The feature encoder (the CNN over the waveform) stays frozen; the output
  layer is replaced by a fresh one sized to the run's vocabulary unless the
  checkpoint already speaks it. Batches are raw waveforms, normalized and
  padded, with an attention mask where the checkpoint was trained with one.
* ``whisper-encoder``: the encoder of a Whisper checkpoint plus a linear CTC
  head. Whisper's encoder always sees 30 s of log-mel features (1,500 output
  frames at 50 Hz); the head reads only the frames that cover the audio
  (:func:`whisper_frames`), so CTC aligns the transcript with speech rather
  than with the padding. The encoder stages run through
  :func:`speechtl.models.encoder_stages.run_encoder`, so the frozen prefix can be
  cached exactly as for Whisper fine-tuning.

Strategies (``CTC_STRATEGIES``): ``head`` trains the output layer only;
``top-k`` also the top ``k`` transformer layers; ``full`` everything but the
feature encoder (Whisper: but the conv stem); ``adapters`` the MMS-style
attention adapters of checkpoints that have them (``adapter_attn_dim``) plus
the head.

A trained model is saved as a directory with ``speechtl_ctc.json`` (kind,
language), ``vocab.json`` and the weights; :meth:`CtcASR.load` reads it back.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.fsio import atomic_write_text
from speechtl.models.ctc.batches import CtcCollator
from speechtl.models.ctc.decode import greedy_decode
from speechtl.models.ctc.vocab import PAD, CtcVocab, load_vocab
from speechtl.models.encoder_stages import run_encoder

log = logging.getLogger(__name__)

# transformers model types whose *ForCTC classes this module drives
CTC_MODEL_TYPES = frozenset({"wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech",
                             "unispeech-sat", "sew", "sew-d"})
CTC_STRATEGIES = ("head", "top-k", "full", "adapters")
META_FILE = "speechtl_ctc.json"
WHISPER_KIND, HF_KIND = "whisper-encoder", "hf"
DEFAULT_HEAD_LEARNING_RATE = 1e-3  # a fresh output layer tolerates far larger steps than pretrained weights


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError("CTC models need torch: pip install 'speechtl[train]'") from exc
    return torch


def architecture(model_dir: Path | str) -> str:
    """``"seq2seq"`` (Whisper) or ``"ctc"`` for a model directory, from its config; other models are an error."""
    model_dir = Path(model_dir)
    if (model_dir / META_FILE).is_file():
        return "ctc"
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{model_dir}: field 'config.json' unreadable ({exc})") from exc
    model_type = config.get("model_type")
    if model_type == "whisper":
        return "seq2seq"
    if model_type in CTC_MODEL_TYPES:
        return "ctc"
    raise ValueError(f"{model_dir}: config.json field 'model_type' is {model_type!r}; speechtl adapts whisper "
                     f"(seq2seq) and the CTC family {sorted(CTC_MODEL_TYPES)}")


@functools.lru_cache(maxsize=1)
def _whisper_ctc_class() -> type:
    torch = _torch()
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    class WhisperEncoderCtc(torch.nn.Module):
        """Whisper encoder + linear CTC head; ``.model.encoder`` mirrors WhisperForConditionalGeneration, so
        :func:`run_encoder` and the encoder cache work on it unchanged."""

        def __init__(self, config: Any, vocab_size: int) -> None:
            super().__init__()
            self.config = config
            self.model = torch.nn.Module()
            self.model.encoder = WhisperEncoder(config)
            self.lm_head = torch.nn.Linear(config.d_model, vocab_size)

    return WhisperEncoderCtc


def whisper_frames(num_samples: int, max_frames: int = 1500) -> int:
    """Whisper encoder frames covering ``num_samples`` of 16 kHz audio (10 ms mel hop, conv stride 2), plus one."""
    return max(1, min(max_frames, -(-int(num_samples) // 320) + 1))


def _new_head(in_features: int, vocab_size: int, seed: int) -> Any:
    torch = _torch()
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(in_features, vocab_size)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=generator)
        head.bias.zero_()
    return head


class CtcASR:
    """A CTC model, its vocabulary and feature extraction, on one device; decodes greedily or with ``decoder``."""

    takes_durations = True  # CachedEncoderTranscriber passes utterance durations to transcribe_encoded

    def __init__(self, model: Any, vocab: CtcVocab, kind: str, feature_extractor: Any, *,
                 return_attention_mask: bool = True) -> None:
        self.model, self.vocab, self.kind = model, vocab, kind
        self.feature_extractor = feature_extractor
        self.return_attention_mask = return_attention_mask
        self.decoder: Any = None  # a speechtl.models.ctc.decode.BeamDecoder; None = greedy
        self.collator = CtcCollator(normalize=getattr(feature_extractor, "do_normalize", True))

    # ---------------------------------------------------------------- loading and saving

    @classmethod
    def load(cls, model_dir: Path | str, *, lang: str, vocab: CtcVocab | None = None, device: Any = "cpu",
             seed: int = 0) -> CtcASR:
        """A saved speechtl CTC model, or a pretrained checkpoint with a head for ``vocab``.

        Without ``vocab`` a pretrained wav2vec2-family checkpoint keeps its own
        head and ``vocab.json`` (the unadapted baseline); a Whisper checkpoint
        always needs one, as it has no CTC head.
        """
        model_dir = Path(model_dir)
        meta_path = model_dir / META_FILE
        if meta_path.is_file():  # a speechtl CTC model: its head is kept when the vocabulary is the same
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            own = load_vocab(model_dir / "vocab.json", meta.get("lang", lang))
            same = vocab is None or vocab.symbols == own.symbols
            return cls._load(model_dir, own if same else vocab, meta["kind"], device, seed, keep_head=same)
        kind = WHISPER_KIND if architecture(model_dir) == "seq2seq" else HF_KIND
        if vocab is None:
            if kind == WHISPER_KIND:
                raise ValueError(f"{model_dir}: a Whisper checkpoint has no CTC head; pass the run's vocabulary")
            if not (model_dir / "vocab.json").is_file():
                raise ValueError(f"{model_dir}: field 'vocab.json' missing: the checkpoint has no CTC vocabulary of "
                                 "its own, so a new head needs the run's vocabulary")
            return cls._load(model_dir, load_vocab(model_dir / "vocab.json", lang), kind, device, seed, keep_head=True)
        return cls._load(model_dir, vocab, kind, device, seed, keep_head=False)

    @classmethod
    def _load(cls, model_dir: Path, vocab: CtcVocab, kind: str, device: Any, seed: int, keep_head: bool) -> CtcASR:
        torch = _torch()
        size = len(vocab.symbols)
        if kind == WHISPER_KIND:
            from transformers import WhisperConfig, WhisperFeatureExtractor

            config = WhisperConfig.from_pretrained(model_dir)
            model = _whisper_ctc_class()(config, size)
            if (model_dir / META_FILE).is_file():  # encoder + head saved by speechtl
                from safetensors.torch import load_file

                state = load_file(str(model_dir / "model.safetensors"))
                if not keep_head:
                    state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
                    head = _new_head(config.d_model, size, seed)
                    state.update({f"lm_head.{k}": v for k, v in head.state_dict().items()})
                model.load_state_dict(state)
            else:
                from transformers import WhisperForConditionalGeneration

                whisper = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
                model.model.encoder.load_state_dict(whisper.model.encoder.state_dict())
                model.lm_head = _new_head(config.d_model, size, seed)
                del whisper
            fe = WhisperFeatureExtractor.from_pretrained(model_dir)
            asr = cls(model, vocab, kind, fe)
        else:
            from transformers import AutoConfig, AutoModelForCTC, Wav2Vec2FeatureExtractor

            config = AutoConfig.from_pretrained(model_dir)
            overrides = {"pad_token_id": vocab.symbols.index(PAD), "ctc_loss_reduction": "mean",
                         "ctc_zero_infinity": True, "layerdrop": 0.0}
            if keep_head:
                model = AutoModelForCTC.from_pretrained(model_dir, dtype=torch.float32, **overrides)
            else:
                # the checkpoint's head (if any) belongs to another alphabet: load the body, then a fresh head
                model = AutoModelForCTC.from_pretrained(model_dir, dtype=torch.float32, vocab_size=size,
                                                        ignore_mismatched_sizes=True, **overrides)
                model.lm_head = _new_head(model.lm_head.in_features, size, seed)
                model.config.vocab_size = size
            if model.lm_head.out_features != size:
                raise ValueError(f"{model_dir}: the CTC head has {model.lm_head.out_features} outputs but "
                                 f"vocab.json has {size} symbols")
            if (model_dir / "preprocessor_config.json").is_file():
                fe = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
            else:
                fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
            # checkpoints with group-norm feature encoders (wav2vec2-base) were trained without attention masks
            mask = getattr(config, "feat_extract_norm", "layer") == "layer"
            asr = cls(model, vocab, kind, fe, return_attention_mask=mask)
        asr.model.to(device)
        asr.model.eval()
        return asr

    def save(self, out_dir: Path | str, *, lang: str, state_dict: dict[str, Any] | None = None,
             meta: dict[str, Any] | None = None) -> None:
        """Weights (``model.safetensors``), configs, ``vocab.json`` and ``speechtl_ctc.json`` into ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.model.state_dict()
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        if self.kind == WHISPER_KIND:
            from safetensors.torch import save_file

            save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
            self.model.config.save_pretrained(out_dir)
        else:
            self.model.save_pretrained(out_dir, state_dict=state)
        self.feature_extractor.save_pretrained(out_dir)
        self.vocab.save(out_dir / "vocab.json")
        info = {"kind": self.kind, "lang": lang, "vocab_size": len(self.vocab.symbols), **(meta or {})}
        atomic_write_text(out_dir / META_FILE, json.dumps(info, indent=2, ensure_ascii=False) + "\n")

    # ---------------------------------------------------------------- running

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.vocab.symbols

    def features(self, audios: Sequence[np.ndarray], *, ids: Sequence[str] | None = None) -> Any:
        """Whisper kind: 30 s log-mel features (batch, mels, 3000). HF kind: a batch dict (input_values, mask)."""
        if self.kind == WHISPER_KIND:
            out = self.feature_extractor(list(audios), sampling_rate=16000, return_tensors="pt")
            return out.input_features.to(self.device)
        batch = self.collator.waveforms(audios)
        if not self.return_attention_mask:
            batch.pop("attention_mask")
        return {k: v.to(self.device) for k, v in batch.items()}

    def encode(self, x: Any, start: int = 0, stop: int | None = None) -> Any:
        """Whisper kind: encoder stages ``[start, stop)`` (see :func:`speechtl.models.encoder_stages.run_encoder`)."""

        return run_encoder(self.model, x, start, stop)

    def log_probs(self, batch: Any) -> tuple[np.ndarray, list[int]]:
        """Per-frame log-probabilities (batch, frames, vocab) as float32 numpy, and the valid frames of each.

        ``batch``: :meth:`features` output (HF kind), or ``(features, num_samples per item)`` (Whisper kind).
        """
        torch = _torch()
        with torch.no_grad():
            if self.kind == WHISPER_KIND:
                features, num_samples = batch
                logits = self.model.lm_head(self.encode(features))
                lengths = [whisper_frames(n, logits.shape[1]) for n in num_samples]
            else:
                logits = self.model(**batch).logits
                if "attention_mask" in batch:
                    lengths = self.model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1)).tolist()
                else:
                    lengths = [logits.shape[1]] * logits.shape[0]
            return torch.log_softmax(logits.float(), dim=-1).cpu().numpy(), [int(n) for n in lengths]

    def _decode(self, log_probs: np.ndarray, lengths: Sequence[int]) -> list[str]:
        if self.decoder is not None:
            return [self.decoder.decode(lp[:n]) for lp, n in zip(log_probs, lengths)]

        return [greedy_decode(lp[:n], self.symbols) for lp, n in zip(log_probs, lengths)]

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:
        """One transcript per 16 kHz float32 array (``lang`` and ``prompt`` do not steer a CTC model)."""
        if prompt:
            raise ValueError("a CTC model takes no text prompt (use the beam decoder's term boosting)")
        out: list[str] = []
        self.model.eval()
        for lo in range(0, len(audios), batch_size):
            chunk = audios[lo:lo + batch_size]
            batch = self.features(chunk)
            if self.kind == WHISPER_KIND:
                batch = (batch, [len(a) for a in chunk])
            log_probs, lengths = self.log_probs(batch)
            out += self._decode(log_probs, lengths)
        return out

    def transcribe_encoded(self, encoder_hidden_states: Any, lang: str, *, prompt: str | None = None,
                           batch_size: int = 8, num_beams: int = 1, max_new_tokens: int = 128,
                           durations_s: Sequence[float | None] | None = None) -> list[str]:
        """Whisper kind: transcripts from encoder outputs (what the encoder cache hands back); ``durations_s``
        (one per item, None = unknown) limits each to the frames covering its audio."""
        torch = _torch()
        if prompt:
            raise ValueError("a CTC model takes no text prompt (use the beam decoder's term boosting)")
        head = self.model.lm_head
        with torch.no_grad():
            x = encoder_hidden_states.to(device=head.weight.device, dtype=head.weight.dtype)
            log_probs = torch.log_softmax(head(x).float(), dim=-1).cpu().numpy()
        frames = log_probs.shape[1]
        durations = list(durations_s) if durations_s is not None else [None] * len(log_probs)
        return self._decode(log_probs, [frames if d is None else whisper_frames(round(d * 16000), frames)
                                        for d in durations])


# ------------------------------------------------------------------ strategies


def encoder_layers(asr: CtcASR) -> Any:
    return asr.model.model.encoder.layers if asr.kind == WHISPER_KIND else asr.model.base_model.encoder.layers
