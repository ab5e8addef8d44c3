"""speechtl.fsio: atomic writes honour the umask, and what a killed writer leaves is removed, never reused."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from speechtl.fsio import atomic_file, atomic_write_text, remove_stale, staged_dir

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and kill -9 semantics: Linux")

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from speechtl.fsio import atomic_file, staged_dir

    target = Path(sys.argv[2])
    if sys.argv[1] == "file":
        with atomic_file(target, "wb") as handle:
            handle.write(b"half a file")
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)
    else:
        with staged_dir(target) as tmp:
            (tmp / "model.bin").write_bytes(b"half a model")
            print("writing", flush=True)
            time.sleep(60)
""")


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_honour_the_umask(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a.json", "{}")
    with staged_dir(tmp_path / "export") as tmp:
        (tmp / "weights.bin").write_bytes(b"w")
        os.chmod(tmp / "weights.bin", 0o600)  # as safetensors' writer leaves it
    assert _mode(tmp_path / "a.json") == 0o644
    assert _mode(tmp_path / "export") == 0o755 and _mode(tmp_path / "export" / "weights.bin") == 0o644


def _killed_writer(tmp_path: Path, kind: str, target: Path) -> list[Path]:
    """Start a writer, check its temporary is spared while it lives, kill -9 it; returns its temporaries."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), kind, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        temporaries = sorted(target.parent.glob(f".{target.name}.*.tmp"))
        assert len(temporaries) == 1
        assert remove_stale(target.parent) == [] and temporaries[0].exists()  # a live writer's: spared
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return temporaries


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_killed_writers_temporary_is_removed_and_the_target_never_appears(tmp_path, kind):
    target = tmp_path / "out" / ("report.json" if kind == "file" else "hf")
    temporaries = _killed_writer(tmp_path, kind, target)
    assert temporaries[0].exists() and not target.exists()  # the kill left it: nothing cleaned up
    atomic_write_text(target.parent / "other.txt", "x")  # an unrelated write neither reuses nor removes it
    assert temporaries[0].exists()
    assert remove_stale(target.parent) == temporaries
    assert not list(target.parent.glob(".*")) and not target.exists()


def test_remove_stale_leaves_finished_files_and_walks_folders_when_asked(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    stale = nested / ".clip.wav.abc12345.tmp"
    stale.write_bytes(b"x")  # as a killed writer leaves it: no lock held
    (nested / "clip.wav").write_bytes(b"done")
    (nested / ".notes.tmp").write_bytes(b"mine")  # not named as tempfile names ours: someone else's
    assert remove_stale(tmp_path) == []  # not recursive by default
    assert remove_stale(tmp_path, recursive=True) == [stale]
    assert (nested / "clip.wav").read_bytes() == b"done" and (nested / ".notes.tmp").is_file()


def test_a_write_in_progress_blocks_nothing_and_lands(tmp_path):
    target = tmp_path / "x.txt"
    with atomic_file(target, "w", encoding="utf-8") as handle:
        handle.write("whole")
        assert remove_stale(tmp_path) == []  # our own temporary is held while we write
    assert target.read_text(encoding="utf-8") == "whole" and not list(tmp_path.glob(".*"))
