"""The local host runs ``async def`` functions as the Python worker does: awaited on the worker's one event loop,
while sync functions run on its thread pool (issue 20, item 9). Before, a coroutine function was called and never
awaited: an async queue trigger's message was acknowledged with nothing done, an async route answered 500."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from devhost.http import HttpHost
from devhost.queues import QueueHost
from devhost.worker import WorkerPool
from tests.peers.ports import wait_until

pytestmark = pytest.mark.e2e
APP_FILE = Path(__file__).parent / "async_app" / "function_app.py"


class AsyncApp:
    def __init__(self, module: Any, http: HttpHost, queues: QueueHost, queue_name: str) -> None:
        self.module, self.http, self.queues, self.queue_name = module, http, queues, queue_name

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(self.http.base_url + path, params=params, timeout=20)

    def enqueue(self, text: str) -> None:
        from shared import storage

        storage.queue(self.queue_name).send_message(text)

    def seen(self, body: str) -> list[dict[str, Any]]:
        return [entry for entry in self.module.SEEN if entry["body"] == body]


@pytest.fixture
def async_app(azurite: Any, set_env: Callable[..., None]) -> Iterator[AsyncApp]:
    """tests/e2e/async_app served by the local host (HTTP + queues) on one worker pool of ONE thread."""
    queue_name = f"async-{uuid.uuid4().hex[:8]}"
    set_env(ASYNC_APP_QUEUE=queue_name)
    spec = importlib.util.spec_from_file_location(f"async_app_{queue_name.replace('-', '_')}", APP_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    functions = module.app.get_functions()
    pool = WorkerPool(threads=1)
    http = HttpHost(functions, pool=pool)
    http.start()
    queues = QueueHost(functions, pool=pool, visibility_timeout=0).start()
    try:
        yield AsyncApp(module, http, queues, queue_name)
    finally:
        module.GATE.set()
        http.stop()
        queues.stop()
        pool.shutdown()


def test_async_route_answers_with_its_coroutines_response_and_async_queue_trigger_runs_on_the_same_loop(
        async_app: AsyncApp) -> None:
    answer = async_app.get("/api/async/hello", name="ada")
    assert answer.status_code == 200, answer.content
    assert answer.json()["greeting"] == "hello ada from a coroutine"

    async_app.enqueue("queued-for-a-coroutine")
    wait_until(lambda: async_app.seen("queued-for-a-coroutine") and async_app.queues.wait_idle(), 30,
               "the async queue function to run and its message to be settled")
    assert async_app.queues.stats.succeeded == 1 and async_app.queues.stats.failed == 0
    ran = async_app.seen("queued-for-a-coroutine")[0]
    # One event loop for every async function (HTTP and queue), as in the worker; not a pool thread.
    assert ran["loop"] is not None and ran["loop"] == answer.json()["loop"]
    assert ran["thread"] == answer.json()["thread"] and not ran["thread"].startswith("devhost-worker")
    sync = async_app.get("/api/sync/hello").json()
    assert sync["loop"] is None and sync["thread"].startswith("devhost-worker")


def test_async_functions_run_while_the_only_worker_thread_is_held_by_a_sync_function(async_app: AsyncApp) -> None:
    blocked: dict[str, requests.Response] = {}
    holder = threading.Thread(target=lambda: blocked.update(answer=async_app.get("/api/sync/block")))
    holder.start()
    try:
        assert async_app.module.BLOCKED.wait(20), "the sync route never started"
        answer = async_app.get("/api/async/hello", name="while-blocked")
        assert answer.status_code == 200 and "while-blocked" in answer.json()["greeting"]
        async_app.enqueue("while-the-thread-is-busy")
        wait_until(lambda: async_app.seen("while-the-thread-is-busy"), 30,
                   "the async queue function to run although the pool's one thread is busy")
    finally:
        async_app.module.GATE.set()
        holder.join(30)
    assert blocked["answer"].text == "released"


def test_async_queue_function_that_raises_is_retried_not_acknowledged(async_app: AsyncApp) -> None:
    async_app.enqueue("fail-once")
    wait_until(lambda: len(async_app.seen("fail-once")) == 2 and async_app.queues.wait_idle(), 30,
               "the failed first try to come back and succeed")
    assert [entry["dequeue_count"] for entry in async_app.seen("fail-once")] == [1, 2]
    assert (async_app.queues.stats.failed, async_app.queues.stats.succeeded) == (1, 1)
