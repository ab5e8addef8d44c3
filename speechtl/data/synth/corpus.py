"""Synthetic speech for text-only adaptation: sentences x voices -> audio files.

Each sentence is spoken by several voices; a voice is a speaker (its id goes
into ``RawItem.speaker``), so the split can hold voices out. Two engines:

- ``espeak``: espeak-ng, many languages, robotic (see :mod:`speechtl.data.synth.espeak`).
- ``kokoro``: Kokoro-82M int8 ONNX from espeak-ng IPA (see :mod:`speechtl.data.synth.kokoro`).
  A voice is a seeded blend of the five base voices plus speed and pitch.

:func:`synthesize_corpus` writes ``out_dir/<voice_id>/<sentence_id>-<text hash>.wav``
(each written to a temporary name and renamed), skips files that exist
(resume), runs in a process pool, and passes every file through the
optional voice-agent channel (:mod:`speechtl.data.synth.channel`). Everything is
deterministic given the seeds: which voices exist, which voices say which
sentence, and each item's channel (gain, noise, SNR).

Failures: an item that fails to synthesize does not stop the run. It comes
back as a ``RawItem`` without audio whose ``extra["reject"]`` names the
field, reason and detail (sentence id, voice, engine, error), which
:func:`speechtl.data.prepare.prepare` turns into a quarantine record. Only when
no item at all has audio (every one failed, none existed) does
:class:`SynthError` stop the run: that is a setup problem.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import logging
import multiprocessing
import os
import random
import re
import sys
import wave
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechtl import faults
from speechtl.data.manifest import RawItem, sentence_key
from speechtl.data.splits import SplitConfig, assign
from speechtl.data.synth import SynthError, Voice, espeak, kokoro
from speechtl.data.synth.channel import ChannelConfig, apply_channel, draw_channel, simulate_channel
from speechtl.data.synth.store import SynthStore, clip_key, store_root
from speechtl.fsio import atomic_write_bytes, atomic_write_text, remove_stale
from speechtl.text.normalize import TextRejected, get_normalizer
from speechtl.workers import die_with_parent

log = logging.getLogger(__name__)

__all__ = [
    "ChannelConfig", "SynthConfig", "SynthError", "Voice", "list_voices", "read_sentences", "simulate_channel",
    "synthesize", "synthesize_corpus",
]  # fmt: skip

ENGINES = ("kokoro", "espeak")
SAFE_ID = re.compile(r"^\w[\w.\-]*$")
# fork needs no `if __name__ == "__main__"` guard in the caller's script; workers build their own ONNX session.
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize and how."""

    engine: str = "kokoro"  # "kokoro" (natural, 24 kHz) or "espeak" (robotic, 22.05 kHz, many languages)
    lang: str = "es"  # espeak-ng language/voice name, e.g. "es", "es-419", "en-us" (also Kokoro's phonemizer)
    num_voices: int = 8  # how many distinct voices (speakers) exist
    voices_per_sentence: int | None = None  # how many seeded voices say each sentence; None = all
    seed: int = 0  # seed of the voice list and of the voice choice per sentence
    num_workers: int = 2  # worker processes; 1 = run in this process
    channel: ChannelConfig | None = None  # voice-agent channel applied to every file; None = clean audio

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"synth: field 'engine' is {self.engine!r}, must be one of {ENGINES}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", self.lang or ""):
            raise ValueError(f"synth: field 'lang' is {self.lang!r}, must be an espeak-ng language name like 'es'")
        if self.num_voices < 1:
            raise ValueError(f"synth: field 'num_voices' is {self.num_voices}, must be >= 1")
        if self.voices_per_sentence is not None and not 1 <= self.voices_per_sentence <= self.num_voices:
            raise ValueError(
                f"synth: field 'voices_per_sentence' is {self.voices_per_sentence}, "
                f"must be in [1, num_voices={self.num_voices}] or None"
            )
        if self.num_workers < 1:
            raise ValueError(f"synth: field 'num_workers' is {self.num_workers}, must be >= 1")
        if self.channel is not None and not isinstance(self.channel, ChannelConfig):
            kind = type(self.channel).__name__
            raise ValueError(f"synth: field 'channel' must be a ChannelConfig or None, got {kind}")


# ------------------------------------------------------------------ voices


def list_voices(config: SynthConfig) -> list[Voice]:
    """The ``num_voices`` voices of this engine and seed, in a fixed order."""
    if config.engine == "espeak":
        return espeak.voices(config.num_voices, config.seed)

    specs = kokoro.voice_specs(config.num_voices, config.seed)
    return [Voice(f"kokoro-{name}", "kokoro", params) for name, params in specs]


# --------------------------------------------------------------- synthesis


def synthesize(text: str, voice: Voice, lang: str) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``: (float32 mono samples in [-1, 1], sample rate)."""
    if not text.strip():
        raise ValueError(f"synth: empty text for voice {voice.id}")
    if voice.engine == "espeak":
        return espeak.synthesize(text, voice, lang)
    if voice.engine == "kokoro":
        return kokoro.synthesize(text, voice.params, lang)
    raise ValueError(f"synth: voice {voice.id} has engine {voice.engine!r}, must be one of {ENGINES}")


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit mono WAV, written to a temporary name beside ``path`` and renamed."""
    pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------ corpus


def read_sentences(path: Path) -> list[tuple[str, str]]:
    """One sentence a line; blank lines and ``#`` comments skipped; id ``<file stem>-<line number:04d>``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SynthError(f"synth: {path} is not UTF-8 text (byte {exc.start})") from exc
    out = []
    for line_no, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            out.append((f"{path.stem}-{line_no:04d}", text))
    return out


def text_key(text: str) -> str:
    """A short content hash of a sentence: part of its audio file name, so a file is reused only for its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _item_rng(seed: int, voice_id: str, sentence_id: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(f"{voice_id}\0{sentence_id}".encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def _split_keys(sentences: list[tuple[str, str]], lang: str) -> dict[str, str]:
    """Sentence id -> the sentence key split() will see: that of the normalized transcript."""

    normalizer = get_normalizer(lang)
    keys = {}
    for sentence_id, text in sentences:
        try:
            keys[sentence_id] = sentence_key(normalizer(text))
        except TextRejected:  # prepare will quarantine it; any split will do
            keys[sentence_id] = sentence_key(text)
    return keys


def _voices_for(sentence_id: str, voices: list[Voice], config: SynthConfig) -> list[Voice]:
    """The seeded voices that say one sentence, drawn from ``voices`` (all voices, or its split's)."""
    k = config.voices_per_sentence
    if k is None or k >= len(voices):
        return voices
    chosen = set(random.Random(f"{config.seed}:{sentence_id}").sample(range(len(voices)), k))
    return [v for i, v in enumerate(voices) if i in chosen]


@dataclass(frozen=True)
class _Task:
    index: int
    sentence_id: str
    text: str
    voice: Voice
    lang: str
    channel: ChannelConfig | None
    path: Path
    store: Path | None = None  # the shared store's root, which receives the finished clip ...
    key: str | None = None  # ... under this key


def _run_task(task: _Task) -> tuple[int, str | None]:
    """Synthesize, pass through the channel, write; returns (index, error or None). Runs in a worker."""
    try:
        samples, rate = synthesize(task.text, task.voice, task.lang)
        if task.channel is not None:
            rng = _item_rng(task.channel.seed, task.voice.id, task.sentence_id)
            params = draw_channel(task.channel, rng)
            samples, rate = apply_channel(samples, rate, task.channel, params, rng)
        write_wav(task.path, samples, rate)
        if task.store is not None and task.key is not None:
            SynthStore(task.store).put(task.key, task.path)
        return task.index, None
    except Exception as exc:  # reported per item, never lost
        return task.index, f"{type(exc).__name__}: {exc}"


@functools.cache
def writer_digest() -> str:
    """sha256 of the code here that calls the engine, applies the channel and writes the file: part of every
    stored clip's key (:func:`speechtl.data.synth.store.clip_key`); the rest of this module only schedules."""
    return hashlib.sha256("".join(inspect.getsource(fn) for fn in (synthesize, write_wav, _run_task)).encode()
                          ).hexdigest()


def _init_worker(threads: int, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    os.environ["OMP_NUM_THREADS"] = str(threads)

    kokoro.set_threads(threads)  # also drops a session inherited through fork: each worker makes its own


def _check_voice_dir(out_dir: Path, voice: Voice, config: SynthConfig) -> None:
    """Record the voice and channel in ``<voice>/voice.json``; refuse to resume into files made differently."""
    record = {
        "voice": voice.to_json(),
        "lang": config.lang,
        "channel": config.channel.to_json() if config.channel is not None else None,
    }
    path = out_dir / voice.id / "voice.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        for key, value in record.items():
            if old.get(key) != json.loads(json.dumps(value)):
                raise SynthError(
                    f"synth: {path}: field '{key}' is {old.get(key)!r} but this run has {value!r}; "
                    "its files were made differently, so use a new out_dir or delete that folder"
                )
        return
    atomic_write_text(path, json.dumps(record, ensure_ascii=False, indent=1) + "\n")


def _ready_folders(out_dir: Path, store: Path | None, voices: list[Voice], config: SynthConfig) -> None:
    """Check each voice folder against this run's settings; remove what a killed synthesis left half-written
    in ``out_dir`` and the ``store``."""
    for voice in voices:
        _check_voice_dir(out_dir, voice, config)
    for folder in (out_dir, store):
        if folder is not None:
            remove_stale(folder, recursive=True)


def _check_sentences(sentences: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for sentence_id, text in sentences:
        if not SAFE_ID.match(sentence_id or ""):
            raise SynthError(f"synth: sentence id {sentence_id!r} must be letters, digits, '.', '_', '-' (a file name)")
        if sentence_id in seen:
            raise SynthError(f"synth: sentence id {sentence_id!r} appears twice")
        if not text.strip():
            raise SynthError(f"synth: sentence {sentence_id}: field 'text' is empty")
        seen.add(sentence_id)


def _voice_pools(sentences: list[tuple[str, str]], voices: list[Voice], config: SynthConfig,
                 holdout: SplitConfig | None) -> tuple[dict[str | None, list[Voice]], dict[str, str | None]]:
    """The voices each split may use and the split of each sentence (one pool, no splits, without a holdout)."""
    # only when split() will hold out both (with < 3 voices it splits by sentence alone)
    if holdout is None or not (holdout.by_speaker and holdout.by_sentence) or len(voices) < 3:
        return {None: voices}, {}
    voice_split = assign((v.id for v in voices), holdout, "speaker")
    keys = _split_keys(sentences, config.lang)
    by_text = assign(keys.values(), holdout, "sentence")
    pools: dict[str | None, list[Voice]] = {name: [v for v in voices if voice_split[v.id] == name]
                                            for name in set(voice_split.values())}
    for name in set(by_text.values()) - set(pools):
        raise SynthError(f"synth: no voice falls in the {name} split; raise num_voices (now {len(voices)})")
    return pools, {sid: by_text[keys[sid]] for sid, _ in sentences}


def synthesize_corpus(
    sentences: list[tuple[str, str]],
    out_dir: Path,
    config: SynthConfig,
    progress: Callable[[int], None] | None = None,
    holdout: SplitConfig | None = None,
) -> list[RawItem]:
    """Speak every ``(sentence_id, text)`` with its seeded voices into ``out_dir/<voice_id>/<sentence_id>.wav``.

    Returns one ``RawItem`` per (sentence, voice), in sentence order then voice
    order, with ``speaker=voice.id`` and ``extra`` holding the engine, voice
    params, sentence id, lang and the item's channel choices. Existing files
    are kept (resume); ``voice.json`` in each voice folder guards against
    resuming with other settings. ``progress(n)`` is called as items finish
    (``n`` new ones, skipped included). Failed items come back with
    ``extra["reject"]`` (see the module docstring).

    With ``holdout``, voices and sentences are first assigned to train/dev/test
    exactly as :func:`speechtl.data.splits.split` will assign them, and each
    sentence is spoken only by voices of its own split: the later split then
    holds out voices and sentences without leaving any utterance unused.
    """
    out_dir = Path(out_dir)
    _check_sentences(sentences)
    voices = list_voices(config)
    root = store_root()
    _ready_folders(out_dir, root, voices, config)
    if config.engine == "kokoro":
        kokoro.model_path()  # join the model once, here, before workers race for it

    pools, sentence_split = _voice_pools(sentences, voices, config, holdout)
    store = SynthStore(root) if root is not None else None
    items: list[RawItem] = []
    tasks: list[_Task] = []
    stored = 0
    for sentence_id, text in sentences:
        for voice in _voices_for(sentence_id, pools[sentence_split.get(sentence_id)], config):
            path = out_dir / voice.id / f"{sentence_id}-{text_key(text)}.wav"  # an edited sentence is spoken anew
            channel = None
            if config.channel is not None:
                channel = draw_channel(config.channel, _item_rng(config.channel.seed, voice.id, sentence_id))
            extra = {
                "engine": config.engine, "voice": voice.params, "sentence_id": sentence_id, "lang": config.lang,
                "channel": channel,
            }  # fmt: skip
            item_id = f"{voice.id}_{sentence_id}"
            items.append(RawItem(id=item_id, text=text, speaker=voice.id, audio_path=path, extra=extra))
            if path.exists():
                continue
            key = None
            if store is not None:
                key = clip_key(engine=config.engine, voice_id=voice.id, voice=voice.params, lang=config.lang,
                               text=text, sentence_id=sentence_id, channel=channel, writer=writer_digest(),
                               channel_config=config.channel.to_json() if config.channel is not None else None)
                if store.fetch(key, path):
                    stored += 1
                    continue
            tasks.append(_Task(len(items) - 1, sentence_id, text, voice, config.lang, config.channel, path, root, key))
    skipped = len(items) - len(tasks)
    if skipped:
        log.info("synth: %d of %d files already exist (%d of them copied from the store %s); synthesizing %d",
                 skipped, len(items), stored, root, len(tasks))
        if progress is not None:
            progress(skipped)

    errors = {index: error for index, error in _execute(tasks, config, progress) if error is not None}
    if tasks and len(errors) == len(tasks) and not skipped:  # not one file: a setup problem, not a bad sentence
        first = tasks[0]
        raise SynthError(
            f"synth: all {len(tasks)} items failed; first: sentence {first.sentence_id}, voice {first.voice.id}, "
            f"engine {config.engine}: {errors[first.index]}"
        )
    for index, error in errors.items():
        item = items[index]
        detail = f"sentence {item.extra['sentence_id']}, voice {item.speaker}, engine {config.engine}: {error}"
        log.warning("synth: failed: %s", detail)
        reject = {"field": "audio", "reason": "synth_failed", "detail": detail}
        items[index] = RawItem(id=item.id, text=item.text, speaker=item.speaker, extra={**item.extra, "reject": reject})
    return items


def _execute(tasks: list[_Task], config: SynthConfig, progress: Callable[[int], None] | None):
    """Yield (index, error) per task, in completion order."""
    cpus = os.cpu_count() or 1
    workers = min(config.num_workers, len(tasks))
    if workers <= 1:  # in this process, with the default threads
        for task in tasks:
            yield _run_task(task)
            if progress is not None:
                progress(1)
        return
    ctx = multiprocessing.get_context(START_METHOD)
    threads = max(1, cpus // workers)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, os.getpid())) as pool:
        queue = iter(tasks)
        running: dict[Future, _Task] = {}
        while True:
            while len(running) < 4 * workers and (task := next(queue, None)) is not None:
                try:
                    running[pool.submit(_run_task, task)] = task
                except BrokenProcessPool as exc:
                    raise SynthError(
                        f"synth: the worker pool broke (a worker died, e.g. killed for memory) before sentence "
                        f"{task.sentence_id}, voice {task.voice.id}, engine {config.engine}; run again to resume"
                    ) from exc
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                try:
                    yield future.result()
                except Exception as exc:  # a worker died (e.g. killed for memory)
                    yield task.index, f"worker failed: {type(exc).__name__}: {exc}"
                if progress is not None:
                    progress(1)
                faults.point("synthesis")  # the other clips still in the workers
