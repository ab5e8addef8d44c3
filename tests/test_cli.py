"""The CLI's logging: third-party INFO lines stay out of the user's output unless -v."""

from __future__ import annotations

import logging

import pytest

from speechtl.cli import QUIET_LOGGERS, main


@pytest.mark.parametrize("verbose", [False, True])
def test_third_party_info_logs_are_quiet_unless_verbose(tmp_path, monkeypatch, verbose):
    for name in QUIET_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("", encoding="utf-8")
    main([*(["-v"] if verbose else []), "validate", str(manifest)])
    levels = {logging.getLogger(name).level for name in QUIET_LOGGERS}
    assert levels == ({logging.NOTSET} if verbose else {logging.WARNING})
    assert "faster_whisper" in QUIET_LOGGERS and "accelerate" in QUIET_LOGGERS
