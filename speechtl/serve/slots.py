"""Admission control and the worker threads of ``speechtl serve``.

There are ``workers + queue_size`` slots. A request takes one once its form is parsed (none free: 503 at
once) and holds it while its job (decode the upload, then run the model) waits in the queue and runs on one
of ``workers`` threads. A request whose client goes away is abandoned: a job still queued is dropped, a
running one is told to stop (decoding checks between blocks; a model call runs to its end, its result
unused) and the slot is free again at once, so abandoned requests never push live ones into 503.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Job:
    """One admitted request: its place on the pool and the flag that tells its work to stop."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.future: Future | None = None
        self.holds_slot = True


class Slots:
    """The slots and the pool (see the module docstring); the counters feed ``/health``."""

    def __init__(self, workers: int, queue_size: int) -> None:
        self.workers = workers
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="speechtl-serve")
        self._open = True  # False once shut down
        self.capacity = workers + queue_size
        self.admitted = 0  # requests holding a slot
        self.waiting = 0  # jobs in the queue, not started yet
        self.running = 0  # jobs on a thread, abandoned ones included (their thread is still busy)
        self._lock = threading.Lock()

    def admit(self) -> Job | None:
        """A slot for a new request, or None when all are taken."""
        with self._lock:
            if self.admitted >= self.capacity:
                return None
            self.admitted += 1
            return Job()

    def release(self, job: Job) -> None:
        """Give ``job``'s slot back (once; later calls do nothing)."""
        with self._lock:
            if job.holds_slot:
                job.holds_slot = False
                self.admitted -= 1

    def submit(self, job: Job, fn: Callable[[], Any]) -> Future:
        """Queue ``fn`` for a worker thread; the slot is released when it ends or is dropped unstarted."""
        def work() -> Any:
            with self._lock:
                self.waiting -= 1
                self.running += 1
            try:
                return fn()
            finally:
                with self._lock:
                    self.running -= 1

        def done(future: Future) -> None:
            if future.cancelled():  # dropped from the queue: work() never ran
                with self._lock:
                    self.waiting -= 1
            self.release(job)

        with self._lock:
            self.waiting += 1
        try:
            job.future = self.executor.submit(work)
        except RuntimeError:  # the pool is shut down: the server is stopping
            with self._lock:
                self.waiting -= 1
            raise
        job.future.add_done_callback(done)
        return job.future

    def abandon(self, job: Job) -> None:
        """The client is gone: drop the queued job or tell the running one to stop, and free the slot now."""
        job.cancelled.set()
        if job.future is not None:
            job.future.cancel()  # succeeds only while queued; its done callback then counts it out
        self.release(job)

    def start(self) -> None:
        """A fresh pool when the last one was shut down (an app served again after its lifespan ended)."""
        if not self._open:
            self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="speechtl-serve")
            self._open = True

    def shutdown(self) -> None:
        """Drop the queued jobs and stop taking new ones (running ones finish on their threads)."""
        self._open = False
        self.executor.shutdown(wait=False, cancel_futures=True)
