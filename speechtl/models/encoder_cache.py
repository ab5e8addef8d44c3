"""On-disk cache of frozen encoder outputs: fp16, memory-mapped, one row per utterance.

Frozen layers compute the same thing every epoch, so they run once: each
utterance's output of the frozen encoder prefix (shape ``(positions,
d_model)``, 1500 x 512 for whisper-base) is stored as float16 in a numpy
memmap and training reads it back instead of running those layers.

A cache directory belongs to one *model key* (a hash of the frozen weights,
the stage they stop at, the compute precision and the feature settings; see
:func:`model_key`), so other weights never read it. Inside, a row is found by
its *utterance key*: the id plus the sha256 of the audio file's bytes. An
edited audio file gets a new key and its row is recomputed (the old one is
never read again); the same bytes written again (data prepared anew, another
run folder with ``train.cache_dir`` pointing here) keep their key and row.

The directory holds shards, each a ``NAME.f16`` memmap plus ``NAME.json``
(the keys of its rows, in order, and a blake2b digest of each row's bytes).
A shard's json is written last and atomically, so a crashed build leaves no
half-valid shard; what a killed build leaves (its temporary, or a shard
without its json) is held by no live writer's lock and is removed by the
next build (:func:`speechtl.fsio.remove_stale`). Each row is checked against its digest the first time a
process asks for it; a row that fails (a zero-filled or edited file of the
right size) is never read: it counts as missing, is rebuilt into a new
shard, and a warning names it. Shards written before digests existed are
read unchecked (one warning per shard). Several processes
(``accelerate launch``) each build a disjoint share of the missing rows into
their own shard; no central index is ever rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechtl import faults
from speechtl.audio import load as load_audio
from speechtl.data.manifest import Utterance
from speechtl.fsio import atomic_write_text, file_sha256, honour_umask, new_temporary, remove_stale
from speechtl.models.encoder_stages import num_encoder_stages
from speechtl.models.whisper import SAMPLE_RATE, token_budget
from speechtl.models.windows import window_groups, window_positions

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the layout or the meaning of a row changes
MEMO_BYTES = 2 << 30  # final encoder outputs a CachedEncoderTranscriber keeps in memory for decoding again


_file_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: each file is hashed once


def utterance_key(utt: Utterance) -> str:
    """Key of an utterance's row: its id + the sha256 of its audio file's bytes."""
    path = Path(utt.audio_filepath).resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise FileNotFoundError(f"id={utt.id}: field 'audio_filepath' {path} cannot be read ({exc.strerror})") from exc
    stamp = (str(path), st.st_size, st.st_mtime_ns)
    digest = _file_digests.get(stamp)
    if digest is None:
        digest = _file_digests[stamp] = file_sha256(path)
    return hashlib.sha256(f"{utt.id}\n{digest}".encode()).hexdigest()[:32]


def row_digest(row: np.ndarray) -> str:
    """blake2b (16 bytes) of a row's bytes."""
    return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).hexdigest()


def model_key(tensors: Sequence[tuple[str, Any]], settings: dict[str, Any]) -> str:
    """Hash of named tensors (the frozen weights) and JSON-able ``settings``."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, **settings}, sort_keys=True, default=str).encode())
    for name, tensor in tensors:
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(array.shape)}:{array.dtype}".encode())
        digest.update(array.view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return digest.hexdigest()[:32]


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


@dataclass(frozen=True)
class CacheStats:
    """What one :meth:`EncoderCache.ensure` call found and did."""

    hits: int  # rows found valid in the cache
    built: int  # rows computed by this process
    build_s: float  # seconds this process spent computing rows


class CachedRows:
    """Read-only rows for a list of utterances: ``rows[i]`` is a float16 (positions, d_model) view."""

    def __init__(self, entries: list[tuple[np.memmap, int]], row_shape: tuple[int, int]) -> None:
        self._entries = entries
        self.row_shape = row_shape

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> np.ndarray:
        data, row = self._entries[i]
        return data[row]

    def rows(self, indices: Sequence[int]) -> np.ndarray:
        """Stacked copy of several rows."""
        return np.stack([self[i] for i in indices])

    def part(self, start: int, stop: int) -> CachedRows:
        """The rows of utterances ``start`` to ``stop - 1``."""
        return CachedRows(self._entries[start:stop], self.row_shape)


class EncoderCache:
    """The cache directory of one model key under ``root``."""

    def __init__(self, root: Path | str, key: str, row_shape: tuple[int, int]) -> None:
        self.dir = Path(root) / key
        self.key = key
        self.row_shape = (int(row_shape[0]), int(row_shape[1]))
        self._maps: dict[str, np.memmap] = {}
        self._digests: dict[str, list[str] | None] = {}  # shard -> row digests (None: a shard without them)
        self._checked: set[tuple[str, int]] = set()  # rows whose digest matched in this process
        self._bad: set[tuple[str, int]] = set()  # rows whose digest did not: never read

    def _index(self) -> dict[str, tuple[str, int]]:
        index: dict[str, tuple[str, int]] = {}
        if not self.dir.is_dir():
            return index
        for meta_path in sorted(self.dir.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("encoder cache: ignoring unreadable shard index %s (%s)", meta_path, exc)
                continue
            data = meta_path.with_suffix(".f16")
            expected = len(meta["keys"]) * self.row_shape[0] * self.row_shape[1] * 2
            if tuple(meta["row_shape"]) != self.row_shape or not data.is_file() or data.stat().st_size != expected:
                log.warning("encoder cache: ignoring shard %s (shape or size does not match)", data)
                continue
            digests = meta.get("digests")
            if digests is None and meta_path.stem not in self._digests:
                log.warning("encoder cache: shard %s has no row digests (written by an older speechtl); read "
                            "unchecked", data)
            self._digests[meta_path.stem] = digests
            for row, utt_key in enumerate(meta["keys"]):
                if (meta_path.stem, row) not in self._bad:
                    index[utt_key] = (meta_path.stem, row)
        return index

    def _memmap(self, shard: str) -> np.memmap:
        if shard not in self._maps:
            path = self.dir / f"{shard}.f16"
            n = path.stat().st_size // (2 * self.row_shape[0] * self.row_shape[1])
            self._maps[shard] = np.memmap(path, dtype=np.float16, mode="r", shape=(n, *self.row_shape))
        return self._maps[shard]

    def _row_ok(self, utt: Utterance, shard: str, row: int) -> bool:
        """Whether the row matches its digest (checked once per process)."""
        if (shard, row) in self._checked:
            return True
        digests = self._digests.get(shard)
        if digests is not None and row_digest(self._memmap(shard)[row]) != digests[row]:
            log.warning("encoder cache: row %d of shard %s (id=%s) does not match its digest; it is rebuilt, "
                        "never read", row, self.dir / f"{shard}.f16", utt.id)
            self._bad.add((shard, row))
            return False
        self._checked.add((shard, row))
        return True

    def missing(self, utts: Sequence[Utterance]) -> list[int]:
        """Positions in ``utts`` with no valid row (a row failing its digest is not valid)."""
        index = self._index()
        out = []
        for i, utt in enumerate(utts):
            found = index.get(utterance_key(utt))
            if found is None or not self._row_ok(utt, *found):
                out.append(i)
        return out

    def build(self, utts: Sequence[Utterance], compute: Callable[[list[Utterance]], np.ndarray], *,
              batch_size: int, tag: str, progress: Callable[[int, int], None] | None = None) -> float:
        """Compute rows for ``utts`` in batches into a new shard; returns the seconds spent.

        ``compute(batch)`` returns an array of shape (len(batch), *row_shape);
        values must fit float16 (the error names the utterance otherwise).
        """
        if not utts:
            return 0.0
        self.dir.mkdir(parents=True, exist_ok=True)
        self.remove_stale()
        keys = [utterance_key(u) for u in utts]
        name = f"{tag}-{hashlib.sha256(''.join(keys).encode()).hexdigest()[:16]}"
        tmp, lock = new_temporary(self.dir / f"{name}.f16")  # held until the shard's json is written
        try:
            seconds, digests = self._fill(tmp, utts, compute, batch_size=batch_size, progress=progress)
            honour_umask(tmp)  # mkstemp made it readable by its owner only
            os.replace(tmp, self.dir / f"{name}.f16")
            meta = {"format": CACHE_FORMAT, "row_shape": list(self.row_shape), "keys": keys,
                    "ids": [u.id for u in utts], "digests": digests}
            atomic_write_text(self.dir / f"{name}.json", json.dumps(meta))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(lock)
        self._maps.pop(name, None)  # a shard of the same name (the same rows, rebuilt) was replaced
        self._bad = {b for b in self._bad if b[0] != name}
        self._checked = {c for c in self._checked if c[0] != name}
        log.info("encoder cache: %d rows in %.1f s (%.2f utterances/s) -> %s", len(utts), seconds,
                 len(utts) / max(seconds, 1e-9), self.dir / f"{name}.f16")
        return seconds

    def remove_stale(self) -> list[Path]:
        """Remove what killed builds left: temporaries, and shards whose json was never written."""
        removed = remove_stale(self.dir)
        removed += remove_stale(self.dir, pattern="*.f16", keep=lambda p: p.with_suffix(".json").is_file())
        return removed

    def _fill(self, tmp: Path, utts: Sequence[Utterance], compute: Callable[[list[Utterance]], np.ndarray], *,
              batch_size: int, progress: Callable[[int, int], None] | None) -> tuple[float, list[str]]:
        """Compute the rows of ``utts`` into the file ``tmp``; returns the seconds spent and each row's digest."""
        out = np.memmap(tmp, dtype=np.float16, mode="w+", shape=(len(utts), *self.row_shape))
        start = time.perf_counter()
        try:
            for lo in range(0, len(utts), batch_size):
                batch = list(utts[lo:lo + batch_size])
                rows = np.asarray(compute(batch), dtype=np.float32)
                if rows.shape != (len(batch), *self.row_shape):
                    raise ValueError(f"encoder cache: computed rows have shape {rows.shape}, expected "
                                     f"{(len(batch), *self.row_shape)}")
                half = rows.astype(np.float16)
                for j, utt in enumerate(batch):
                    if not np.isfinite(half[j]).all():
                        peak = float(np.abs(rows[j]).max())
                        raise ValueError(f"id={utt.id}: encoder output (max |x| = {peak:.3g}) does not fit "
                                         "float16; train without the encoder cache (cache_encoder=false)")
                out[lo:lo + len(batch)] = half
                faults.point("encoder-cache")  # a shard half written, no json
                if progress is not None:
                    progress(min(lo + batch_size, len(utts)), len(utts))
            out.flush()
        finally:
            del out
        rows = np.memmap(tmp, dtype=np.float16, mode="r", shape=(len(utts), *self.row_shape))
        digests = [row_digest(rows[i]) for i in range(len(utts))]  # of the bytes as written, read back
        del rows
        return time.perf_counter() - start, digests

    def open(self, utts: Sequence[Utterance]) -> CachedRows:
        """Rows for ``utts`` (every one must be present)."""
        index = self._index()
        entries = []
        for utt in utts:
            found = index.get(utterance_key(utt))
            if found is None:
                raise KeyError(f"id={utt.id}: no encoder cache row in {self.dir}")
            shard, row = found
            if not self._row_ok(utt, shard, row):
                raise KeyError(f"id={utt.id}: its encoder cache row in {self.dir} failed its digest")
            entries.append((self._memmap(shard), row))
        return CachedRows(entries, self.row_shape)

    def ensure(self, utts: Sequence[Utterance], compute: Callable[[list[Utterance]], np.ndarray], *,
               batch_size: int, rank: int = 0, world: int = 1, barrier: Callable[[], None] | None = None,
               progress: Callable[[int, int], None] | None = None) -> tuple[CachedRows, CacheStats]:
        """Build what is missing (process ``rank`` of ``world`` takes every world-th item) and open the rows.

        ``barrier`` is called (on every process) between building and opening.
        A process that still misses rows afterwards (no shared filesystem)
        builds them itself.
        """
        missing = self.missing(utts)
        hits = len(utts) - len(missing)
        mine = missing[rank::world]
        seconds = self.build([utts[i] for i in mine], compute, batch_size=batch_size, tag=f"r{rank}",
                             progress=progress)
        built = len(mine)
        if barrier is not None:
            barrier()
        still = self.missing(utts)
        if still:
            log.warning("encoder cache: %d rows built by other processes are not visible here (is %s on a "
                        "shared filesystem?); building them locally", len(still), self.dir)
            seconds += self.build([utts[i] for i in still], compute, batch_size=batch_size, tag=f"r{rank}-local",
                                  progress=progress)
            built += len(still)
        # a decoding batch that finds every row is not news (one line per batch drowned the log)
        log.log(logging.INFO if built else logging.DEBUG, "encoder cache %s: %d hits, %d built here", self.dir,
                hits, built)
        return self.open(utts), CacheStats(hits=hits, built=built, build_s=seconds)


# ------------------------------------------------------------------ Whisper


def stage_tensors(model: Any, stop: int) -> list[tuple[str, Any]]:
    """Named parameters and buffers of Whisper encoder stages ``[0, stop)`` (what a cache key covers)."""
    enc = model.model.encoder
    n_layers = len(enc.layers)
    prefixes = ["conv1.", "conv2.", "embed_positions."] if stop > 0 else []
    prefixes += [f"layers.{i}." for i in range(min(stop, n_layers + 1) - 1)]
    if stop > n_layers + 1:
        prefixes.append("layer_norm.")
    named = list(enc.named_parameters()) + list(enc.named_buffers())
    return sorted((n, t) for n, t in named if n.startswith(tuple(prefixes)))


def whisper_encoder_cache(asr: Any, stage: int, root: Path | str, *,
                          precision: str) -> tuple[EncoderCache, Callable[[list[Utterance]], np.ndarray]]:
    """The cache of Whisper encoder stages ``[0, stage)`` for ``asr``'s weights, and the function computing rows.

    ``precision`` ("no", "bf16", "fp16") is the autocast used to compute them;
    it is part of the model key, like the frozen weights and feature settings
    (hashing the weights is the costly part: build this once per model).
    """

    fe = asr.feature_extractor
    settings = {
        "stage": stage, "precision": precision, "layers": len(asr.model.model.encoder.layers),
        "features": {k: getattr(fe, k, None) for k in ("feature_size", "sampling_rate", "hop_length", "n_fft",
                                                       "chunk_length", "n_samples", "dither")},
    }
    if getattr(asr, "window_step_s", None) is not None:  # rows in windows sized to the clip (models.windows);
        settings["window_step_s"] = asr.window_step_s    # 30-s rows keep the keys they had before windows
    key = model_key(stage_tensors(asr.model, stage), settings)
    cfg = asr.model.config
    cache = EncoderCache(root, key, (cfg.max_source_positions, cfg.d_model))

    def compute(batch: list[Utterance]) -> np.ndarray:
        """Rows of ``batch``, each computed in its clip's window and zero after it (models.windows)."""
        audios = [load_audio(u.audio_filepath) for u in batch]
        out = np.zeros((len(batch), cfg.max_source_positions, cfg.d_model), np.float32)
        for group in window_groups([len(a) / SAMPLE_RATE for a in audios], getattr(asr, "window_step_s", None),
                                   len(batch)):
            feats = asr.features([audios[i] for i in group], ids=[batch[i].id for i in group])
            rows = _encode(asr, feats, 0, stage, precision).cpu().numpy()
            out[group, :rows.shape[1]] = rows
        return out

    return cache, compute


def _encode(asr: Any, x: Any, start: int, stop: int | None, precision: str) -> Any:
    """Encoder stages ``[start, stop)`` in eval mode, without gradients, under ``precision`` autocast; float32 out."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    was_training = asr.model.training
    asr.model.eval()
    try:
        with torch.no_grad(), torch.autocast(asr.device.type, dtype=dtype, enabled=dtype is not None):
            return asr.encode(x, start, stop).float()
    finally:
        asr.model.train(was_training)


def cache_whisper_encoder(asr: Any, utts: Sequence[Utterance], stage: int, root: Path | str, *, precision: str,
                          batch_size: int = 8, rank: int = 0, world: int = 1,
                          barrier: Callable[[], None] | None = None,
                          progress: Callable[[int, int], None] | None = None) -> tuple[CachedRows, CacheStats]:
    """Rows of Whisper encoder stages ``[0, stage)`` for ``utts``, built where missing."""
    cache, compute = whisper_encoder_cache(asr, stage, root, precision=precision)
    return cache.ensure(utts, compute, batch_size=batch_size, rank=rank, world=world, barrier=barrier,
                        progress=progress)


class CachedEncoderTranscriber:
    """Transcribes manifest utterances from cached outputs of a frozen Whisper encoder prefix.

    When an adaptation leaves encoder stages ``[0, stage)`` frozen (all of them
    for ``head``, the conv stem and lower layers for ``top-k``), the baseline
    and the adapted model share those stages' outputs: computing them once for
    every evaluation set and reading them back leaves only the remaining
    encoder stages and the decoder to run. Both systems read the very same
    rows, so the comparison stays fair; rows and the remaining stages run with
    the run's ``precision`` (bf16 where supported), which the pipeline records
    in each evaluation's metrics. ``stage=None`` caches the whole encoder.
    """

    def __init__(self, asr: Any, root: Path | str, *, precision: str, stage: int | None = None,
                 batch_size: int = 8, max_new_tokens: int = 128, num_beams: int = 1) -> None:

        total = num_encoder_stages(asr.model)
        stage = total if stage is None else stage
        if not 1 <= stage <= total:
            raise ValueError(f"encoder cache stage {stage} must be between 1 and the model's {total} stages")
        self.asr = asr
        self.root = Path(root)
        self.precision = precision
        self.stage = stage
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self._cache, self._compute = whisper_encoder_cache(asr, stage, self.root, precision=precision)
        self._memo: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # see _encoded
        self._memo_bytes = 0

    def prepare(self, utts: Sequence[Utterance], progress: Callable[[int, int], None] | None = None) -> CacheStats:
        """Build the rows missing for ``utts`` (call once with every set, before evaluating)."""
        _, stats = self._cache.ensure(utts, self._compute, batch_size=self.batch_size, progress=progress)
        return stats

    def transcribe_utterances(self, utts: Sequence[Utterance], lang: str, *, prompt: str | None = None,
                              batch_size: int = 8) -> list[str]:
        """Transcripts of ``utts``, decoded in batches of one encoder window each (``asr.batches``)."""
        out = [""] * len(utts)
        for group in window_groups([u.duration for u in utts], getattr(self.asr, "window_step_s", None), batch_size):
            chunk = [utts[i] for i in group]
            hidden = self._encoded(chunk)
            budget = token_budget(max((u.duration or 0.0) for u in chunk) or None, self.max_new_tokens)
            extra = {"durations_s": [u.duration for u in chunk]} if getattr(self.asr, "takes_durations", False) else {}
            texts = self.asr.transcribe_encoded(hidden, lang, prompt=prompt, batch_size=batch_size,
                                                num_beams=self.num_beams, max_new_tokens=budget, **extra)
            for i, text in zip(group, texts, strict=True):
                out[i] = text
        return out

    def detect_utterances(self, utts: Sequence[Utterance], batch_size: int = 8) -> list[str]:
        """The language Whisper detects in each of ``utts`` (not forced), from the encoder outputs decoding uses."""
        out = [""] * len(utts)
        for group in window_groups([u.duration for u in utts], getattr(self.asr, "window_step_s", None), batch_size):
            found = self.asr.detect_languages_encoded(self._encoded([utts[i] for i in group]))
            for i, lang in zip(group, found, strict=True):
                out[i] = lang
        return out

    def _encoded(self, utts: Sequence[Utterance]) -> Any:
        """The final encoder outputs of ``utts``: the cached prefix rows through the stages above it.

        A run reads the same utterances with the same weights more than once (decoding without and with a
        prompt, language detection), so each utterance's output of the stages above the prefix is kept in
        memory (up to MEMO_BYTES, the least recently used dropped first) under its utterance key, its window's
        positions and the encoder weights' identity and in-place version: a weight changed in place (an
        optimizer step, ``load_state_dict``, the interpolation's next alpha) is a miss."""
        import torch

        encoder = self.asr.model.model.encoder
        weights = tuple((id(p), p._version) for p in encoder.parameters())
        step = getattr(self.asr, "window_step_s", None)  # one window for the batch: its rows' first positions
        positions = max(window_positions(u.duration, step, self._cache.row_shape[0]) for u in utts)
        keys = [(weights, utterance_key(u), positions) for u in utts]
        missing = [i for i, key in enumerate(keys) if key not in self._memo]
        if missing:
            part = [utts[i] for i in missing]
            rows, _ = self._cache.ensure(part, self._compute, batch_size=self.batch_size)
            hidden = torch.from_numpy(rows.rows(list(range(len(part))))[:, :positions]).to(torch.float32)
            if self.stage < num_encoder_stages(self.asr.model):  # the stages above the frozen prefix
                hidden = _encode(self.asr, hidden, self.stage, None, self.precision)
            for i, row in zip(missing, hidden, strict=True):
                self._memo[keys[i]] = row.clone()  # a view would keep its whole batch alive
                self._memo_bytes += row.numel() * row.element_size()
        for key in keys:
            self._memo.move_to_end(key)
        out = torch.stack([self._memo[key] for key in keys])
        while self._memo_bytes > MEMO_BYTES and len(self._memo) > len(keys):
            _, row = self._memo.popitem(last=False)
            self._memo_bytes -= row.numel() * row.element_size()
        return out
