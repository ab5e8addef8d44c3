"""Kaldi data directory: ``wav.scp``, ``text``, ``utt2spk`` and optionally ``segments``, ``spk2gender``.

- ``wav.scp``: ``<id> <path>`` or ``<id> <command> |``. A command (an
  "extended filename" ending in ``|``) is run with the shell, its stdout is
  decoded in memory and the item carries ``samples``/``sample_rate`` and
  ``extra["wav_scp_command"]``. A command that fails, or whose output cannot
  be decoded, still yields its item, without audio and with
  ``extra["wav_scp_error"]``, so prepare quarantines it.
- ``segments`` (optional): ``<utt> <recording> <start_s> <end_s>``; the ids in
  wav.scp are then recordings and each segment becomes an item with
  ``offset_s``/``duration_s`` (an end of ``-1`` means "to the end").
- ``text``: ``<utt> <transcript>``; the transcript may be empty.
- ``utt2spk``: ``<utt> <speaker>``; ``spk2gender``: ``<speaker> <m|f>``.

Relative paths, and the working directory of commands, are taken against the
option ``base_dir`` (default: the data directory itself; Kaldi recipes
usually write absolute paths).

Consistency, in the spirit of ``utils/validate_data_dir.sh``: an id in
``text`` or ``utt2spk`` that is not an utterance (of ``segments``, or of
``wav.scp`` without segments), and a segment whose recording is not in
``wav.scp``, are :class:`CorpusError` naming the file, the line and the id: a
transcript without audio cannot be an item. The other way round nothing is
dropped: an utterance missing from ``text`` is yielded with ``text=""`` and
``extra["transcript_missing"]=True``; one missing from ``utt2spk`` has
``speaker=None``.
"""

from __future__ import annotations

import logging
import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.audio import AudioRejected, decode_bytes
from speechtl.data.importers import CorpusError, where
from speechtl.data.manifest import RawItem

log = logging.getLogger(__name__)

NAME = "kaldi"
EXPECTS = "a Kaldi data directory with wav.scp (and text, utt2spk, optionally segments)"


@dataclass(frozen=True)
class _Entry:
    value: str  # everything after the id, stripped
    line_no: int


def detect(root: Path) -> bool:
    root = Path(root)
    return root.is_dir() and (root / "wav.scp").is_file()


def _read_table(path: Path, field: str, *, allow_empty: bool = False) -> dict[str, _Entry]:
    """``<id> <value>`` lines; ids must be unique, ``value`` may be empty only when ``allow_empty``."""
    table: dict[str, _Entry] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            key = parts[0]
            value = parts[1].strip() if len(parts) > 1 else ""
            if not value and not allow_empty:
                raise CorpusError(f"{where(path, line_no)}: id {key!r} has no field '{field}'")
            first = table.get(key)
            if first is not None:
                raise CorpusError(
                    f"{where(path, line_no)}: duplicate id {key!r} (first at {where(path, first.line_no)})"
                )
            table[key] = _Entry(value, line_no)
    return table


@dataclass(frozen=True)
class _Segment:
    recording: str
    start_s: float
    end_s: float | None
    line_no: int


def _read_segments(path: Path) -> dict[str, _Segment]:
    segments: dict[str, _Segment] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            place = where(path, line_no)
            fields = line.split()
            if len(fields) != 4:
                raise CorpusError(f"{place}: {len(fields)} fields, expected '<utt> <recording> <start> <end>'")
            utt, rec, start_str, end_str = fields
            try:
                start, end = float(start_str), float(end_str)
            except ValueError:
                raise CorpusError(f"{place}: id {utt!r}: field 'start'/'end' is not a number") from None
            if not math.isfinite(start) or start < 0:
                raise CorpusError(f"{place}: id {utt!r}: field 'start' is {start_str}, must be >= 0")
            if end != -1 and (not math.isfinite(end) or end <= start):
                raise CorpusError(f"{place}: id {utt!r}: field 'end' is {end_str}, must exceed start {start_str}")
            if utt in segments:
                raise CorpusError(f"{place}: duplicate id {utt!r} (first at {where(path, segments[utt].line_no)})")
            segments[utt] = _Segment(rec, start, None if end == -1 else end, line_no)
    return segments


def _run_command(command: str, base_dir: Path, timeout_s: float) -> tuple[np.ndarray, int]:
    """Run a wav.scp pipe command and decode its stdout; raises RuntimeError with the reason."""

    try:
        proc = subprocess.run(command, shell=True, cwd=base_dir, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"command timed out after {timeout_s:g} s") from None
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"command exited with status {proc.returncode}: {stderr[-1] if stderr else 'no stderr'}")
    try:
        return decode_bytes(proc.stdout)
    except AudioRejected as exc:
        raise RuntimeError(f"command output is not decodable audio: {exc.detail}") from None


class _Recordings:
    """Resolves wav.scp entries to a path or to decoded samples (the last command's output is cached)."""

    def __init__(self, wav_scp: Path, entries: dict[str, _Entry], base_dir: Path, timeout_s: float) -> None:
        self.wav_scp = wav_scp
        self.entries = entries
        self.base_dir = base_dir
        self.timeout_s = timeout_s
        self._cached: tuple[str, np.ndarray | None, int | None, str | None] | None = None

    def item_audio(self, rec: str, start_s: float, end_s: float | None) -> dict[str, Any]:
        """RawItem keyword arguments for the audio of ``rec`` between ``start_s`` and ``end_s``."""
        entry = self.entries[rec]
        value = entry.value
        if not value.endswith("|"):
            path = Path(value)
            return {
                "audio_path": path if path.is_absolute() else self.base_dir / path,
                "offset_s": start_s,
                "duration_s": None if end_s is None else end_s - start_s,
                "extra": {},
            }
        command = value[:-1].strip()
        extra: dict[str, Any] = {"wav_scp_command": command, "source": where(self.wav_scp, entry.line_no)}
        if self._cached is None or self._cached[0] != rec:
            try:
                samples, rate = _run_command(command, self.base_dir, self.timeout_s)
                self._cached = (rec, samples, rate, None)
            except RuntimeError as exc:
                log.warning("%s: recording %r: %s", where(self.wav_scp, entry.line_no), rec, exc)
                self._cached = (rec, None, None, str(exc))
        _, samples, rate, error = self._cached
        if samples is None or rate is None:
            extra["wav_scp_error"] = error
            return {"extra": extra}
        if start_s > 0 or end_s is not None:
            first = int(round(start_s * rate))
            last = None if end_s is None else int(round(end_s * rate))
            samples = samples[first:last]
            extra["recording_offset_s"] = start_s
        return {"samples": samples, "sample_rate": rate, "extra": extra}


def read(root: Path, *, base_dir: Path | str | None = None, command_timeout_s: float = 600.0) -> Iterator[RawItem]:
    """Yield the utterances of a Kaldi data directory (see the module docstring for the rules)."""
    root = Path(root)
    wav_scp = root / "wav.scp"
    if not wav_scp.is_file():
        raise CorpusError(f"{wav_scp}: not found (a Kaldi data directory needs wav.scp)")
    base = Path(base_dir) if base_dir is not None else root
    recordings = _read_table(wav_scp, "path")
    segments = _read_segments(root / "segments") if (root / "segments").is_file() else None
    utterances: list[str] = list(segments) if segments is not None else list(recordings)
    known = set(utterances)
    utt_file = "segments" if segments is not None else "wav.scp"

    if segments is not None:
        for utt, seg in segments.items():
            if seg.recording not in recordings:
                raise CorpusError(
                    f"{where(root / 'segments', seg.line_no)}: id {utt!r}: recording {seg.recording!r} "
                    f"is not in {wav_scp}"
                )

    texts: dict[str, _Entry] = {}
    if (root / "text").is_file():
        texts = _read_table(root / "text", "text", allow_empty=True)
    else:
        log.warning("%s: no 'text' file; every utterance is yielded with an empty transcript", root)
    utt2spk: dict[str, _Entry] = {}
    if (root / "utt2spk").is_file():
        utt2spk = _read_table(root / "utt2spk", "speaker")
    for name, table in (("text", texts), ("utt2spk", utt2spk)):
        for utt, entry in table.items():
            if utt not in known:
                raise CorpusError(
                    f"{where(root / name, entry.line_no)}: id {utt!r} is not an utterance of {root / utt_file}"
                )
    genders: dict[str, _Entry] = {}
    if (root / "spk2gender").is_file():
        genders = _read_table(root / "spk2gender", "gender")

    audio = _Recordings(wav_scp, recordings, base, command_timeout_s)
    missing_text = 0
    for utt in utterances:
        if segments is not None:
            seg = segments[utt]
            kwargs = audio.item_audio(seg.recording, seg.start_s, seg.end_s)
            kwargs["extra"]["recording"] = seg.recording
        else:
            kwargs = audio.item_audio(utt, 0.0, None)
        extra = kwargs.pop("extra")
        speaker = utt2spk[utt].value if utt in utt2spk else None
        if speaker is not None and speaker in genders:
            extra["gender"] = genders[speaker].value
        text_entry = texts.get(utt)
        if text_entry is None:
            missing_text += 1
            extra["transcript_missing"] = True
        yield RawItem(
            id=utt, text=text_entry.value if text_entry else "", speaker=speaker, extra=extra, **kwargs
        )
    if missing_text:
        log.warning("%s: %d utterance(s) have no line in 'text'", root, missing_text)
