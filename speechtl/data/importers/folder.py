"""A folder of audio files, each with a same-stem ``.txt`` transcript beside it.

Audio files (``wav flac mp3 ogg opus m4a webm aac``, any case) are found
anywhere under root. id = the path relative to root without extension, ``/``
replaced by ``__`` (``spk1/a.wav`` -> ``spk1__a``); speaker = the first
directory level under root (``None`` for files directly in root).

Nothing is dropped:

- audio without a ``.txt`` sidecar is yielded with ``text=""`` and
  ``extra["transcript_missing"]=True``;
- a ``.txt`` without audio is yielded with ``audio_path=None`` and
  ``extra["audio_missing"]=True`` (the transcript's path in ``extra["source"]``);
  prepare quarantines both. So a stray ``README.txt`` shows up in the
  quarantine, not in the training data.

Two audio files with the same stem (``a.wav`` and ``a.mp3``) would get the
same id: that is a :class:`CorpusError` naming both. Transcripts are read as
UTF-8 (a BOM is allowed) and stripped; nothing else is changed. A transcript
that is not UTF-8 comes back flagged ``bad_encoding`` (prepare quarantines
it), so one bad sidecar never stops the corpus.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from speechtl.data.importers import CorpusError
from speechtl.data.manifest import RawItem

log = logging.getLogger(__name__)

NAME = "folder"
EXPECTS = "a directory with audio files (" + "/".join(
    ("wav", "flac", "mp3", "ogg", "opus", "m4a", "webm", "aac")
) + ") anywhere below it, each with a same-stem .txt transcript"

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".aac")
TEXT_EXTENSION = ".txt"


def _walk(root: Path) -> Iterator[Path]:
    """Every file under root, in a stable (sorted) order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def detect(root: Path) -> bool:
    root = Path(root)
    if not root.is_dir():
        return False
    return any(path.suffix.lower() in AUDIO_EXTENSIONS for path in _walk(root))


def utterance_id(rel: Path) -> str:
    """``spk1/sub/a.wav`` -> ``spk1__sub__a``."""
    return "__".join(rel.with_suffix("").parts)


def _read_text(path: Path) -> tuple[str, dict[str, object]]:
    """The transcript, or "" and a ``reject`` (reason ``bad_encoding``) when the file is not UTF-8: one such
    sidecar goes to the quarantine instead of stopping the whole corpus."""
    try:
        return path.read_text(encoding="utf-8-sig").strip(), {}
    except UnicodeDecodeError as exc:
        detail = f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        return "", {"reject": {"field": "text", "reason": "bad_encoding", "detail": detail}, "source": str(path)}


def read(root: Path) -> Iterator[RawItem]:
    """Yield one item per audio file and one per transcript without audio (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    audio: dict[Path, Path] = {}  # relative path without extension -> audio file
    texts: dict[Path, Path] = {}
    for path in _walk(root):
        suffix = path.suffix.lower()
        stem = path.relative_to(root).with_suffix("")
        if suffix in AUDIO_EXTENSIONS:
            if stem in audio:
                raise CorpusError(
                    f"{path}: duplicate utterance id {utterance_id(stem)!r} (also {audio[stem]}); "
                    "rename one of the two files"
                )
            audio[stem] = path
        elif suffix == TEXT_EXTENSION:
            texts[stem] = path
    ids: dict[str, Path] = {}
    missing_text = missing_audio = 0
    for stem in sorted(set(audio) | set(texts)):
        utt_id = utterance_id(stem)
        source = audio.get(stem) or texts[stem]
        if utt_id in ids:  # 'a__b.wav' at root and 'a/b.wav' map to the same id
            raise CorpusError(f"{source}: duplicate utterance id {utt_id!r} (also {ids[utt_id]})")
        ids[utt_id] = source
        speaker = stem.parts[0] if len(stem.parts) > 1 else None
        extra: dict[str, object] = {}
        text = ""
        if stem in texts:
            text, problem = _read_text(texts[stem])
            extra.update(problem)
        else:
            extra["transcript_missing"] = True
            missing_text += 1
        audio_path = audio.get(stem)
        if audio_path is None:
            extra["audio_missing"] = True
            extra["source"] = str(texts[stem])
            missing_audio += 1
        yield RawItem(id=utt_id, text=text, speaker=speaker, audio_path=audio_path, extra=extra)
    if missing_text:
        log.warning("%s: %d audio file(s) have no .txt transcript (yielded with empty text)", root, missing_text)
    if missing_audio:
        log.warning("%s: %d .txt file(s) have no audio file (yielded without audio)", root, missing_audio)
