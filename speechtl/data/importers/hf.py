"""Hugging Face datasets: a ``save_to_disk`` directory, or a hub id when the network allows.

``root`` is a directory written by ``Dataset.save_to_disk`` or
``DatasetDict.save_to_disk`` (read with ``load_from_disk``), or a hub id such
as ``mozilla-foundation/common_voice_17_0`` (read with ``load_dataset``; pass
``format="hf"``, a hub id is never guessed).

The audio column is cast to ``Audio(decode=False)``: datasets >= 4 decodes
with torchcodec, which speechtl does not need. Each row's encoded bytes are
decoded here with :func:`speechtl.audio.decode_bytes` (soundfile, ffmpeg as a
fallback) into ``samples``/``sample_rate``; a row that only has a file path
becomes ``audio_path``. A row whose audio is absent or undecodable is still
yielded, without audio and with ``extra["audio_error"]``, so prepare
quarantines it.

Columns: ``text_column`` (auto: sentence, text, transcription,
normalized_text, transcript), ``speaker_column`` (auto: client_id,
speaker_id, speaker; none found = no speaker), ``id_column`` (auto: ``id``,
else the stem of the audio path, else the row index; :data:`ROW_INDEX` forces
the row index). Every other column whose value is JSON-serializable is kept
in ``extra``, with ``extra["split"]``.

``streaming=True`` iterates without materializing: hub datasets are loaded
with ``streaming=True``; a local directory (already memory-mapped by
``load_from_disk``) is read through ``to_iterable_dataset()``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.audio import AudioRejected, decode_bytes
from speechtl.data.importers import CorpusError, IdRegistry
from speechtl.data.manifest import RawItem

log = logging.getLogger(__name__)

NAME = "hf"
EXPECTS = "a Hugging Face datasets save_to_disk directory (dataset_dict.json, or state.json + dataset_info.json)"

TEXT_COLUMNS = ("sentence", "text", "transcription", "normalized_text", "transcript")
SPEAKER_COLUMNS = ("client_id", "speaker_id", "speaker")
ROW_INDEX = "__row_index__"  # id_column value: use the row index as the id
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def detect(root: Path) -> bool:
    root = Path(root)
    if not root.is_dir():
        return False
    if (root / "dataset_dict.json").is_file():
        return True
    return (root / "state.json").is_file() and (root / "dataset_info.json").is_file()


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            "reading Hugging Face datasets needs the 'datasets' package: pip install 'speechtl[hf]'"
        ) from exc
    return datasets


def _load(root: Path | str, split: str | None, config: str | None, streaming: bool,
          revision: str | None) -> tuple[str, list[tuple[str | None, Any]]]:
    """(a name for messages, [(split name, dataset), ...])."""
    datasets = _datasets()
    local = Path(root)
    if local.is_dir():
        if config is not None or revision is not None:
            raise ValueError(f"hf: options config/revision apply to hub ids, not to the local directory {local}")
        loaded = datasets.load_from_disk(str(local))
        source = str(local)
    else:
        hub_id = str(root)
        if not _HUB_ID.match(hub_id):
            raise CorpusError(f"{hub_id}: neither a local dataset directory nor a hub id like 'org/name'")
        log.info("hf: loading %s from the hub (config=%s, split=%s, streaming=%s)", hub_id, config, split, streaming)
        loaded = datasets.load_dataset(hub_id, name=config, split=split, streaming=streaming, revision=revision)
        source = hub_id
    if isinstance(loaded, datasets.DatasetDict | datasets.IterableDatasetDict):
        if split is not None:
            if split not in loaded:
                raise CorpusError(f"{source}: no split {split!r}; splits: {', '.join(loaded)}")
            parts = [(split, loaded[split])]
        else:
            parts = list(loaded.items())
    else:
        own = getattr(loaded, "split", None)
        own_name = str(own) if own is not None else None
        if split is not None and own_name is not None and own_name != split:
            raise CorpusError(f"{source}: the dataset is split {own_name!r}, not {split!r}")
        parts = [(split or own_name, loaded)]
    if streaming:
        parts = [(name, ds.to_iterable_dataset() if isinstance(ds, datasets.Dataset) else ds) for name, ds in parts]
    return source, parts


def _cast_audio(ds: Any, audio_column: str, where: str) -> Any:
    datasets = _datasets()
    features = getattr(ds, "features", None)
    if features is None:  # a streamed dataset with unknown features: nothing gets decoded anyway
        return ds
    if audio_column not in features:
        raise CorpusError(f"{where}: no audio column {audio_column!r}; columns: {', '.join(features)}")
    try:
        return ds.cast_column(audio_column, datasets.Audio(decode=False))
    except (TypeError, ValueError) as exc:
        raise CorpusError(f"{where}: column {audio_column!r} cannot be read as audio ({exc})") from exc


def _pick(columns: list[str], wanted: str | None, auto: tuple[str, ...], what: str, where: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise CorpusError(f"{where}: no {what} column {wanted!r}; columns: {', '.join(columns)}")
        return wanted
    return next((c for c in auto if c in columns), None)


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _audio(value: Any, base: Path | None) -> dict[str, Any]:
    """RawItem keyword arguments for one row's audio cell (never raises for bad audio)."""

    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        return {"extra": {"audio_error": f"audio cell is {type(value).__name__}, not a dict or path"}}
    path = value.get("path") or None
    extra: dict[str, Any] = {"source": path} if path else {}
    if value.get("array") is not None and value.get("sampling_rate"):
        samples = np.asarray(value["array"], dtype=np.float32)
        return {"samples": samples, "sample_rate": int(value["sampling_rate"]), "extra": extra}
    data = value.get("bytes")
    if data:
        try:
            samples, rate = decode_bytes(bytes(data))
        except AudioRejected as exc:
            extra["audio_error"] = exc.detail
            return {"extra": extra}
        return {"samples": samples, "sample_rate": rate, "extra": extra}
    if path:
        audio_path = Path(path)
        if not audio_path.is_absolute() and base is not None:
            audio_path = base / audio_path
        return {"audio_path": audio_path, "extra": extra}
    extra["audio_error"] = "audio cell has neither bytes nor a path"
    return {"extra": extra}


def _rows(source: str, split_name: str | None, ds: Any, ids: IdRegistry, base: Path | None, *,
          audio_column: str, text_column: str | None, speaker_column: str | None,
          id_column: str | None) -> Iterator[RawItem]:
    label = f"{source}[{split_name}]" if split_name else source
    ds = _cast_audio(ds, audio_column, label)
    columns: list[str] | None = None
    text_col = speaker_col = id_col = None
    id_from_path = False
    for index, row in enumerate(ds):
        place = f"{label} row {index}"
        if columns is None:  # resolve the columns on the first row (streamed datasets may not list them)
            columns = list(row)
            if audio_column not in columns:
                raise CorpusError(f"{place}: no audio column {audio_column!r}; columns: {', '.join(columns)}")
            text_col = _pick(columns, text_column, TEXT_COLUMNS, "text", label)
            if text_col is None:
                raise CorpusError(
                    f"{label}: no transcript column (tried {', '.join(TEXT_COLUMNS)}); columns: "
                    f"{', '.join(columns)}; pass text_column=..."
                )
            speaker_col = _pick(columns, speaker_column, SPEAKER_COLUMNS, "speaker", label)
            if id_column != ROW_INDEX:
                id_col = _pick(columns, id_column, ("id",), "id", label)
                cell = row[audio_column]
                id_from_path = id_col is None and isinstance(cell, dict | str) and bool(
                    cell.get("path") if isinstance(cell, dict) else cell
                )
            skipped = [c for c in columns if c not in (audio_column, text_col, speaker_col, id_col)
                       and not _jsonable(row[c])]
            if skipped:
                log.warning("%s: columns %s hold values that JSON cannot store; not kept in extra",
                            label, ", ".join(skipped))
            log.info("%s: text=%s speaker=%s id=%s", label, text_col, speaker_col,
                     id_col or ("audio path stem" if id_from_path else "row index"))
        kwargs = _audio(row[audio_column], base)
        extra: dict[str, Any] = kwargs.pop("extra")
        utt_id = None
        if id_col is not None:
            utt_id = row[id_col]
            if utt_id is None or str(utt_id) == "":
                raise CorpusError(f"{place}: field {id_col!r} (the id) is empty")
        elif id_from_path and extra.get("source"):
            utt_id = Path(str(extra["source"])).stem
        if utt_id is None:
            utt_id = f"{split_name}-{index:07d}" if split_name else f"{index:07d}"
        utt_id = str(utt_id)
        ids.add(utt_id, place)
        if "audio_error" in extra:
            log.warning("%s id=%s: %s", place, utt_id, extra["audio_error"])
        extra.setdefault("source", place)
        if split_name:
            extra["split"] = split_name
        for column in columns:
            if column not in (audio_column, text_col, speaker_col, id_col) and _jsonable(row[column]):
                extra.setdefault(column, row[column])
        text = row[text_col] if text_col is not None else None
        speaker = row[speaker_col] if speaker_col is not None else None
        yield RawItem(
            id=utt_id,
            text="" if text is None else str(text),
            speaker=None if speaker is None or str(speaker) == "" else str(speaker),
            extra=extra,
            **kwargs,
        )


def read(
    root: Path | str,
    *,
    split: str | None = None,
    config: str | None = None,
    audio_column: str = "audio",
    text_column: str | None = None,
    speaker_column: str | None = None,
    id_column: str | None = None,
    streaming: bool = False,
    revision: str | None = None,
) -> Iterator[RawItem]:
    """Yield the rows of a saved dataset (or a hub dataset); see the module docstring.

    ``split``: one split of a DatasetDict (default: all, in order);
    ``config``/``revision``: the hub configuration (e.g. a language) and revision.
    """
    source, parts = _load(root, split, config, streaming, revision)
    base = Path(root) if Path(root).is_dir() else None
    ids = IdRegistry()
    for split_name, ds in parts:
        yield from _rows(source, split_name, ds, ids, base, audio_column=audio_column, text_column=text_column,
                         speaker_column=speaker_column, id_column=id_column)
