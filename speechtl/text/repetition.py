"""Whisper's repetition measure: how well a transcript compresses. A decoder stuck in a loop ("no, no, no, ...")
writes text that zlib shrinks far more than speech; OpenAI's decoder and faster-whisper re-decode a window whose
ratio is over 2.4 (COMPRESSION_RATIO_LIMIT)."""

from __future__ import annotations

import zlib

COMPRESSION_RATIO_LIMIT = 2.4  # OpenAI's and faster-whisper's default


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` (UTF-8) over its zlib-compressed bytes; 0.0 for empty text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
