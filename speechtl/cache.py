"""Where speechtl keeps what it builds once per machine: ``$SPEECHTL_CACHE``, else ``~/.cache/speechtl``.

Imported models (``hf/``, ``ct2/``), the joined Kokoro model (``kokoro/``),
the Debian packages extracted by ``scripts/system-deps.sh`` (``debian/``, the
script follows the same rule), synthesized clips (``synth/``), base-model
decodes (``decodes/``) and frozen encoder outputs (``encoder/``) live there.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$SPEECHTL_CACHE`` (when set and not empty), else ``~/.cache/speechtl``; resolved at each call."""
    return Path(os.environ.get("SPEECHTL_CACHE") or Path.home() / ".cache" / "speechtl")


def encoder_cache_dir(configured: str | Path | None, run_dir: Path) -> Path:
    """Where a run's frozen-encoder cache lives: ``configured`` (``train.cache_dir``) when given; else
    ``$SPEECHTL_ENCODER_CACHE`` when set (empty: ``<run_dir>/encoder_cache``, the run's own); else
    ``<cache_root>/encoder``, shared by every run on the machine (rows are keyed by the frozen weights and
    each clip's id and bytes, so a fresh clone or a second recipe reuses every row it can)."""
    if configured:
        return Path(configured)
    env = os.environ.get("SPEECHTL_ENCODER_CACHE")
    if env is not None:
        return Path(env) if env else run_dir / "encoder_cache"
    return cache_root() / "encoder"
