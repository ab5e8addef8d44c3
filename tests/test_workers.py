"""Pool workers die with their parent: after a kill -9 of the parent no worker is left running."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PARENT = textwrap.dedent("""
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from speechtl.workers import die_with_parent

    def nap(_):
        time.sleep(60)

    if __name__ == "__main__":
        guarded = sys.argv[1] == "guarded"
        pool = ProcessPoolExecutor(2, initializer=die_with_parent if guarded else None,
                                   initargs=(os.getpid(),) if guarded else ())
        futures = [pool.submit(nap, i) for i in range(2)]
        time.sleep(1.0)
        print(" ".join(str(pid) for pid in pool._processes), flush=True)
        time.sleep(60)
""")


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("mode", ["guarded", "unguarded"])
def test_pool_workers_die_with_a_killed_parent(tmp_path, mode):
    script = tmp_path / "parent.py"
    script.write_text(PARENT, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    try:
        assert len(pids) == 2 and all(_running(p) for p in pids)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if mode == "guarded":
            assert not any(_running(p) for p in pids), "orphaned workers"
        else:  # the control: without the guard the workers outlive their parent, so the check can fail
            assert all(_running(p) for p in pids)
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
