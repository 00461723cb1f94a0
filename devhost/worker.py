"""The Python worker's execution model: every invocation (HTTP and queue) of a sync function runs on its thread
pool, so at most ``PYTHON_THREADPOOL_THREAD_COUNT`` run at once, whatever host.json's ``batchSize`` lets the host
fetch; an ``async def`` function runs as a task on the worker's one event loop and holds no thread while it
awaits (worker 4.34: ``await`` on the loop when the function is a coroutine function, ``run_in_executor`` on the
sync pool otherwise)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from .settings import worker_thread_count

DRAIN_SECONDS = 30  # shutdown lets running coroutines finish, as it lets running threads finish


class WorkerPool:
    """One pool and one event loop per host process, shared by the HTTP and queue halves (as the worker shares
    them)."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or worker_thread_count()
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="devhost-worker")
        self._lock = threading.Lock()
        self._running = 0
        self.waiting = 0  # submitted, not started: all threads busy
        self.peak = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def invoke(self, fn: Callable[..., Any], /, **kwargs: Any) -> Future:
        """Run one invocation of ``fn`` the way the worker does; the future holds its result or exception."""
        if inspect.iscoroutinefunction(fn):
            return asyncio.run_coroutine_threadsafe(_call_async(fn, kwargs), self.event_loop())
        return self.submit(fn, **kwargs)

    def submit(self, fn: Callable[..., Any], /, **kwargs: Any) -> Future:
        """Run ``fn`` on the thread pool (a sync function, or host work that blocks)."""
        with self._lock:
            self.waiting += 1
        return self._executor.submit(self._counted, fn, kwargs)

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The worker's event loop, started on first use in a thread of its own."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_run_forever, args=(loop,), name="devhost-event-loop", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

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
        with self._lock:
            loop, thread, self._loop, self._loop_thread = self._loop, self._loop_thread, None, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(_drain(), loop).result(timeout=DRAIN_SECONDS)
        except Exception:  # noqa: BLE001 - a coroutine that will not finish does not keep the host up
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=DRAIN_SECONDS)
        if not thread.is_alive():
            loop.close()


async def _call_async(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return await fn(**kwargs)


async def _drain() -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    if others:
        await asyncio.wait(others, timeout=DRAIN_SECONDS)


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()
