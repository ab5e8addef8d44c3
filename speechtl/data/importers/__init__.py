"""Corpus importers: find the utterances of a corpus on disk, one module per format.

An importer only *finds* utterances: it yields :class:`speechtl.data.manifest.RawItem`
records with the transcript exactly as the corpus gives it and the audio as a
path (or a segment of one, or in-memory samples). Decoding, resampling and
text normalization happen later, in :mod:`speechtl.data.prepare`, for every format
alike.

Every importer module has the same interface::

    NAME = "commonvoice"                          # registry name
    EXPECTS = "a directory with ..."              # what detect() looks for (for error messages)
    def detect(root: Path) -> bool                # cheap check that root looks like this format
    def read(root: Path, **options) -> Iterator[RawItem]

Shared rules: nothing is silently dropped (an item whose audio is missing is
still yielded and the prepare stage quarantines it), malformed lines raise
:class:`CorpusError` naming the file, the line and the field, duplicate ids
raise :class:`CorpusError` naming both places, and corpus metadata (gender,
age, accent, chapter, split, ...) is kept in ``RawItem.extra``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from speechtl.data.manifest import RawItem

log = logging.getLogger(__name__)

#: registry name -> module path; modules are imported on first use.
IMPORTERS: dict[str, str] = {
    "commonvoice": "speechtl.data.importers.commonvoice",
    "librispeech": "speechtl.data.importers.librispeech",
    "kaldi": "speechtl.data.importers.kaldi",
    "nemo": "speechtl.data.importers.nemo",
    "folder": "speechtl.data.importers.folder",
    "hf": "speechtl.data.importers.hf",
    "asterisk": "speechtl.data.importers.asterisk",
}

#: the order in which :func:`detect_format` asks; the most specific layouts first,
#: ``folder`` (any directory holding audio files) last.
DETECT_ORDER: tuple[str, ...] = ("hf", "kaldi", "commonvoice", "librispeech", "nemo", "asterisk", "folder")


class CorpusError(ValueError):
    """A corpus is malformed; the message names the file, the line number and the field."""


def where(path: Path | str, line_no: int | None = None) -> str:
    """``file:line`` (or just ``file``) for error messages."""
    return f"{path}:{line_no}" if line_no is not None else str(path)


class IdRegistry:
    """Remembers where each id was first seen; a second sighting raises :class:`CorpusError`."""

    def __init__(self, what: str = "utterance id") -> None:
        self.what = what
        self._seen: dict[str, str] = {}

    def add(self, item_id: str, place: str) -> None:
        first = self._seen.get(item_id)
        if first is not None:
            raise CorpusError(f"{place}: duplicate {self.what} {item_id!r} (first seen at {first})")
        self._seen[item_id] = place

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)


def get_importer(name: str) -> ModuleType:
    """The importer module registered as ``name``."""
    module_path = IMPORTERS.get(name)
    if module_path is None:
        raise ValueError(f"unknown corpus format {name!r}; known formats: {', '.join(sorted(IMPORTERS))}")
    return importlib.import_module(module_path)


def _expects(name: str, module: ModuleType | None) -> str:
    if module is None:
        return "(importer not installed)"
    text = getattr(module, "EXPECTS", None) or (module.__doc__ or "").strip().split("\n", 1)[0]
    return text or "(no description)"


def detect_format(root: Path | str) -> str:
    """Name of the first importer (in :data:`DETECT_ORDER`) whose ``detect`` accepts ``root``.

    A Hugging Face hub id is never guessed: pass ``format="hf"`` for those.
    """
    root = Path(root)
    if not root.exists():
        raise CorpusError(
            f"{root}: no such file or directory (for a Hugging Face hub id pass format='hf')"
        )
    tried: list[tuple[str, ModuleType | None]] = []
    for name in DETECT_ORDER:
        try:
            module = get_importer(name)
        except ModuleNotFoundError as exc:
            if exc.name != IMPORTERS[name]:
                raise
            log.warning("importer %r (%s) is registered but not installed; skipping it", name, IMPORTERS[name])
            tried.append((name, None))
            continue
        if module.detect(root):
            log.info("%s: detected corpus format %r", root, name)
            return name
        tried.append((name, module))
    lines = "\n".join(f"  {name}: {_expects(name, module)}" for name, module in tried)
    raise CorpusError(f"{root}: does not look like any known corpus format; each expects:\n{lines}")


def read_corpus(root: Path | str, format: str | None = None, **options: object) -> Iterator[RawItem]:
    """Yield every utterance of the corpus at ``root`` (format detected when not given).

    ``options`` go to the importer's ``read``; an option it does not take is an
    error that lists the ones it does. Ids are checked to be unique once more
    here, whatever the importer.
    """
    name = format or detect_format(root)
    module = get_importer(name)
    params = inspect.signature(module.read).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        accepted = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"importer {name!r} does not take option(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(accepted) or 'none'}"
            )
    # Hub ids ("org/name") must reach the hf importer as typed.
    target: Path | str = root if (name == "hf" and not Path(root).exists()) else Path(root)
    return _checked(name, module.read(target, **options))


def _checked(name: str, items: Iterator[RawItem]) -> Iterator[RawItem]:
    seen: set[str] = set()
    count = 0
    for item in items:
        if item.id in seen:
            raise CorpusError(f"importer {name!r} yielded utterance id {item.id!r} twice")
        seen.add(item.id)
        count += 1
        yield item
    log.info("%s importer: %d utterances", name, count)


__all__ = [
    "DETECT_ORDER",
    "IMPORTERS",
    "CorpusError",
    "IdRegistry",
    "detect_format",
    "get_importer",
    "read_corpus",
    "where",
]
