"""NeMo JSONL manifests: one JSON object a line with ``audio_filepath``, ``text``, ``duration``.

``root`` is a manifest file, or a directory holding ``*.json``/``*.jsonl``
manifests (all of them, or those named by the option ``manifest``). Lines are
read with :func:`speechtl.data.manifest.iter_manifest`: relative audio paths are
resolved against the manifest's folder and a missing ``id`` becomes the audio
file's stem.

NeMo marks a segment with ``offset`` (+ ``duration``): such a line becomes an
item with ``offset_s``/``duration_s``, and the ``offset`` key is not kept
(the prepared audio is the segment itself). Segments that carry no ``id`` of
their own get ``<stem>-<start_ms>-<end_ms>`` so that several segments of one
file stay distinct. Without ``offset``, ``duration`` only describes the file
and the whole file is used. ``speaker`` and every unknown key are kept
(``lang`` goes to ``extra["lang"]``; ``extra["manifest"]`` names the source
file).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from speechtl.data.importers import CorpusError, IdRegistry, where
from speechtl.data.manifest import ManifestError, RawItem, Utterance, iter_manifest

log = logging.getLogger(__name__)

NAME = "nemo"
EXPECTS = "a NeMo JSONL manifest (or a directory of *.json/*.jsonl) whose lines have 'audio_filepath' and 'text'"

SUFFIXES = (".json", ".jsonl")


def _looks_like_manifest(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    return isinstance(row, dict) and "audio_filepath" in row
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return False


def _candidates(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def detect(root: Path) -> bool:
    root = Path(root)
    if root.is_file():
        return _looks_like_manifest(root)
    if root.is_dir():
        return any(_looks_like_manifest(p) for p in _candidates(root))
    return False


def _manifests(root: Path, manifest: str | list[str] | None) -> list[Path]:
    if root.is_file():
        if manifest is not None:
            raise ValueError(f"nemo: option manifest={manifest!r} needs a directory as root, got the file {root}")
        return [root]
    if not root.is_dir():
        raise CorpusError(f"{root}: no such manifest file or directory")
    if manifest is None:
        found = [p for p in _candidates(root) if _looks_like_manifest(p)]
        if not found:
            raise CorpusError(f"{root}: no *.json/*.jsonl manifest with 'audio_filepath' lines found")
        return found
    names = [manifest] if isinstance(manifest, str) else list(manifest)
    paths = []
    for name in names:
        path = root / name
        if not path.is_file():
            raise CorpusError(f"{path}: manifest not found (option manifest={name!r})")
        paths.append(path)
    return paths


def _number(value: Any, place: str, utt_id: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CorpusError(f"{place} id={utt_id}: field '{key}' must be a finite number, got {value!r}")
    return float(value)


def _read_one(path: Path, ids: IdRegistry) -> Iterator[RawItem]:
    utterances = iter_manifest(path)
    with path.open(encoding="utf-8") as handle:  # a second pass over the lines, for their numbers
        line_numbers = (n for n, line in enumerate(handle, start=1) if line.strip())
        while True:
            try:
                utt = next(utterances)
            except StopIteration:
                return
            except ManifestError as exc:
                raise CorpusError(str(exc)) from exc
            yield _item(utt, where(path, next(line_numbers)), path, ids)


def _item(utt: Utterance, place: str, path: Path, ids: IdRegistry) -> RawItem:
    extra = dict(utt.extra)
    offset_s: float = 0.0
    duration_s: float | None = None
    utt_id = utt.id
    if "offset" in extra:
        offset_s = _number(extra.pop("offset"), place, utt_id, "offset")
        if offset_s < 0:
            raise CorpusError(f"{place} id={utt_id}: field 'offset' is {offset_s}, must be >= 0")
        if utt.duration is not None:
            duration_s = utt.duration
            if duration_s <= 0:
                raise CorpusError(f"{place} id={utt_id}: field 'duration' is {duration_s}, must be > 0")
        if utt_id == Path(utt.audio_filepath).stem:  # no id of its own: make the segment's id unique
            end = "end" if duration_s is None else f"{round((offset_s + duration_s) * 1000):07d}"
            utt_id = f"{utt_id}-{round(offset_s * 1000):07d}-{end}"
    if utt.lang is not None:
        extra.setdefault("lang", utt.lang)
    extra["manifest"] = path.name
    ids.add(utt_id, place)
    return RawItem(
        id=utt_id,
        text=utt.text,
        speaker=utt.speaker,
        audio_path=Path(utt.audio_filepath),
        offset_s=offset_s,
        duration_s=duration_s,
        extra=extra,
    )


def read(root: Path, *, manifest: str | list[str] | None = None) -> Iterator[RawItem]:
    """Yield every line of the manifest(s); ``manifest`` names files inside a root directory."""
    root = Path(root)
    ids = IdRegistry()
    for path in _manifests(root, manifest):
        log.info("nemo: reading %s", path)
        yield from _read_one(path, ids)
