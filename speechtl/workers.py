"""Worker processes that die with their parent: a ``kill -9`` of ``speechtl`` leaves no orphan writing audio.

:func:`die_with_parent` is the initializer of every process pool (synthesis, data prep). On Linux it asks
the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to kill the worker when the process that forked it
ends, however it ends; elsewhere it does nothing (the pools still shut down with their parent on a normal
exit or an exception).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make the calling (worker) process receive SIGKILL when its parent dies; ``parent_pid``: the pid the
    worker was started from, to catch a parent that died before the request was made."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent_pid is not None and os.getppid() != parent_pid:  # orphaned already: reparented before prctl
        os._exit(1)
