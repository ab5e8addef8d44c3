"""A machine-wide store of transcripts: (model weights, decoding settings, audio content) -> hypothesis.

The unadapted model is decoded again by every run on clips it has already
heard: a re-run, the ``es`` and ``es-medical`` recipes on the same Asterisk
and Colombian prompts, the interpolation's alpha 0 (the base weights); a
re-run whose training gives the same weights decodes every other system again
too. A :class:`DecodeCache` wraps a transcriber and answers each utterance
whose key it holds without decoding; the rest are decoded in one call and
stored. It stores the language a Whisper model detects the same way
(:meth:`DecodeCache.detect_utterances`).

The key of an utterance hashes the model key (every weight tensor, see
:func:`weights_key`; the files of an exported model, see :func:`folder_key`),
the caller's decoding settings (transcriber kind,
encoder-cache stage and precision, beams), the language, the prompt, the
batch size and the sha256 of the audio file's bytes, so a change to any of
them is a miss. A hypothesis is the one the same model and settings gave
that audio; in a batch of other clips it can differ in the last bits of the
arithmetic, so a rare greedy token may differ from a fresh decode.

Storage: ``<cache_root>/decodes/<model key>.jsonl`` (``$SPEECHTL_DECODE_CACHE`` moves it), one row per
hypothesis, appended under an exclusive lock. Each row carries a digest of
its key and text, checked on read: a torn or edited row is ignored, logged,
and its utterance decoded again (the new row, appended later, wins).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechtl import audio
from speechtl.cache import cache_root
from speechtl.data.manifest import Utterance
from speechtl.fsio import file_sha256
from speechtl.models.encoder_cache import model_key

log = logging.getLogger(__name__)

FORMAT = 1  # bump when a stored hypothesis would mean something else
_audio_digests: dict[tuple[str, int, int], str] = {}


def weights_key(model: Any, settings: dict[str, Any] | None = None) -> str:
    """Hash of every parameter and buffer of a torch module, plus JSON-able ``settings``."""
    return model_key(sorted(model.state_dict().items()), {"decode_cache": FORMAT, **(settings or {})})


def folder_key(folder: Path | str) -> str:
    """Hash of the names and bytes of every file directly in ``folder`` (an exported model)."""
    folder = Path(folder)
    files = sorted((p.name, file_sha256(p)) for p in folder.iterdir() if p.is_file())
    if not files:
        raise FileNotFoundError(f"decode cache: {folder} holds no files to key a model by")
    raw = json.dumps([FORMAT, files])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def audio_digest(utt: Utterance) -> str:
    """sha256 of the utterance's audio file (memoized by resolved path, size and mtime)."""
    path = Path(utt.audio_filepath).resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise FileNotFoundError(f"utterance {utt.id}: field 'audio_filepath' {path} cannot be read "
                                f"({exc.strerror})") from exc
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _audio_digests:
        _audio_digests[memo] = file_sha256(path)
    return _audio_digests[memo]


def decode_cache_root() -> Path:
    """``$SPEECHTL_DECODE_CACHE`` when set and not empty, else ``<cache_root>/decodes``."""
    return Path(os.environ.get("SPEECHTL_DECODE_CACHE") or cache_root() / "decodes")


def _row_check(key: str, hyp: str) -> str:
    return hashlib.sha256(f"{key}\0{hyp}".encode()).hexdigest()[:16]


def read_store(path: Path) -> tuple[dict[str, str], int]:
    """The valid rows of a store file (key -> hypothesis; later rows win) and the count of rows ignored."""
    found: dict[str, str] = {}
    bad = 0
    if not path.is_file():
        return found, bad
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, hyp, check = row["key"], row["hyp"], row["check"]
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            if not isinstance(hyp, str) or check != _row_check(str(key), hyp):
                bad += 1
                continue
            found[key] = hyp
    return found, bad


class DecodeCache:
    """``transcriber`` (``transcribe_utterances`` or ``transcribe``) behind the store of ``model_key``."""

    def __init__(self, transcriber: Any, model_key: str, settings: dict[str, Any], *,
                 root: Path | str | None = None) -> None:
        self.inner = transcriber
        self.settings = json.dumps(settings, sort_keys=True, default=str)
        self.path = Path(root or decode_cache_root()) / f"{model_key}.jsonl"
        self.name = getattr(transcriber, "name", None) or type(transcriber).__name__
        self.hits = self.misses = 0
        self._store: dict[str, str] | None = None

    def __getattr__(self, name: str) -> Any:  # precision, prepare, root, ...: those of the wrapped transcriber
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _key(self, utt: Utterance, lang: str | None, prompt: str | None, batch_size: int, task: str) -> str:
        raw = [self.settings, lang, prompt, batch_size, audio_digest(utt)]
        if task != "transcribe":  # transcripts keep the keys they had before other tasks were stored
            raw.append(task)
        return hashlib.sha256(json.dumps(raw).encode("utf-8")).hexdigest()[:32]

    def _loaded(self) -> dict[str, str]:
        if self._store is None:
            self._store, bad = read_store(self.path)
            if bad:
                log.warning("decode cache %s: %d corrupt rows ignored; their utterances are decoded again",
                            self.path, bad)
        return self._store

    def transcribe_utterances(self, utts: Sequence[Utterance], lang: str, *, prompt: str | None = None,
                              batch_size: int = 8) -> list[str]:
        return self._stored(utts, (lang, prompt, batch_size, "transcribe"),
                            lambda batch: self._decode(batch, lang, prompt, batch_size))

    def detect_utterances(self, utts: Sequence[Utterance], batch_size: int = 8) -> list[str]:
        """The language the wrapped Whisper transcriber detects in each of ``utts`` (``detect_utterances``, else
        ``detect_languages`` on their audio), stored beside its transcripts."""
        def detect(batch: list[Utterance]) -> list[str]:
            by_utts = getattr(self.inner, "detect_utterances", None)
            if by_utts is not None:
                return list(by_utts(batch, batch_size))
            return list(self.inner.detect_languages([audio.load(u.audio_filepath) for u in batch], batch_size))

        return self._stored(utts, (None, None, batch_size, "language-id"), detect)

    def _stored(self, utts: Sequence[Utterance], request: tuple[str | None, str | None, int, str],
                compute: Callable[[list[Utterance]], list[str]]) -> list[str]:
        """Each utterance's stored answer to ``request`` (language, prompt, batch size, task), ``compute`` called
        once on those without one (and stored)."""
        store = self._loaded()
        keys = [self._key(u, *request) for u in utts]
        todo = [i for i, k in enumerate(keys) if k not in store]
        self.hits += len(utts) - len(todo)
        self.misses += len(todo)
        if todo:
            answers = compute([utts[i] for i in todo])
            self._append((keys[i], a) for i, a in zip(todo, answers, strict=True))
        return [store[k] for k in keys]

    def _decode(self, utts: list[Utterance], lang: str, prompt: str | None, batch_size: int) -> list[str]:
        by_utts = getattr(self.inner, "transcribe_utterances", None)
        if by_utts is not None:
            return list(by_utts(utts, lang, prompt=prompt, batch_size=batch_size))
        audios: list[np.ndarray] = [audio.load(u.audio_filepath, audio.TARGET_SAMPLE_RATE) for u in utts]
        return list(self.inner.transcribe(audios, lang, prompt=prompt, batch_size=batch_size))

    def _append(self, rows: Iterable[tuple[str, str]]) -> None:
        store = self._loaded()
        lines = []
        for key, hyp in rows:
            store[key] = hyp
            lines.append(json.dumps({"key": key, "hyp": hyp, "check": _row_check(key, hyp)}, ensure_ascii=False))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # rows of concurrent runs never interleave
            torn = False
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                torn = handle.read(1) != b"\n"
            text = ("\n" if torn else "") + "".join(line + "\n" for line in lines)  # a killed writer's torn row
            handle.write(text.encode("utf-8"))  # stays alone on its line
            handle.flush()
            os.fsync(handle.fileno())
