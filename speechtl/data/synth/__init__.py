"""Synthetic speech: engines (:mod:`.espeak`, :mod:`.kokoro`), the voice-agent channel (:mod:`.channel`) and
sentences x voices -> a corpus (:mod:`.corpus`). Here: what every engine shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker."""

    id: str  # unique, filesystem-safe; becomes the speaker id and the folder name
    engine: str  # "espeak" or "kokoro"
    params: dict[str, Any] = field(hash=False)  # everything the engine needs to reproduce this voice

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "engine": self.engine, "params": self.params}


class SynthError(RuntimeError):
    """Synthesis cannot run (missing tool or package, bad input); the message names item, voice and engine."""
