"""Manifests: the JSONL contract between every stage and every external tool.

One utterance a line, with the NeMo keys ``audio_filepath``, ``duration`` and
``text`` plus ``id``, ``speaker`` and ``lang``. Any JSONL holding at least
``audio_filepath`` and ``text`` is accepted wherever a manifest is read; the
other keys get documented defaults. Keys we do not know are kept in
``extra`` and written back, so nothing a user gave us is lost.

Also here: the quarantine record (an item rejected by data prep, with the
field and the reason), validation and the sentence key that splits
(:mod:`speechtl.data.splits`) and held-out checks compare texts by.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.fsio import atomic_write_text

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("audio_filepath", "text")
KNOWN_KEYS = ("id", "audio_filepath", "duration", "text", "speaker", "lang")


class ManifestError(ValueError):
    """A manifest line is unusable; the message names file, line, id and field."""


@dataclass(frozen=True)
class RawItem:
    """One utterance as an importer found it, before any normalization.

    Audio comes either as a file (``audio_path``, optionally a segment of it
    given by ``offset_s``/``duration_s``) or in memory (``samples`` at
    ``sample_rate``, e.g. from a Hugging Face dataset).
    """

    id: str  # unique within the corpus; becomes the manifest id
    text: str  # transcript exactly as the corpus gives it
    speaker: str | None = None  # speaker id; None when the corpus does not say
    audio_path: Path | None = None  # source audio file
    offset_s: float = 0.0  # segment start inside audio_path
    duration_s: float | None = None  # segment length; None = to the end
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)
    sample_rate: int | None = None  # rate of ``samples``
    extra: dict[str, Any] = field(default_factory=dict)  # corpus metadata kept as is


@dataclass(frozen=True)
class Utterance:
    """One manifest line."""

    id: str
    audio_filepath: str
    text: str
    duration: float | None = None  # seconds
    speaker: str | None = None
    lang: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        row = {
            "id": self.id,
            "audio_filepath": self.audio_filepath,
            "duration": self.duration,
            "text": self.text,
            "speaker": self.speaker,
            "lang": self.lang,
        }
        for key, value in self.extra.items():
            row.setdefault(key, value)
        return row

    @property
    def speaker_key(self) -> str:
        """Speaker used for disjoint splits: an unknown speaker counts as its own."""
        return self.speaker if self.speaker is not None else f"__utt__{self.id}"


@dataclass(frozen=True)
class QuarantineRecord:
    """An item data prep rejected: which item, which field, why."""

    id: str
    field: str  # "audio", "text" or "split"
    reason: str  # short code, e.g. "too_long", "bad_chars"
    detail: str  # human-readable explanation
    source: str | None = None  # the original audio path (or dataset row)
    text: str | None = None  # the original transcript

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------- I/O


def write_jsonl(path: Path | str, rows: Iterable[Utterance | QuarantineRecord | dict]) -> int:
    """Write rows atomically; returns the number of lines."""
    lines = []
    for row in rows:
        data = row if isinstance(row, dict) else row.to_json()
        lines.append(json.dumps(data, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def _utterance_from_row(row: Any, where: str, base_dir: Path) -> Utterance:
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: a manifest line must be a JSON object, got {type(row).__name__}")
    for key in REQUIRED_KEYS:
        if key not in row:
            raise ManifestError(f"{where}: missing required field '{key}'")
        if not isinstance(row[key], str):
            raise ManifestError(f"{where}: field '{key}' must be a string, got {type(row[key]).__name__}")
    audio = row["audio_filepath"]
    if not audio:
        raise ManifestError(f"{where}: field 'audio_filepath' is empty")
    audio_path = Path(audio)
    if not audio_path.is_absolute():
        audio = str(base_dir / audio_path)
    utt_id = row.get("id")
    if utt_id is None:
        utt_id = Path(row["audio_filepath"]).stem
    duration = row.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)):
        raise ManifestError(f"{where} id={utt_id}: field 'duration' must be a number, got {duration!r}")
    for key in ("speaker", "lang"):
        value = row.get(key)
        if value is not None and not isinstance(value, str | int):
            raise ManifestError(f"{where} id={utt_id}: field '{key}' must be a string, got {value!r}")
    speaker = row.get("speaker")
    return Utterance(
        id=str(utt_id),
        audio_filepath=audio,
        text=row["text"],
        duration=float(duration) if duration is not None else None,
        speaker=str(speaker) if speaker is not None else None,
        lang=row.get("lang"),
        extra={k: v for k, v in row.items() if k not in KNOWN_KEYS},
    )


def iter_manifest(path: Path | str) -> Iterator[Utterance]:
    """Yield utterances from any JSONL with at least ``audio_filepath`` and ``text``.

    Relative audio paths are resolved against the manifest's folder. A missing
    ``id`` becomes the audio file's stem (made unique by the caller's
    validation); missing ``speaker``/``lang``/``duration`` stay ``None``.
    """
    path = Path(path)
    base_dir = path.parent.resolve()
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from exc
            yield _utterance_from_row(row, where, base_dir)


def read_manifest(path: Path | str) -> list[Utterance]:
    return list(iter_manifest(path))


def read_quarantine(path: Path | str) -> list[QuarantineRecord]:
    with Path(path).open(encoding="utf-8") as handle:
        return [QuarantineRecord(**json.loads(line)) for line in handle if line.strip()]


# -------------------------------------------------------------- validation


def validate(utterances: Iterable[Utterance], *, check_files: bool = True) -> list[str]:
    """Problems found in a manifest, one message each (empty list = valid).

    Checks unique ids, non-empty text, positive durations and, optionally,
    that every audio file exists.
    """
    problems = []
    seen: Counter[str] = Counter()
    for utt in utterances:
        seen[utt.id] += 1
        if seen[utt.id] == 2:
            problems.append(f"id={utt.id}: duplicate id")
        if not utt.text.strip() and not utt.extra.get("nonspeech"):  # a clip without speech: its text is empty
            problems.append(f"id={utt.id}: field 'text' is empty")
        if utt.duration is not None and not utt.duration > 0:
            problems.append(f"id={utt.id}: field 'duration' is {utt.duration}, must be > 0")
        if check_files and not Path(utt.audio_filepath).is_file():
            problems.append(f"id={utt.id}: field 'audio_filepath' {utt.audio_filepath} does not exist")
    return problems


# ------------------------------------------------------------------ splits


def sentence_key(text: str) -> str:
    """The key under which two transcripts count as the same sentence."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if ch.isalnum() or ch.isspace())
    return " ".join(text.split())


def summarize(utterances: Iterable[Utterance]) -> dict[str, Any]:
    """Hours, utterance and speaker counts of a manifest."""
    utts = list(utterances)
    total_s = sum(u.duration or 0.0 for u in utts)
    return {
        "utterances": len(utts),
        "hours": round(total_s / 3600, 4),
        "speakers": len({u.speaker_key for u in utts}),
        "sentences": len({sentence_key(u.text) for u in utts}),
    }
