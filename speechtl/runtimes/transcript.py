"""What a runtime returns for one recording when the caller wants more than text (serving): a
:class:`Transcript` of :class:`Segment` and :class:`Word` timings, and :class:`RequestError` for a call
the model cannot serve as asked."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16000


class RequestError(ValueError):
    """A request that cannot be served as asked (bad language, bad audio, ...): HTTP ``status``, OpenAI ``code``."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400,
                 code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


@dataclass(frozen=True)
class Segment:
    """One transcribed stretch, with the fields of OpenAI's verbose_json segment."""

    id: int  # index in the transcript, from 0
    seek: int  # offset of the decoding window, in 10 ms mel frames
    start: float  # seconds
    end: float  # seconds
    text: str
    tokens: tuple[int, ...]  # Whisper token ids of the text (empty when the model has none)
    temperature: float  # the sampling temperature that produced it
    avg_logprob: float  # mean token log-probability (0.0 when not computed)
    compression_ratio: float  # len(text bytes) / len(zlib-compressed text bytes)
    no_speech_prob: float  # probability of the no-speech token (0.0 when not computed)


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds
    end: float  # seconds


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # ISO 639-1 code
    duration_s: float  # length of the audio, seconds
    segments: tuple[Segment, ...]
    words: tuple[Word, ...] | None = None  # only when word timestamps were asked for


