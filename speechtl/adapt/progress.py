"""Progress lines for long stages of a run: done/total, items per second and the time left."""

from __future__ import annotations

import time
from collections.abc import Callable


def progress_printer(label: str, notify: Callable[[str], object], *, every_s: float = 30.0,
                     clock: Callable[[], float] = time.monotonic) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that calls ``notify`` at most every ``every_s`` seconds, and once
    when ``done`` reaches ``total``, with the rate since the first call and the estimated time left."""
    start = clock()
    last = start

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = clock()
        if done < total and now - last < every_s:
            return
        last = now
        rate = done / max(now - start, 1e-9)
        eta = ""
        if 0 < done < total:
            left = round((total - done) / rate)
            eta = f", about {left // 60} min {left % 60:02d} s left"
        notify(f"{label}: {done} of {total} ({done / max(total, 1):.0%}), {rate:.2f}/s{eta}")

    return progress
