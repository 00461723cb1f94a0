"""The Python worker's thread pool: every sync function invocation (HTTP and queue) runs on it, so at most
``PYTHON_THREADPOOL_THREAD_COUNT`` run at once, whatever host.json's ``batchSize`` lets the host fetch."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from .settings import worker_thread_count


class WorkerPool:
    """One pool per host process, shared by the HTTP and queue halves (as the worker shares one)."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or worker_thread_count()
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="devhost-worker")
        self._lock = threading.Lock()
        self._running = 0
        self.waiting = 0  # submitted, not started: all threads busy
        self.peak = 0

    def submit(self, fn: Callable[..., Any], /, **kwargs: Any) -> Future:
        with self._lock:
            self.waiting += 1
        return self._executor.submit(self._counted, fn, kwargs)

    def _counted(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            self.waiting -= 1
            self._running += 1
            self.peak = max(self.peak, self._running)
        try:
            return fn(**kwargs)
        finally:
            with self._lock:
                self._running -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
