"""Atomic file and directory writes, the one implementation every stage uses, and file hashes.

A reader never sees a half-written file: each write goes to a temporary name
beside its target and is renamed over it only when complete; a failed write
leaves the old file (or nothing) and no temporary behind. Files and folders
get the permissions the process umask allows (``mkstemp`` alone would leave
them readable by their owner only).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """An open temporary file beside ``path`` that is renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, content: str) -> None:
    """Write UTF-8 ``content`` to ``path`` atomically."""
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write(content)


def honour_umask(folder: Path | str) -> None:
    """Give ``folder``, and everything under it, the permissions the umask allows: third-party writers
    (safetensors, accelerate, ``mkdtemp``) leave files readable by their owner only."""
    mask = _umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def swap_dir(tmp: Path, final: Path) -> None:
    """Put the finished directory ``tmp`` in place of ``final`` (renames; the old one is removed), with the
    permissions the umask allows (:func:`honour_umask`): every model and checkpoint directory lands here."""
    honour_umask(tmp)
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out: Path | str) -> Iterator[Path]:
    """A temporary folder beside ``out`` that replaces it when the block succeeds (and vanishes if not)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        swap_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(16 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
