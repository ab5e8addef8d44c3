"""Mozilla Common Voice: a language directory with ``*.tsv`` files and ``clips/``.

Each tsv (``validated.tsv``, ``train.tsv``, ``dev.tsv``, ``test.tsv``,
``other.tsv``, ``invalidated.tsv``, ...) has a header row; the columns are
found by name. ``path`` and ``sentence`` are required; every other column
(``client_id``, ``up_votes``, ``down_votes``, ``age``, ``gender``,
``accents``/``accent``, ``variant``, ``locale``, ``segment``,
``sentence_id``, ...) is kept in ``extra`` (an empty cell becomes ``None``).

Fields are tab-separated and never quoted: sentences may hold ``"`` so the
file is read with ``csv.QUOTE_NONE``.

id = clip file name without extension, speaker = ``client_id``, audio =
``clips/<path>``, ``extra["cv_split"]`` = the tsv the row came from. A clip
listed in several of the chosen tsv files is yielded once (from the first);
two rows with the same id inside one file, or two different clips with the
same stem, are a :class:`CorpusError`.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speechtl.data.importers import CorpusError, IdRegistry, where
from speechtl.data.manifest import RawItem

log = logging.getLogger(__name__)

NAME = "commonvoice"
EXPECTS = "a directory with clips/ and *.tsv files whose header has 'path' and 'sentence' (Common Voice)"

REQUIRED_COLUMNS = ("path", "sentence")
DEFAULT_SPLITS = ("train", "dev", "test")  # used when validated.tsv is absent
_INT_COLUMNS = ("up_votes", "down_votes")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def _header(path: Path) -> list[str] | None:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    return first.rstrip("\r\n").split("\t")


def detect(root: Path) -> bool:
    root = Path(root)
    if not root.is_dir() or not (root / "clips").is_dir():
        return False
    for tsv in sorted(root.glob("*.tsv")):
        header = _header(tsv)
        if header and all(col in header for col in REQUIRED_COLUMNS):
            return True
    return False


def _tsv_paths(root: Path, tsv: str | list[str] | tuple[str, ...] | None) -> list[Path]:
    if tsv is None:
        tsv = "validated"
        if not (root / "validated.tsv").is_file():
            tsv = [name for name in DEFAULT_SPLITS if (root / f"{name}.tsv").is_file()]
            if not tsv:
                found = ", ".join(p.name for p in sorted(root.glob("*.tsv"))) or "none"
                raise CorpusError(
                    f"{root}: neither validated.tsv nor train/dev/test.tsv found "
                    f"(tsv files present: {found}); pass tsv=... to choose"
                )
            log.info("%s: no validated.tsv, reading %s", root, "+".join(tsv))
    names = [tsv] if isinstance(tsv, str) else list(tsv)
    if not names:
        raise ValueError("commonvoice: option tsv is an empty list; name at least one tsv file")
    paths = []
    for name in names:
        path = root / (name if name.endswith(".tsv") else f"{name}.tsv")
        if not path.is_file():
            found = ", ".join(p.stem for p in sorted(root.glob("*.tsv"))) or "none"
            raise CorpusError(f"{path}: tsv file not found (option tsv={name!r}; available: {found})")
        if path not in paths:
            paths.append(path)
    return paths


def _value(column: str, cell: str) -> Any:
    if cell == "":
        return None
    if column in _INT_COLUMNS:
        try:
            return int(cell)
        except ValueError:
            return cell
    return cell


def _read_tsv(path: Path, root: Path, ids: IdRegistry, clips: dict[str, tuple[str, str, str]]) -> Iterator[RawItem]:
    split = path.stem
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = next(reader)
        except StopIteration:
            raise CorpusError(f"{where(path, 1)}: empty file, expected a header row") from None
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{where(path, 1)}: not UTF-8 ({exc.reason})") from exc
        missing = [col for col in REQUIRED_COLUMNS if col not in header]
        if missing:
            raise CorpusError(f"{where(path, 1)}: header lacks required column(s) {', '.join(missing)}")
        col = {name: i for i, name in enumerate(header)}
        i_path, i_sentence = col["path"], col["sentence"]
        i_client = col.get("client_id")
        others = [(name, i) for name, i in col.items() if name not in ("path", "sentence", "client_id")]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{where(path, reader.line_num + 1)}: not UTF-8 ({exc.reason})") from exc
            line_no = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            place = where(path, line_no)
            if len(row) != len(header):
                raise CorpusError(f"{place}: {len(row)} tab-separated fields, the header has {len(header)}")
            clip = row[i_path].strip()
            if not clip:
                raise CorpusError(f"{place}: field 'path' is empty")
            utt_id = Path(clip).stem
            sentence = row[i_sentence]
            if utt_id in ids:
                first_clip, first_place, first_sentence = clips[utt_id]
                if first_clip == clip and not first_place.startswith(f"{path}:"):
                    if first_sentence != sentence:
                        log.warning("%s: clip %s has a different sentence than at %s; keeping the first",
                                    place, clip, first_place)
                    continue  # the same clip in another chosen tsv: yield it once
                ids.add(utt_id, place)  # raises, naming both places
            ids.add(utt_id, place)
            clips[utt_id] = (clip, place, sentence)
            extra: dict[str, Any] = {"cv_split": split}
            for name, i in others:
                extra[name] = _value(name, row[i])
            speaker = row[i_client].strip() if i_client is not None else ""
            yield RawItem(
                id=utt_id,
                text=sentence,
                speaker=speaker or None,
                audio_path=root / "clips" / clip,
                extra=extra,
            )


def read(root: Path, *, tsv: str | list[str] | None = None) -> Iterator[RawItem]:
    """Yield the clips listed in the chosen tsv file(s).

    ``tsv``: a name (``"validated"``, ``"train"``, ``"other.tsv"``, ...) or a
    list of names; default ``"validated"``, or ``train+dev+test`` when the
    directory has no ``validated.tsv``.
    """
    root = Path(root)
    paths = _tsv_paths(root, tsv)
    ids = IdRegistry("clip id")
    clips: dict[str, tuple[str, str, str]] = {}
    count = 0
    for path in paths:
        for item in _read_tsv(path, root, ids, clips):
            count += 1
            yield item
    log.info("commonvoice %s: %d clips from %s", root, count, ", ".join(p.name for p in paths))
