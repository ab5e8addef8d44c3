"""LibriSpeech and Multilingual LibriSpeech (MLS).

LibriSpeech: ``<spk>/<chapter>/<spk>-<chapter>.trans.txt`` with lines
``ID TEXT`` and the audio ``ID.flac`` beside it, found anywhere under root
(so ``LibriSpeech/`` holding ``train-clean-100/``, ``dev-clean/``, ... works;
the option ``split`` picks one of those sub-directories). speaker = ``<spk>``,
``extra["chapter"]``, ``extra["split"]`` when the file lies under a split
directory, and ``extra["gender"]`` from ``SPEAKERS.TXT`` when there is one.

MLS: ``transcripts.txt`` (``ID<TAB>TEXT``) at root or in split directories
(``train/``, ``dev/``, ``test/``; option ``split``), audio
``audio/<spk>/<book>/<ID>.flac`` beside it (or ``.opus``/``.wav``, whichever
exists; a missing file still yields its item with the ``.flac`` path).
speaker = the first ``_``-separated field of the id, ``extra["book"]``,
``extra["split"]``, and ``extra["gender"]`` from ``metainfo.txt`` when there
is one.

A line holding only an id yields an empty transcript (prepare quarantines
it); a line whose id does not have the corpus's shape is a
:class:`CorpusError` naming file and line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from speechtl.data.importers import CorpusError, IdRegistry, where
from speechtl.data.manifest import RawItem

log = logging.getLogger(__name__)

NAME = "librispeech"
EXPECTS = (
    "<spk>/<chapter>/<spk>-<chapter>.trans.txt files (LibriSpeech) or transcripts.txt "
    "(+ audio/) at root or in train/dev/test (Multilingual LibriSpeech)"
)

MLS_SPLITS = ("train", "dev", "test")
MLS_AUDIO_EXTENSIONS = (".flac", ".opus", ".wav")
_LS_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_MLS_ID = re.compile(r"^([^_\s]+)_([^_\s]+)_([^_\s]+)$")


def _find_trans(root: Path) -> Path | None:
    for pattern in ("*/*/*.trans.txt", "*/*/*/*.trans.txt"):
        found = next(iter(root.glob(pattern)), None)
        if found is not None:
            return found
    return None


def _mls_transcripts(root: Path, split: str | None) -> list[Path]:
    if split is not None:
        path = root / split / "transcripts.txt"
        if not path.is_file() and (root / "transcripts.txt").is_file() and root.name == split:
            path = root / "transcripts.txt"
        return [path] if path.is_file() else []
    if (root / "transcripts.txt").is_file():
        return [root / "transcripts.txt"]
    return [root / s / "transcripts.txt" for s in MLS_SPLITS if (root / s / "transcripts.txt").is_file()]


def detect(root: Path) -> bool:
    root = Path(root)
    if not root.is_dir():
        return False
    return bool(_mls_transcripts(root, None)) or _find_trans(root) is not None


def _split_line(line: str, sep: str | None) -> tuple[str, str]:
    parts = line.split(sep, 1)
    utt_id = parts[0].strip()
    text = parts[1].strip() if len(parts) > 1 else ""
    return utt_id, text


def _read_table(path: Path, columns: int) -> dict[str, list[str]]:
    """A ``|``-separated metadata table (SPEAKERS.TXT, metainfo.txt); ``;`` starts a comment."""
    rows: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            cells = [c.strip() for c in line.split("|")]
            if cells[0].upper() in ("ID", "SPEAKER"):
                continue  # header row
            if len(cells) < columns or not cells[0]:
                log.warning("%s: metadata line has %d fields, expected at least %d; ignored",
                            where(path, line_no), len(cells), columns)
                continue
            rows.setdefault(cells[0], cells)
    return rows


def _speaker_genders(root: Path, name: str) -> dict[str, str]:
    for candidate in (root / name, root.parent / name):
        if candidate.is_file():
            return {spk: cells[1].upper() for spk, cells in _read_table(candidate, 2).items() if cells[1]}
    return {}


# ----------------------------------------------------------------- LibriSpeech


def _read_librispeech(root: Path, split: str | None) -> Iterator[RawItem]:
    base = root / split if split else root
    if not base.is_dir():
        raise CorpusError(f"{base}: split directory not found (option split={split!r})")
    genders = _speaker_genders(root, "SPEAKERS.TXT")
    ids = IdRegistry()
    for trans in sorted(base.rglob("*.trans.txt")):
        rel = trans.relative_to(root).parts
        split_name = rel[0] if len(rel) >= 4 else None
        with trans.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                place = where(trans, line_no)
                utt_id, text = _split_line(line, None)
                match = _LS_ID.match(utt_id)
                if match is None:
                    raise CorpusError(f"{place}: field 'id' is {utt_id!r}, expected <speaker>-<chapter>-<number>")
                ids.add(utt_id, place)
                speaker, chapter, _ = match.groups()
                extra: dict[str, object] = {"chapter": chapter}
                if split_name is not None:
                    extra["split"] = split_name
                if speaker in genders:
                    extra["gender"] = genders[speaker]
                yield RawItem(
                    id=utt_id, text=text, speaker=speaker, audio_path=trans.parent / f"{utt_id}.flac", extra=extra
                )


# ------------------------------------------------------------------------ MLS


def _mls_audio(audio_dir: Path, speaker: str, book: str, utt_id: str, preferred: list[str]) -> Path:
    folder = audio_dir / speaker / book
    for ext in preferred:
        candidate = folder / f"{utt_id}{ext}"
        if candidate.is_file():
            if preferred[0] != ext:  # the corpus uses this extension: try it first from now on
                preferred.remove(ext)
                preferred.insert(0, ext)
            return candidate
    return folder / f"{utt_id}{MLS_AUDIO_EXTENSIONS[0]}"


def _read_mls(root: Path, files: list[Path]) -> Iterator[RawItem]:
    genders = _speaker_genders(root, "metainfo.txt")
    ids = IdRegistry()
    preferred = list(MLS_AUDIO_EXTENSIONS)
    for transcripts in files:
        split_name = transcripts.parent.name if transcripts.parent != root else root.name
        audio_dir = transcripts.parent / "audio"
        with transcripts.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                place = where(transcripts, line_no)
                if "\t" not in line.rstrip("\r\n") and len(line.split()) > 1:
                    raise CorpusError(f"{place}: expected 'ID<TAB>TEXT', found no tab")
                utt_id, text = _split_line(line.rstrip("\r\n"), "\t")
                match = _MLS_ID.match(utt_id)
                if match is None:
                    raise CorpusError(f"{place}: field 'id' is {utt_id!r}, expected <speaker>_<book>_<number>")
                ids.add(utt_id, place)
                speaker, book, _ = match.groups()
                extra: dict[str, object] = {"book": book, "split": split_name}
                if speaker in genders:
                    extra["gender"] = genders[speaker]
                yield RawItem(
                    id=utt_id,
                    text=text,
                    speaker=speaker,
                    audio_path=_mls_audio(audio_dir, speaker, book, utt_id, preferred),
                    extra=extra,
                )


def read(root: Path, *, split: str | None = None) -> Iterator[RawItem]:
    """Yield the utterances of a LibriSpeech or MLS directory.

    ``split``: MLS ``train``/``dev``/``test`` or a LibriSpeech sub-directory
    such as ``dev-clean``; default: every split found.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    mls = _mls_transcripts(root, split)
    if mls:
        log.info("%s: reading MLS transcripts %s", root, ", ".join(str(p) for p in mls))
        yield from _read_mls(root, mls)
        return
    if split is not None and _mls_transcripts(root, None):
        raise CorpusError(f"{root / split / 'transcripts.txt'}: not found (option split={split!r})")
    yield from _read_librispeech(root, split)
