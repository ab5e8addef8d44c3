"""Tests for speechtl.cache: where what is built once per machine lives."""

from __future__ import annotations

from pathlib import Path

from speechtl.cache import cache_root, encoder_cache_dir


def test_the_encoder_cache_is_shared_by_runs_unless_a_run_says_otherwise(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "es"
    monkeypatch.setenv("SPEECHTL_CACHE", str(tmp_path / "machine"))
    monkeypatch.delenv("SPEECHTL_ENCODER_CACHE")
    assert cache_root() == tmp_path / "machine"
    assert encoder_cache_dir(None, run) == tmp_path / "machine" / "encoder"  # the default: one per machine
    assert encoder_cache_dir(None, run) == encoder_cache_dir(None, tmp_path / "runs" / "other")
    assert encoder_cache_dir("/data/cache", run) == Path("/data/cache")  # train.cache_dir wins
    monkeypatch.setenv("SPEECHTL_ENCODER_CACHE", str(tmp_path / "elsewhere"))
    assert encoder_cache_dir(None, run) == tmp_path / "elsewhere"
    monkeypatch.setenv("SPEECHTL_ENCODER_CACHE", "")  # empty: the run keeps its own
    assert encoder_cache_dir(None, run) == run / "encoder_cache"
