"""Test helpers shared by every folder: tone_corpus and accelerate_worker live next to this file."""

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture(autouse=True)
def _own_stores(tmp_path_factory, monkeypatch):
    """Each test gets an empty synthesis store, decode cache and encoder cache: what one test made never answers another,
    and the user's caches stay untouched."""
    monkeypatch.setenv("SPEECHTL_SYNTH_STORE", str(tmp_path_factory.mktemp("synth-store")))
    monkeypatch.setenv("SPEECHTL_DECODE_CACHE", str(tmp_path_factory.mktemp("decodes")))
    monkeypatch.setenv("SPEECHTL_ENCODER_CACHE", str(tmp_path_factory.mktemp("encoder")))
