"""A transformers directory on PyTorch: Whisper through :class:`speechtl.models.whisper.WhisperASR`, a CTC
model through :class:`speechtl.models.wav2vec2.CtcASR` (both loaded with ``from_pretrained``).

:meth:`Transformers.transcribe` decodes a batch of clips to text (greedy, the decoding evaluation scores);
:meth:`Transformers.transcript` answers one request of ``speechtl serve``. ``temperature`` is not used.
Audio is cut into equal windows of at most 30 s and each window is one segment, so a clip up to 30 s comes
back as one segment covering the whole clip; its ``avg_logprob`` and ``no_speech_prob`` are 0.0 (not
computed), ``compression_ratio`` is computed from the text as Whisper does, ``tokens`` are the text's
Whisper tokens (empty for CTC). Whisper detects the language from the first window when none is given; a
CTC model reports the language it was loaded for and takes no prompt. The model is not thread-safe:
``max_concurrency`` is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.levels import WINDOW_S, window_bounds
from speechtl.models.wav2vec2 import CtcASR, architecture
from speechtl.models.whisper import WhisperASR
from speechtl.runtimes.transcript import SAMPLE_RATE, RequestError, Segment, Transcript
from speechtl.text.repetition import compression_ratio

MIN_SAMPLES = 1600  # shorter clips are zero-padded to 0.1 s (a CTC encoder needs some frames)


class Transformers:
    """A loaded :class:`WhisperASR` (``kind="seq2seq"``) or :class:`CtcASR` (``kind="ctc"``)."""

    supports_words = False
    max_concurrency = 1  # one torch model, not thread-safe

    def __init__(self, asr: Any, kind: str, *, language: str | None = None, batch_size: int = 8,
                 name: str | None = None) -> None:
        if kind not in ("seq2seq", "ctc"):
            raise ValueError(f"kind must be 'seq2seq' or 'ctc', got {kind!r}")
        if kind == "ctc" and not language:
            raise ValueError("a CTC model needs the language it was trained for")
        self.asr, self.kind, self.language, self.batch_size = asr, kind, language, batch_size
        self.supports_prompt = kind == "seq2seq"
        self.name = name or ("transformers Whisper" if kind == "seq2seq" else "transformers CTC")

    @classmethod
    def load(cls, model_dir: Path | str, *, language: str | None = None) -> Transformers:
        """Whisper or CTC by :func:`speechtl.models.wav2vec2.architecture`; a CTC model's language defaults to "es"."""
        kind = architecture(model_dir)
        name = f"transformers ({kind}): {model_dir}"
        if kind == "ctc":
            return cls(CtcASR.load(model_dir, lang=language or "es"), kind, language=language or "es", name=name)
        return cls(WhisperASR.load(model_dir), kind, language=language, name=name)

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:
        """One greedy transcript per 16 kHz mono clip, as evaluation scores it."""
        return self.asr.transcribe(audios, lang, prompt=prompt, batch_size=batch_size)

    def _detect_language(self, audio: np.ndarray) -> str:
        if not getattr(self.asr.generation_config, "lang_to_id", None):  # an English-only model
            return "en"
        return self.asr.detect_languages([audio])[0]

    def _language(self, language: str | None, first_window: np.ndarray) -> str:
        if self.kind == "ctc":
            return self.language
        language = language or self.language or self._detect_language(first_window)
        try:
            self.asr.prefix_tokens(language)
        except ValueError as exc:
            raise RequestError(f"Unsupported language: {language!r} ({exc})", "language") from exc
        return language

    def transcript(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0, word_timestamps: bool = False, hotwords: str | None = None) -> Transcript:
        """One request: a segment per window of at most 30 s (cut at the quietest point before the limit), for
        16 kHz mono ``audio`` of any length; ``hotwords`` prompts each window where ``prompt`` is not given."""
        if word_timestamps:
            raise RequestError("word timestamps are not available for this model", "timestamp_granularities[]")
        prompt = prompt or hotwords
        if prompt and not self.supports_prompt:
            raise RequestError("this model (CTC) takes no prompt", "prompt")
        audio = np.asarray(audio, dtype=np.float32)
        duration_s = len(audio) / SAMPLE_RATE
        if len(audio) < MIN_SAMPLES:
            audio = np.pad(audio, (0, MIN_SAMPLES - len(audio)))
        bounds = window_bounds(audio, SAMPLE_RATE, WINDOW_S)  # long audio: cut in pauses, at most 30 s each
        chunks = [audio[lo:hi] for lo, hi in bounds]
        language = self._language(language, chunks[0])
        texts = self.asr.transcribe(chunks, language, prompt=prompt or None, batch_size=self.batch_size)
        segments = []
        for i, ((lo, hi), text) in enumerate(zip(bounds, texts, strict=True)):
            text = text.strip()
            whisper = text and self.kind == "seq2seq"
            tokens = self.asr.tokenizer.encode(" " + text, add_special_tokens=False) if whisper else []
            segments.append(Segment(id=i, seek=lo * 100 // SAMPLE_RATE, start=lo / SAMPLE_RATE,
                                    end=min(hi / SAMPLE_RATE, duration_s), text=" " + text if text else "",
                                    tokens=tuple(int(t) for t in tokens), temperature=0.0, avg_logprob=0.0,
                                    compression_ratio=compression_ratio(text), no_speech_prob=0.0))
        return Transcript(text=" ".join(t.strip() for t in texts if t.strip()), language=language,
                          duration_s=duration_s, segments=tuple(segments))
