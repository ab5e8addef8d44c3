"""What ``speechtl serve`` runs a model on: one ``transcribe(audio, ...) -> Transcript`` call per request.

- :class:`FasterWhisperBackend`: a CTranslate2 export directory (it has ``model.bin``) on
  ``faster_whisper.WhisperModel`` (CPU, ``compute_type`` e.g. "int8", "float32"). Real Whisper segments
  (timestamps, tokens, avg_logprob, compression_ratio, no_speech_prob, temperature), word timestamps,
  OpenAI's temperature rule (0 = fall back through 0.0, 0.2, ... 1.0; otherwise that one temperature) and
  language detection when no language is given.
- :class:`TransformersBackend`: a transformers directory, Whisper through
  :class:`speechtl.models.whisper.WhisperASR` or a CTC model through :class:`speechtl.models.wav2vec2.CtcASR`.
  Decoding is greedy (``temperature`` is not used). Audio is cut into equal windows of at most 30 s and
  each window is one segment, so a clip up to 30 s comes back as one segment covering the whole clip; its
  ``avg_logprob`` and ``no_speech_prob`` are 0.0 (not computed), ``compression_ratio`` is computed from the
  text as Whisper does, ``tokens`` are the text's Whisper tokens (empty for CTC). Whisper detects the
  language from the first window when none is given; a CTC model reports the language it was loaded for
  and takes no prompt.

Neither model is thread-safe: :attr:`Backend.max_concurrency` says how many ``transcribe`` calls may run
at once (1, or faster-whisper's ``num_workers``), and the server keeps to it.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from speechtl.audio import AudioConfig, AudioRejected, decode, process, resample, to_mono
from speechtl.models.ct2.whisper import pad_to_window
from speechtl.models.wav2vec2 import CtcASR, architecture
from speechtl.models.whisper import WhisperASR

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Whisper's window; the transformers backends transcribe one window per segment
_FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai-whisper's schedule, used for temperature=0
_MIN_SAMPLES = 1600  # shorter clips are zero-padded to 0.1 s (a CTC encoder needs some frames)
_LANGUAGE_NAMES = (  # Whisper's codes -> the names OpenAI's verbose_json gives
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese "
    "tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi "
    "fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish "
    "hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin "
    "mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian "
    "az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
    "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi "
    "pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan ka:georgian "
    "be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese "
    "ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish my:myanmar "
    "bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir "
    "jw:javanese su:sundanese yue:cantonese")
_LANGUAGES = dict(item.split(":") for item in _LANGUAGE_NAMES.split())



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


class Backend(Protocol):
    name: str  # what runs the model, for logs and /health
    max_concurrency: int  # transcribe() calls that may run at once (each on its own thread)
    supports_prompt: bool
    supports_words: bool  # word timestamps

    def transcribe(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0, word_timestamps: bool = False) -> Transcript:
        """``audio``: 16 kHz mono float32. Raises :class:`RequestError` for what the client asked wrongly."""
        ...


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: bytes over zlib-compressed bytes (0.0 for empty text)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class FasterWhisperBackend:
    """A CTranslate2 Whisper directory on faster-whisper, CPU."""

    supports_prompt = True
    supports_words = True

    def __init__(self, model_dir: Path | str, *, compute_type: str = "int8", num_workers: int = 1,
                 cpu_threads: int = 0, beam_size: int = 5, language: str | None = None) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ImportError("serving a CTranslate2 model needs faster-whisper: "
                              "pip install 'speechtl[serve]'") from exc
        if num_workers < 1 or beam_size < 1:
            raise ValueError(f"num_workers ({num_workers}) and beam_size ({beam_size}) must be >= 1")
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type,
                                  cpu_threads=cpu_threads, num_workers=num_workers)
        self.name = f"faster-whisper ({compute_type})"
        self.max_concurrency = num_workers  # CTranslate2 runs num_workers translations in parallel, thread-safely
        self.beam_size = beam_size
        self.language = language

    def transcribe(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0, word_timestamps: bool = False) -> Transcript:
        from faster_whisper.tokenizer import _LANGUAGE_CODES


        language = language or self.language
        if language is not None and language not in _LANGUAGE_CODES:
            raise RequestError(f"Unsupported language: {language!r} (expected an ISO 639-1 code)", "language")
        temps = _FALLBACK_TEMPERATURES if temperature == 0 else temperature
        duration = len(audio) / SAMPLE_RATE
        segments, info = self.model.transcribe(  # padded: the features the model was trained on (pad_to_window)
            pad_to_window(audio), language=language, task="transcribe", initial_prompt=prompt or None,
            temperature=temps, beam_size=self.beam_size, word_timestamps=word_timestamps, vad_filter=False)
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


class TransformersBackend:
    """A transformers Whisper (``kind="seq2seq"``) or CTC (``kind="ctc"``) model; see the module docstring."""

    supports_words = False
    max_concurrency = 1  # one torch model, not thread-safe

    def __init__(self, asr: Any, kind: str, *, language: str | None = None, batch_size: int = 8) -> None:
        if kind not in ("seq2seq", "ctc"):
            raise ValueError(f"kind must be 'seq2seq' or 'ctc', got {kind!r}")
        if kind == "ctc" and not language:
            raise ValueError("a CTC model needs the language it was trained for")
        self.asr, self.kind, self.language, self.batch_size = asr, kind, language, batch_size
        self.supports_prompt = kind == "seq2seq"
        self.name = "transformers Whisper" if kind == "seq2seq" else "transformers CTC"

    @classmethod
    def load(cls, model_dir: Path | str, *, language: str | None = None) -> TransformersBackend:
        """Whisper or CTC by :func:`speechtl.models.wav2vec2.architecture`; a CTC model's language defaults to "es"."""

        kind = architecture(model_dir)
        if kind == "ctc":
            return cls(CtcASR.load(model_dir, lang=language or "es"), kind, language=language or "es")
        return cls(WhisperASR.load(model_dir), kind, language=language)

    def _detect_language(self, audio: np.ndarray) -> str:
        import torch

        if not getattr(self.asr.generation_config, "lang_to_id", None):  # an English-only model
            return "en"

        with torch.no_grad():
            feats = self.asr.features([audio]).to(self.asr.device)
            ids = self.asr.model.detect_language(input_features=feats, generation_config=self.asr.generation_config)
        return str(self.asr.tokenizer.convert_ids_to_tokens(int(ids[0])))[2:-2]

    def transcribe(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0, word_timestamps: bool = False) -> Transcript:
        if word_timestamps:
            raise RequestError("word timestamps are not available for this model", "timestamp_granularities[]")
        if prompt and not self.supports_prompt:
            raise RequestError("this model (CTC) takes no prompt", "prompt")
        audio = np.asarray(audio, dtype=np.float32)
        duration_s = len(audio) / SAMPLE_RATE
        if len(audio) < _MIN_SAMPLES:
            audio = np.pad(audio, (0, _MIN_SAMPLES - len(audio)))
        count = max(1, math.ceil(len(audio) / (WINDOW_S * SAMPLE_RATE)))
        size = math.ceil(len(audio) / count)
        bounds = [(lo, min(lo + size, len(audio))) for lo in range(0, len(audio), size)]
        chunks = [audio[lo:hi] for lo, hi in bounds]
        if self.kind == "ctc":
            language = self.language
        else:
            language = language or self.language or self._detect_language(chunks[0])
            try:
                self.asr.prefix_tokens(language)
            except ValueError as exc:
                raise RequestError(f"Unsupported language: {language!r} ({exc})", "language") from exc
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


def load_backend(model_dir: Path | str, *, compute_type: str = "int8", num_workers: int = 1,
                 cpu_threads: int = 0, language: str | None = None) -> Backend:
    """faster-whisper for a CTranslate2 directory (``model.bin``), else the transformers backend."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: not a model directory")
    if (model_dir / "model.bin").is_file():
        return FasterWhisperBackend(model_dir, compute_type=compute_type, num_workers=num_workers,
                                    cpu_threads=cpu_threads, language=language)
    if num_workers != 1:
        log.warning("num_workers=%d ignored: a transformers model serves one request at a time", num_workers)
    return TransformersBackend.load(model_dir, language=language)


# ------------------------------------------------------------------ around the backends: audio in, OpenAI bodies out


def decode_upload(data: bytes, suffix: str, name: str, max_duration_s: float) -> np.ndarray:
    """Uploaded bytes -> 16 kHz mono float32, decoded from a temporary file as ``speechtl transcribe`` does.

    Raises :class:`RequestError`: 400 for undecodable audio, 413 for audio over ``max_duration_s``.
    Digital silence is kept (it transcribes to little or nothing) rather than rejected.
    """

    fd, tmp = tempfile.mkstemp(prefix="speechtl-serve-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            samples, rate = decode(tmp)
        except AudioRejected as exc:
            raise RequestError(f"Audio file might be corrupted or unsupported: {exc.detail.replace(tmp, name)}",
                               "file") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    duration_s = len(samples) / rate
    if duration_s > max_duration_s:
        raise RequestError(f"Audio duration {duration_s:.1f} s is longer than the maximum of {max_duration_s:g} s.",
                           "file", status=413, code="audio_too_long")
    config = AudioConfig(trim=False, min_duration_s=0.0, segmentation=True, clipped_share=1.0)
    try:
        return process(samples, rate, config)
    except AudioRejected as exc:
        if exc.reason == "silent":
            return resample(to_mono(samples), rate, config.sample_rate).astype(np.float32)
        raise RequestError(f"Audio file is not usable ({name}: {exc})", "file") from exc


def usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(transcript.duration_s)}


def verbose_json(transcript: Transcript, granularities: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """OpenAI's verbose_json body; segments unless only "word" granularity is asked, words when asked."""
    language = _LANGUAGES.get(transcript.language, transcript.language).replace("_", " ")
    body: dict[str, Any] = {"task": "transcribe", "language": language, "duration": round(transcript.duration_s, 3),
                            "text": transcript.text}
    if not granularities or "segment" in granularities:
        body["segments"] = [{**vars(s), "tokens": list(s.tokens)} for s in transcript.segments]
    if "word" in granularities:
        body["words"] = [vars(w) for w in transcript.words or ()]
    body["usage"] = usage(transcript)
    return body


def _clock(seconds: float, sep: str) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def subtitles(transcript: Transcript, fmt: str) -> str:
    """SubRip (``fmt="srt"``) or WebVTT (``"vtt"``) text, one cue per segment."""
    sep = "," if fmt == "srt" else "."
    cues = [(f"{i}\n" if fmt == "srt" else "") + f"{_clock(s.start, sep)} --> {_clock(s.end, sep)}\n{s.text.strip()}\n"
            for i, s in enumerate(transcript.segments, start=1)]
    return ("WEBVTT\n\n" if fmt == "vtt" else "") + "\n".join(cues)
