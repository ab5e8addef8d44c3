"""A CTranslate2 (faster-whisper) Whisper directory: transcribe with it, read its decoding settings, check a copy.

The reference runtime: bundled models are checked against it (:func:`verify`:
greedy decoding of short spoken clips must give the same token ids in both
runtimes), and data prep uses it for spot checks of synthetic speech. Its
``config.json`` and ``tokenizer.json`` give the decoding settings a transformers
copy needs (:func:`generation_settings`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from speechtl import audio

log = logging.getLogger(__name__)

MAX_TARGET_LENGTH = 448  # Whisper's decoder context
MULTILINGUAL_VOCAB_SIZE = 51865  # OpenAI's rule: a Whisper vocabulary this large or larger is multilingual


WINDOW_SAMPLES = 30 * 16000  # Whisper's input window at 16 kHz


def pad_to_window(audio: np.ndarray) -> np.ndarray:
    """``audio`` shorter than a 30-s window followed by silence up to one window; longer audio as it is.

    Whisper's reference front end (OpenAI's, and transformers') pads the audio with silence before the
    log-mel, so the frames after speech are log-mel of silence. faster-whisper computes the log-mel of the
    audio alone and pads the window with zeros in the log-mel domain, which a fine-tuned model has never
    seen (medical recipe, faster-whisper float32: 11.0% WER as-is, 9.1% padded). Padding the audio first
    gives faster-whisper the reference features. Long audio is left alone: faster-whisper decodes it
    window after window, and padding it to whole windows adds up to 30 s of silence at its end, where a
    fine-tuned model writes words (issue 14, ~98-s recordings: medical model 37.3% WER padded, 25.6% as
    is; the unadapted model 25.1% both ways).
    """
    audio = np.asarray(audio, dtype=np.float32)
    return np.pad(audio, (0, WINDOW_SAMPLES - len(audio))) if 0 < len(audio) < WINDOW_SAMPLES else audio


class Ct2FormatError(ValueError):
    """A CTranslate2 model directory that cannot be read, or does not form a Whisper model."""


class CT2Whisper:
    """Token ids of greedy, no-timestamp decoding through the ``ctranslate2`` package: what :func:`verify`
    compares with transformers. Evaluation and serving run CTranslate2 models on
    :class:`speechtl.runtimes.faster_whisper.FasterWhisper`."""

    def __init__(self, model_dir: Path | str, *, num_threads: int = 0):
        try:
            import ctranslate2
            import tokenizers
            from transformers import WhisperFeatureExtractor
        except ImportError as exc:
            raise ImportError(f"CTranslate2 Whisper needs {exc.name}: pip install 'speechtl[bundled,train]'") from exc
        self.model_dir = Path(model_dir)
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device="cpu", intra_threads=num_threads)
        self.tokenizer = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.features = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.eot = self.tokenizer.token_to_id("<|endoftext|>")
        # the runtime's own answer, as faster-whisper takes it (CTranslate2 4.x: the vocabulary has OpenAI's
        # multilingual empty token)
        self.multilingual = bool(self.model.is_multilingual)

    def prompt(self, lang: str | None, task: str = "transcribe") -> list[str]:
        """The decoder prompt; English-only models take no language or task token."""
        if not self.multilingual:
            return ["<|startoftranscript|>", "<|notimestamps|>"]
        tokens = ["<|startoftranscript|>"]
        if lang:
            tokens.append(f"<|{lang}|>")
        return tokens + [f"<|{task}|>", "<|notimestamps|>"]

    def generate_ids(
        self, audios: Sequence[np.ndarray], lang: str | None, *, beam_size: int = 1, max_length: int = 224
    ) -> list[list[int]]:
        """Token ids (without the prompt) for 16 kHz mono float arrays.

        ``max_length`` is CTranslate2's: it counts the prompt, and past a few tokens decoding stops after
        about ``max_length / 2`` new tokens.
        """
        import ctranslate2

        mel = self.features(list(audios), sampling_rate=16000, return_tensors="np").input_features
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32))
        prompt = self.prompt(lang)
        results = self.model.generate(
            storage, [prompt] * len(audios), beam_size=beam_size, max_length=max_length, suppress_blank=True
        )
        return [r.sequences_ids[0] for r in results]


# ------------------------------------------------------------------------- decoding settings of a CT2 dir


@dataclass(frozen=True)
class SpecialTokens:
    eot: int  # <|endoftext|>: end, pad and bos
    sot: int  # <|startoftranscript|>: decoder start
    no_timestamps: int  # <|notimestamps|>
    transcribe: int | None  # <|transcribe|> (multilingual models)
    translate: int | None  # <|translate|> (multilingual models)
    prev: int | None  # <|startofprev|>

    @classmethod
    def of(cls, tokenizer, path: Path) -> SpecialTokens:
        ids = {t: tokenizer.token_to_id(f"<|{t}|>") for t in ("endoftext", "startoftranscript", "notimestamps")}
        if None in ids.values():
            missing = [f"<|{t}|>" for t, i in ids.items() if i is None]
            raise Ct2FormatError(f"{path}: the tokenizer has no {', '.join(missing)}; not a Whisper tokenizer")
        return cls(*ids.values(), *(tokenizer.token_to_id(f"<|{t}|>") for t in ("transcribe", "translate",
                                                                                  "startofprev")))


def read_ct2_config(ct2_dir: Path) -> dict:
    """The CT2 dir's ``config.json`` (suppress_ids, suppress_ids_begin, lang_ids, alignment_heads); {} if absent."""
    path = ct2_dir / "config.json"
    if not path.is_file():
        log.warning("%s: no config.json; no token suppression, no language ids, no alignment heads", ct2_dir)
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Ct2FormatError(f"{path}: unreadable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise Ct2FormatError(f"{path}: config.json is not a JSON object")
    for key in ("suppress_ids", "suppress_ids_begin", "lang_ids", "alignment_heads"):
        if config.get(key) is not None and not isinstance(config[key], list):
            raise Ct2FormatError(f"{path}: field {key!r} should be a list, got {type(config[key]).__name__}")
    return config


def _ct2_runtime_multilingual(ct2_dir: Path) -> bool | None:
    """CTranslate2 4.x's runtime rule: multilingual when its vocabulary holds the empty token (id 50256 in
    OpenAI's multilingual vocabulary); None without a vocabulary file."""
    if (ct2_dir / "vocabulary.json").is_file():
        return "" in json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    if (ct2_dir / "vocabulary.txt").is_file():
        return "" in (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    return None


def generation_settings(ct2_dir: Path, tokenizer, vocab_size: int) -> dict:
    """GenerationConfig fields for a CT2 Whisper dir, from its config.json and tokenizer."""
    config = read_ct2_config(ct2_dir)
    special = SpecialTokens.of(tokenizer, ct2_dir / "tokenizer.json")
    # OpenAI's rule (the converter may list language ids even for an English-only model)
    multilingual = vocab_size >= MULTILINGUAL_VOCAB_SIZE
    runtime = _ct2_runtime_multilingual(ct2_dir)
    if runtime is not None and runtime != multilingual:
        kind = {True: "multilingual", False: "English-only"}
        log.warning("%s: %d tokens make the model %s, but CTranslate2 (faster-whisper) will treat it as %s",
                    ct2_dir, vocab_size, kind[multilingual], kind[runtime])
    if not multilingual:
        lang_ids = []
    elif config.get("lang_ids"):
        lang_ids = [int(i) for i in config["lang_ids"]]
    else:
        log.warning("%s: config.json has no lang_ids; taking the language tokens from the tokenizer", ct2_dir)
        end = special.translate if special.translate is not None else special.sot
        lang_ids = [i for i in range(special.sot + 1, end)
                    if re.fullmatch(r"<\|[a-z-]+\|>", tokenizer.id_to_token(i) or "")]
    lang_to_id = {}
    for i in lang_ids:
        token = tokenizer.id_to_token(i)
        if token is None or not re.fullmatch(r"<\|[a-zA-Z-]+\|>", token):
            raise Ct2FormatError(f"{ct2_dir / 'config.json'}: lang_ids entry {i} is {token!r}, not a language token")
        lang_to_id[token] = i
    if multilingual and (not lang_to_id or special.transcribe is None or special.translate is None):
        raise Ct2FormatError(f"{ct2_dir}: multilingual-size vocabulary ({vocab_size}) but no language tokens or no "
                             "<|transcribe|>/<|translate|> tokens in tokenizer.json")
    _check_language_order(ct2_dir, lang_to_id, special.sot)
    settings = dict(
        bos_token_id=special.eot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        decoder_start_token_id=special.sot,
        max_length=MAX_TARGET_LENGTH,
        no_timestamps_token_id=special.no_timestamps,
        max_initial_timestamp_index=50,
        return_timestamps=False,
        suppress_tokens=[int(i) for i in config.get("suppress_ids") or []],
        begin_suppress_tokens=[int(i) for i in config.get("suppress_ids_begin") or []],
        alignment_heads=[[int(a), int(b)] for a, b in config.get("alignment_heads") or []],
        is_multilingual=multilingual,
    )
    if special.prev is not None:
        settings["prev_sot_token_id"] = special.prev
    if multilingual:
        settings["lang_to_id"] = lang_to_id
        settings["task_to_id"] = {"transcribe": special.transcribe, "translate": special.translate}
    return settings


def _check_language_order(ct2_dir: Path, lang_to_id: dict[str, int], sot: int) -> None:
    """transformers' Whisper tokenizer finds language ids by position (sot + 1 + index in its list): warn if off."""
    try:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES
    except ImportError:
        return
    order = list(LANGUAGES)
    off = [t for t, i in lang_to_id.items() if t[2:-2] not in order or i != sot + 1 + order.index(t[2:-2])]
    if off:
        log.warning("%s: language tokens %s are not where transformers' WhisperTokenizer expects them; its "
                    "language prefix will be wrong (generate(language=...) is not affected)", ct2_dir, off[:5])


# ------------------------------------------------------------------------------------- parity check

# Chosen so that whisper-base gives long, non-trivial transcripts of espeak-ng's voice (a greeting it turns
# into "¡Gracias!" would compare two one-token outputs).
SPANISH_SENTENCES = (
    "Gracias por llamar. Por favor, espere en la línea.",
    "Su cita con el médico es el martes a las diez.",
    "Necesito cambiar la dirección de mi cuenta.",
)


@dataclass(frozen=True)
class Clips:
    audios: tuple[np.ndarray, ...] = field(repr=False)  # 16 kHz mono float32
    texts: tuple[str, ...]  # what each clip says ("" for a tone or an unknown clip)
    source: str  # "espeak-ng", "tone" (espeak-ng missing) or "given"


def speech_clips(sentences: Sequence[str] = SPANISH_SENTENCES, voice: str = "es") -> Clips:
    """Short clips spoken by espeak-ng, at 16 kHz; plain tones (said so in ``source``) when it is missing."""

    exe = shutil.which("espeak-ng")
    if exe is None:
        log.warning("espeak-ng is not installed (apt-get install espeak-ng); verifying on tones, not speech")
        t = np.arange(16000, dtype=np.float32) / 16000
        tones = tuple((0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (220.0, 440.0, 880.0))
        return Clips(tones, ("",) * len(tones), "tone")
    audios = []
    with tempfile.TemporaryDirectory(prefix="speechtl-clips-") as tmp:
        for i, text in enumerate(sentences):
            wav = Path(tmp) / f"clip{i}.wav"
            proc = subprocess.run([exe, "-v", voice, "-w", str(wav), text], capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0 or not wav.is_file():
                raise RuntimeError(f"espeak-ng -v {voice} failed on clip {i} ({text!r}): {proc.stderr.strip()}")
            audios.append(audio.load(wav, 16000))
    return Clips(tuple(audios), tuple(sentences), "espeak-ng")


@dataclass(frozen=True)
class ClipCheck:
    text: str  # what the clip says ("" when unknown)
    hf_ids: tuple[int, ...]  # transformers greedy token ids, without prompt and end token
    ct2_ids: tuple[int, ...]  # CTranslate2 greedy token ids, same convention
    transcript: str  # the CTranslate2 ids decoded


@dataclass(frozen=True)
class VerifyResult:
    identical: bool  # every clip decoded to the same token ids by both runtimes
    clip_source: str  # "espeak-ng", "tone" or "given"
    language: str | None  # language token forced in both runtimes (None: English-only model)
    max_new_tokens: int  # both outputs cut to this many tokens
    clips: tuple[ClipCheck, ...]  # per clip

    def to_json(self) -> dict:
        return asdict(self)


def _cut(ids: Sequence[int], prompt: Sequence[int], eot: int) -> tuple[int, ...]:
    """Drop a leading prompt (when present) and everything from the first end token."""
    ids = [int(i) for i in ids]
    if prompt and ids[: len(prompt)] == list(prompt):
        ids = ids[len(prompt) :]
    return tuple(ids[: ids.index(eot)] if eot in ids else ids)


def hf_generate_ids(hf_dir: Path | str, audios: Sequence[np.ndarray], language: str | None,
                    max_new_tokens: int) -> list[tuple[int, ...]]:
    """Greedy, no-timestamp token ids from a transformers Whisper dir (float32, CPU), prompt and end removed."""
    try:
        import torch
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration
    except ImportError as exc:
        raise ImportError(f"transformers Whisper needs {exc.name}: pip install 'speechtl[train]'") from exc

    model = WhisperForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    features = WhisperFeatureExtractor.from_pretrained(hf_dir)
    mel = features(list(audios), sampling_rate=16000, return_tensors="pt").input_features
    gen = model.generation_config
    prompt = [gen.decoder_start_token_id]
    kwargs: dict = {}
    if getattr(gen, "is_multilingual", False):
        kwargs = {"language": language, "task": "transcribe"}
        prompt += [gen.lang_to_id[f"<|{language}|>"], gen.task_to_id["transcribe"]]
    prompt.append(gen.no_timestamps_token_id)
    with torch.inference_mode():
        out = model.generate(mel, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                             return_timestamps=False, **kwargs)
    sequences = out.sequences if hasattr(out, "sequences") else out
    return [_cut(seq.tolist(), prompt, gen.eos_token_id) for seq in sequences]


def verify(hf_dir: Path | str, ct2_dir: Path | str, clips: Clips | Sequence[np.ndarray] | None = None, *,
           language: str = "es", max_new_tokens: int = 96) -> VerifyResult:
    """Decode ``clips`` (default: :func:`speech_clips`) greedily with both runtimes and compare the token ids.

    Both outputs are cut to ``max_new_tokens``. Returns the comparison; raising on a mismatch is the caller's
    choice (the registry refuses such an import).
    """
    if clips is None:
        clips = speech_clips()
    elif not isinstance(clips, Clips):
        clips = Clips(tuple(np.asarray(c, dtype=np.float32) for c in clips), ("",) * len(clips), "given")
    ct2 = CT2Whisper(ct2_dir)
    lang = language if ct2.multilingual else None
    # ask CTranslate2 for more than enough (see generate_ids) and cut both runtimes to the same length
    length = min(MAX_TARGET_LENGTH, 2 * max_new_tokens + len(ct2.prompt(lang)))
    ct2_ids = [_cut(ids, [], ct2.eot)[:max_new_tokens]
               for ids in ct2.generate_ids(clips.audios, lang, max_length=length)]
    hf_ids = [ids[:max_new_tokens] for ids in hf_generate_ids(hf_dir, clips.audios, lang, max_new_tokens)]
    checks = tuple(
        ClipCheck(text, h, c, ct2.tokenizer.decode(list(c)).strip())
        for text, h, c in zip(clips.texts, hf_ids, ct2_ids, strict=True)
    )
    for i, c in enumerate(checks):
        log.info("verify clip %d %s: %r", i, "same ids" if c.hf_ids == c.ct2_ids else "DIFFERENT ids", c.transcript)
    return VerifyResult(all(c.hf_ids == c.ct2_ids for c in checks), clips.source, lang, max_new_tokens, checks)
