"""Prepare stage: importer items -> normalized audio + text -> manifest + quarantine.

Every item an importer yields ends in exactly one of two files: the manifest
(``manifest.jsonl``, audio rewritten as 16 kHz mono under ``audio/``) or the
quarantine (``quarantine.jsonl``, with the field and the reason it was
rejected). The run fails when more than ``max_reject_share`` of the items
were rejected, after both files are written so the user can look.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speechtl import faults
from speechtl.audio import AudioConfig, AudioRejected, prepare_file
from speechtl.data.manifest import QuarantineRecord, RawItem, Utterance, summarize, validate, write_jsonl
from speechtl.data.splits import SplitConfig, split
from speechtl.fsio import atomic_write_text, remove_stale
from speechtl.text.normalize import Normalizer, TextRejected, get_normalizer
from speechtl.workers import die_with_parent

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
QUARANTINE = "quarantine.jsonl"
SUMMARY = "summary.json"


class PrepareError(RuntimeError):
    """Data prep rejected more than the configured share of items."""


@dataclass(frozen=True)
class PrepareConfig:
    """How raw corpus items become manifest lines."""

    lang: str  # ISO 639-1 code of the transcripts; picks the text normalizer
    audio: AudioConfig = field(default_factory=AudioConfig)  # audio normalization and rejection limits
    text: dict[str, Any] = field(default_factory=dict)  # overrides for speechtl.text.normalize.TextConfig
    max_reject_share: float = 0.2  # fail when more than this share of items is rejected
    # transcript characters per second of (trimmed) audio above which text and audio cannot belong together
    # (speech runs at about 10-25; None: no check)
    max_chars_per_s: float | None = 50.0
    num_workers: int = 2  # worker processes for audio decoding and writing
    chunk_size: int = 16  # items handed to a worker at a time

    def __post_init__(self) -> None:
        if self.max_chars_per_s is not None and self.max_chars_per_s <= 0:
            raise ValueError(f"prepare: max_chars_per_s={self.max_chars_per_s} must be > 0 (or None: no check)")
        if not 0.0 <= self.max_reject_share <= 1.0:
            raise ValueError(f"prepare: max_reject_share={self.max_reject_share} must be within [0, 1]")
        if self.num_workers < 0:
            raise ValueError(f"prepare: num_workers={self.num_workers} must be >= 0 (0 = in this process)")


@dataclass(frozen=True)
class PrepareResult:
    manifest_path: Path
    quarantine_path: Path
    utterances: list[Utterance]
    rejected: list[QuarantineRecord]
    summary: dict[str, Any]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def audio_name(utt_id: str) -> str:
    """A file name for an utterance id (ids may hold '/' or spaces)."""
    return _UNSAFE.sub("_", utt_id.replace("/", "__")).strip("._") or "utt"


def _reject(item: RawItem, field_name: str, reason: str, detail: str) -> QuarantineRecord:
    source = str(item.audio_path) if item.audio_path is not None else item.extra.get("source")
    return QuarantineRecord(id=item.id, field=field_name, reason=reason, detail=detail, source=source, text=item.text)


def _prepare_one(
    item: RawItem, out_dir: Path, config: PrepareConfig, normalizer: Normalizer
) -> Utterance | QuarantineRecord:
    flagged = item.extra.get("reject")  # the importer knows the item is unusable, and why
    if flagged:
        return _reject(item, flagged["field"], flagged["reason"], flagged["detail"])
    if item.extra.get("transcript_missing") or not item.text.strip():
        return _reject(item, "text", "missing_transcript", "the corpus gives no transcript for this audio")
    longest = config.max_chars_per_s * config.audio.max_duration_s if config.max_chars_per_s else None
    if longest is not None and len(item.text) > 2 * longest:  # far too long for any accepted clip: not normalized
        return _reject(item, "text", "text_audio_mismatch",
                       f"{len(item.text)} characters, over twice what a clip of up to "
                       f"{config.audio.max_duration_s:g} s can say at {config.max_chars_per_s:g} per second")
    try:
        text = normalizer(item.text)
    except TextRejected as exc:
        return _reject(item, "text", exc.reason, exc.detail)
    if item.audio_path is None and item.samples is None:
        return _reject(item, "audio", "missing_audio", "the corpus gives no audio file for this transcript")
    dst = out_dir / "audio" / f"{audio_name(item.id)}.{'flac' if config.audio.output_format == 'flac' else 'wav'}"
    try:
        info = prepare_file(
            dst,
            config.audio,
            src=item.audio_path,
            samples=item.samples,
            sample_rate=item.sample_rate,
            offset_s=item.offset_s,
            duration_s=item.duration_s,
        )
    except AudioRejected as exc:
        return _reject(item, "audio", exc.reason, exc.detail)
    rate = len(text) / max(info.duration_s, 1e-3)
    if config.max_chars_per_s is not None and rate > config.max_chars_per_s:
        dst.unlink(missing_ok=True)
        return _reject(item, "text", "text_audio_mismatch",
                       f"{len(text)} characters on {info.duration_s:.2f} s of audio ({rate:.0f} per second; "
                       f"speech is below {config.max_chars_per_s:g})")
    extra = dict(item.extra)
    extra.setdefault("raw_text", item.text)
    if item.audio_path is not None:
        extra.setdefault("source", str(item.audio_path))
    if item.offset_s or item.duration_s is not None:
        extra.setdefault("source_offset_s", item.offset_s)
        extra.setdefault("source_duration_s", item.duration_s)
    extra["source_sample_rate"] = info.source_sample_rate
    extra["source_channels"] = info.source_channels
    return Utterance(
        id=item.id,
        audio_filepath=str(dst.resolve()),
        text=text,
        duration=round(info.duration_s, 4),
        speaker=item.speaker,
        lang=config.lang,
        extra=extra,
    )


def _work(args: tuple[list[RawItem], Path, PrepareConfig]) -> list[Utterance | QuarantineRecord]:
    items, out_dir, config = args
    normalizer = get_normalizer(config.lang, **config.text)
    return [_prepare_one(item, out_dir, config, normalizer) for item in items]


def _chunks(items: Iterable[RawItem], size: int) -> Iterable[list[RawItem]]:
    chunk: list[RawItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prepare(
    items: Iterable[RawItem],
    out_dir: Path | str,
    config: PrepareConfig,
    *,
    progress: Callable[[int], None] | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> PrepareResult:
    """Normalize every item into ``out_dir``; see the module docstring."""
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    remove_stale(out_dir, recursive=True)  # what a killed preparation left half-written
    seen: dict[str, int] = {}
    unique_items = []
    for n, item in enumerate(items):
        if item.id in seen:
            raise PrepareError(f"prepare: duplicate utterance id {item.id!r} (items {seen[item.id]} and {n})")
        seen[item.id] = n
        unique_items.append(item)

    jobs = [(chunk, out_dir, config) for chunk in _chunks(unique_items, config.chunk_size)]
    results: list[Utterance | QuarantineRecord] = []
    if config.num_workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.extend(_work(job))
            if progress:
                progress(len(job[0]))
            faults.point("preparation")  # clips written, no manifest yet
    else:
        with ProcessPoolExecutor(max_workers=config.num_workers, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            for job, done in zip(jobs, pool.map(_work, jobs), strict=True):
                results.extend(done)
                if progress:
                    progress(len(job[0]))
                faults.point("preparation")  # the other chunks still in the workers, no manifest yet

    utterances = [r for r in results if isinstance(r, Utterance)]
    rejected = [r for r in results if isinstance(r, QuarantineRecord)]
    problems = validate(utterances)
    if problems:  # our own output must be valid; anything else is a bug
        raise PrepareError("prepare produced an invalid manifest: " + "; ".join(problems[:5]))
    manifest_path = out_dir / MANIFEST
    quarantine_path = out_dir / QUARANTINE
    write_jsonl(manifest_path, utterances)
    write_jsonl(quarantine_path, rejected)

    summary = {
        "lang": config.lang,
        "items": len(results),
        **summarize(utterances),
        "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(f"{r.field}:{r.reason}" for r in rejected).most_common()),
        "normalizer": get_normalizer(config.lang, **config.text).name,
        "config": _config_dict(config),
        **(extra_summary or {}),
    }
    atomic_write_text(out_dir / SUMMARY, json.dumps(summary, ensure_ascii=False, indent=2) + "\n")

    share = len(rejected) / len(results) if results else 0.0
    if share > config.max_reject_share:
        raise PrepareError(
            f"prepare: {len(rejected)} of {len(results)} items ({share:.1%}) were rejected, more than "
            f"max_reject_share={config.max_reject_share:.0%}; see {quarantine_path} for each item's reason"
        )
    return PrepareResult(manifest_path, quarantine_path, utterances, rejected, summary)


def _config_dict(config: PrepareConfig) -> dict[str, Any]:
    return {**asdict(config), "audio": asdict(config.audio)}


def write_splits(
    utterances: list[Utterance], out_dir: Path | str, config: SplitConfig
) -> dict[str, Any]:
    """Write ``train/dev/test.jsonl`` (+ ``split_leftovers.jsonl``) and return their summaries."""
    out_dir = Path(out_dir)
    parts, leftovers = split(utterances, config)
    for name, utts in parts.items():
        write_jsonl(out_dir / f"{name}.jsonl", utts)
    write_jsonl(out_dir / "split_leftovers.jsonl", leftovers)
    summary = {name: summarize(utts) for name, utts in parts.items()}
    summary["leftovers"] = len(leftovers)
    summary["config"] = asdict(config)
    atomic_write_text(out_dir / "splits.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    return summary
