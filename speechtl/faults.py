"""Fault injection for the tests that kill a run: ``SPEECHTL_KILL_AT=<point>`` makes the process that reaches
``point(<point>)`` kill itself with SIGKILL, as ``kill -9`` would, and nothing runs after it (no ``finally``,
no ``atexit``).

Each point sits inside its stage, where a kill leaves the most behind: worker processes still running,
a temporary half written, a checkpoint older than the weights. POINTS lists them; unset, a point costs one
environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SPEECHTL_KILL_AT"
POINTS = ("synthesis", "preparation", "encoder-cache", "training", "evaluation", "export")


def point(name: str) -> None:
    """Die here (SIGKILL) when ``$SPEECHTL_KILL_AT`` names this point."""
    if name not in POINTS:
        raise ValueError(f"fault point {name!r} is not one of {POINTS}")
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
