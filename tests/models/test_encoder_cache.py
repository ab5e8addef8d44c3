"""The encoder cache after a kill -9 of its build: the rerun removes what was left, uses none of it, and
rebuilds the rows; a zero-filled shard of the right size is rebuilt, never read (model-free, fake rows)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from speechtl.data.manifest import Utterance
from speechtl.models.encoder_cache import EncoderCache

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and kill -9 semantics: Linux")

SHAPE = (6, 4)

BUILDER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from speechtl.data.manifest import Utterance
    from speechtl.models.encoder_cache import EncoderCache

    root, folder = sys.argv[1], sys.argv[2]
    utts = [Utterance(id=f"u{i}", audio_filepath=f"{folder}/u{i}.wav", text="x") for i in range(4)]

    def compute(batch):
        if batch[0].id == "u2":  # half the rows written: stop here until killed
            print("building", flush=True)
            time.sleep(60)
        return np.ones((len(batch), 6, 4), np.float32)

    EncoderCache(root, "key", (6, 4)).build(utts, compute, batch_size=1, tag="r0")
""")


def _utts(folder: Path) -> list[Utterance]:
    folder.mkdir(parents=True, exist_ok=True)
    utts = []
    for i in range(4):
        (folder / f"u{i}.wav").write_bytes(f"audio {i}".encode())  # the key hashes the bytes; nothing decodes them
        utts.append(Utterance(id=f"u{i}", audio_filepath=str(folder / f"u{i}.wav"), text="x"))
    return utts


def _rows(batch: list[Utterance]) -> np.ndarray:
    return np.stack([np.full(SHAPE, int(u.id[1:]) + 1, np.float32) for u in batch])


def test_a_killed_build_leaves_nothing_a_rerun_uses_or_keeps(tmp_path, caplog):
    utts = _utts(tmp_path / "audio")
    root, script = tmp_path / "cache", tmp_path / "build.py"
    script.write_text(BUILDER, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(tmp_path / "audio")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "building"
        cache = EncoderCache(root, "key", SHAPE)
        assert cache.remove_stale() == []  # a live build's temporary is spared
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    left = sorted((root / "key").glob(".*.tmp"))
    assert len(left) == 1 and not list((root / "key").glob("*.json"))  # the kill left a half-written temporary

    cache = EncoderCache(root, "key", SHAPE)
    assert cache.missing(utts) == [0, 1, 2, 3]  # nothing of the killed build counts
    with caplog.at_level(logging.WARNING):
        rows, stats = cache.ensure(utts, _rows, batch_size=2)
    assert (stats.hits, stats.built) == (0, 4)
    assert "a temporary left by a killed writer" in caplog.text and not left[0].exists()
    assert [float(rows[i][0, 0]) for i in range(4)] == [1.0, 2.0, 3.0, 4.0]  # the rerun's rows, not the ones
    assert not list((root / "key").glob(".*"))


def test_a_shard_whose_json_was_never_written_is_removed(tmp_path):
    utts = _utts(tmp_path / "audio")
    cache = EncoderCache(tmp_path / "cache", "key", SHAPE)
    cache.ensure(utts[:2], _rows, batch_size=2)
    orphan = cache.dir / "r0-0123456789abcdef.f16"  # killed between its rename and its json
    orphan.write_bytes(bytes(2 * 2 * SHAPE[0] * SHAPE[1]))
    kept = sorted(cache.dir.glob("*.f16"))
    _, stats = cache.ensure(utts, _rows, batch_size=2)
    assert stats.built == 2 and not orphan.exists()
    assert set(kept) - {orphan} <= set(cache.dir.glob("*.f16"))  # finished shards stay


def test_a_zero_filled_shard_of_the_right_size_is_rebuilt_never_read(tmp_path, caplog):
    utts = _utts(tmp_path / "audio")
    cache = EncoderCache(tmp_path / "cache", "key", SHAPE)
    cache.ensure(utts, _rows, batch_size=4)
    shard = next(cache.dir.glob("*.f16"))
    shard.write_bytes(bytes(shard.stat().st_size))  # passes any size check
    again = EncoderCache(tmp_path / "cache", "key", SHAPE)  # a new process: rows not yet checked
    with caplog.at_level(logging.WARNING):
        rows, stats = again.ensure(utts, _rows, batch_size=4)
    assert (stats.hits, stats.built) == (0, 4) and "does not match its digest" in caplog.text
    assert [float(rows[i][0, 0]) for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
