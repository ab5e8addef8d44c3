"""Atomic file and directory writes, the one implementation every stage uses, and file hashes.

A reader never sees a half-written file: each write goes to a temporary name
beside its target and is renamed over it only when complete; a failed write
leaves the old file (or nothing) and no temporary behind. Files and folders
get the permissions the process umask allows (``mkstemp`` alone would leave
them readable by their owner only).

A killed writer (``kill -9``, out of memory) cannot clean up, so each
temporary (``.NAME.XXXX.tmp``, a file or a folder) is held under an
exclusive ``flock`` while it is written: :func:`remove_stale` deletes the
temporaries no live writer holds, and a stage calls it on its output folder
before writing there. A temporary is never reused: each write makes its own.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # not POSIX: no locks, and remove_stale removes nothing
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"  # every temporary speechtl writes ends so: .NAME.XXXXXXXX.tmp
TMP_PATTERN = f".*.{'?' * 8}{TMP_SUFFIX}"  # what tempfile names them (8 random characters): no one else's file


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def hold(fd: int) -> bool:
    """Take the writer's lock on the open temporary ``fd`` (waiting while a :func:`remove_stale` holds it);
    False when the temporary was removed meanwhile (make another). Without locks (no ``fcntl``, a filesystem
    that refuses them) the temporary is simply not held."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        return True
    return os.fstat(fd).st_nlink > 0


def new_temporary(path: Path, *, folder: bool = False) -> tuple[Path, int]:
    """A fresh temporary file (or ``folder``) beside ``path``, and an fd holding its lock (close it when the
    temporary is gone or renamed)."""
    while True:
        if folder:
            tmp = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        if hold(fd):
            return Path(tmp), fd
        os.close(fd)  # removed as stale between its creation and the lock: make another


def _same_file(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def remove_stale(folder: Path | str, *, recursive: bool = False, pattern: str = TMP_PATTERN,
                 keep: Callable[[Path], bool] | None = None) -> list[Path]:
    """Remove the temporaries (``pattern``: ``.NAME.XXXXXXXX.tmp``, files and folders) in ``folder`` that no
    live writer holds: what a killed process left; ``keep(path)``, asked under the lock, spares a finished
    one. Returns what was removed (each one logged)."""
    folder = Path(folder)
    if fcntl is None or not folder.is_dir():
        return []
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    removed = []
    for path in sorted(found, key=lambda p: len(p.parts), reverse=True):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile (renamed into place), a link, unreadable: not ours to remove
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                log.debug("remove_stale: no lock on %s (%s); left", path, exc)
            os.close(fd)
            continue
        try:
            # not renamed into place by a writer that finished after the glob, nor finished since
            if _same_file(path, fd) and not (keep is not None and keep(path)):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
                log.warning("removed %s: a temporary left by a killed writer", path)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """An open temporary file beside ``path`` that is renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = new_temporary(path)
    lock = os.dup(fd)  # the lock lasts until the rename, after the handle is closed
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(lock)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, content: str) -> None:
    """Write UTF-8 ``content`` to ``path`` atomically."""
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write(content)


def honour_umask(folder: Path | str) -> None:
    """Give ``folder`` (or a file), and everything under it, the permissions the umask allows: third-party writers
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
    tmp, lock = new_temporary(out, folder=True)
    try:
        yield tmp
        swap_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(lock)


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(16 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
