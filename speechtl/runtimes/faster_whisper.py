"""A CTranslate2 Whisper directory on faster-whisper (CPU), the runtime of the ``ct2`` export.

One model object serves both callers: :meth:`FasterWhisper.transcribe` decodes a batch of clips to text
the way the export parity check and ``speechtl eval`` score it (greedy, no fallback, no timestamps, no
conditioning on earlier text), and :meth:`FasterWhisper.transcript` answers one request of
``speechtl serve``: real Whisper segments (timestamps, tokens, avg_logprob, compression_ratio,
no_speech_prob, temperature), word timestamps, OpenAI's temperature rule (0 = fall back through 0.0,
0.2, ... 1.0; otherwise that one temperature) and language detection when no language is given.

Audio shorter than a 30-s window is padded to one (:func:`speechtl.models.ct2.whisper.pad_to_window`):
the features the model was trained on; longer audio is decoded as it is, window after window.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from speechtl.models.ct2.whisper import pad_to_window
from speechtl.runtimes.transcript import SAMPLE_RATE, RequestError, Segment, Transcript, Word

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai-whisper's schedule, used for temperature=0


class FasterWhisper:
    """``compute_type`` e.g. "int8", "float32"; ``num_workers`` requests may run at once (thread-safe)."""

    supports_prompt = True
    supports_words = True

    def __init__(self, model_dir: Path | str, *, compute_type: str = "int8", num_workers: int = 1,
                 cpu_threads: int = 0, beam_size: int = 5, language: str | None = None, pad: bool = True) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ImportError("a CTranslate2 model runs on faster-whisper: pip install 'speechtl[serve]'") from exc
        if num_workers < 1 or beam_size < 1:
            raise ValueError(f"num_workers ({num_workers}) and beam_size ({beam_size}) must be >= 1")
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type,
                                  cpu_threads=cpu_threads, num_workers=num_workers)
        self.name = f"faster-whisper ({compute_type}): {model_dir}"
        self.max_concurrency = num_workers
        self.beam_size, self.language = beam_size, language
        self.pad = pad  # False: faster-whisper as a caller uses it, unpadded
        self.clip_beams = 1  # beam width of transcribe (evaluation): the run's eval.num_beams in a parity check
        self.languages = frozenset(self.model.supported_languages)

    def _audio(self, audio: np.ndarray) -> np.ndarray:
        return pad_to_window(audio) if self.pad else np.asarray(audio, np.float32)

    def transcribe(self, audios: Sequence[np.ndarray], lang: str, *, prompt: str | None = None,
                   batch_size: int = 8) -> list[str]:
        """One transcript per 16 kHz mono clip, as evaluation scores it (beams of ``clip_beams``, no temperature
        fallback); up to ``max_concurrency`` clips at once (one per worker of the model)."""

        def one(audio: np.ndarray) -> str:
            segments, _ = self.model.transcribe(self._audio(audio), language=lang, task="transcribe",
                                                beam_size=self.clip_beams, best_of=1, temperature=0.0,
                                                initial_prompt=prompt,
                                                condition_on_previous_text=False, without_timestamps=True,
                                                vad_filter=False)
            return "".join(s.text for s in segments).strip()

        if self.max_concurrency == 1 or len(audios) < 2:
            return [one(audio) for audio in audios]
        with ThreadPoolExecutor(min(self.max_concurrency, len(audios))) as pool:
            return list(pool.map(one, audios))

    def transcript(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0, word_timestamps: bool = False, hotwords: str | None = None) -> Transcript:
        """One request: segments and (when asked) words, for 16 kHz mono ``audio``; ``hotwords`` goes to
        faster-whisper's ``hotwords``: the prompt of every window in place of the previous window's text (the
        prompt a model trained with ``train.prompt_share`` saw), after the request's ``prompt`` on the first."""
        language = language or self.language
        if language is not None and language not in self.languages:
            raise RequestError(f"Unsupported language: {language!r} (expected an ISO 639-1 code)", "language")
        temps = FALLBACK_TEMPERATURES if temperature == 0 else temperature
        duration = len(audio) / SAMPLE_RATE
        hotwords = self.fit_hotwords(hotwords, prompt)
        segments, info = self.model.transcribe(
            self._audio(audio), language=language, task="transcribe", initial_prompt=prompt or None,
            temperature=temps, beam_size=self.beam_size, word_timestamps=word_timestamps, vad_filter=False,
            hotwords=hotwords, condition_on_previous_text=hotwords is None)
        segs, words = [], []
        for s in segments:  # a generator: decoding happens here
            if s.start >= duration:  # decoded from the padding, which is silence
                continue
            segs.append(Segment(id=len(segs), seek=int(s.seek), start=float(s.start), end=min(float(s.end), duration),
                                text=s.text, tokens=tuple(int(t) for t in s.tokens),
                                temperature=float(s.temperature or 0.0), avg_logprob=float(s.avg_logprob),
                                compression_ratio=float(s.compression_ratio), no_speech_prob=float(s.no_speech_prob)))
            words += [Word(w.word, float(w.start), min(float(w.end), duration))
                      for w in (s.words or []) if w.start < duration]
        return Transcript(text="".join(s.text for s in segs).strip(), language=info.language,
                          duration_s=duration, segments=tuple(segs),
                          words=tuple(words) if word_timestamps else None)

    def fit_hotwords(self, hotwords: str | None, prompt: str | None) -> str | None:
        """``hotwords`` cut (whole words from the end) to what Whisper's previous-text prompt leaves after the
        request's ``prompt``: faster-whisper puts both before the first window and caps neither against the
        other, so together they can fill the 448-token context and the decoder fails (a 500 from speechtl serve on
        long hotwords with a long prompt, or with the previous window's text). None when nothing fits."""
        if not hotwords or not hotwords.strip():
            return None
        limit = self.model.max_length // 2 - 1  # 223: the prompt Whisper was trained with
        room = limit - (len(self._tokens(prompt)) if prompt and prompt.strip() else 0)
        words = hotwords.split()[:max(room, 0)]  # a word is at least one token
        while words and len(self._tokens(" ".join(words))) > room:
            words.pop()
        return " ".join(words) or None

    def _tokens(self, text: str) -> list[int]:
        # faster-whisper encodes a prompt and hotwords with a leading space
        return self.model.hf_tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids
