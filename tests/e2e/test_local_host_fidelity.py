"""The local host (devhost) answers as the real Functions host + Python worker 4.34 do, where the app could notice:
500 with an empty body, lower-cased header names, JSON without a charset, a queue message decoded from a string
with its trigger metadata, and at most PYTHON_THREADPOOL_THREAD_COUNT invocations at once."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import azure.functions as func
import pytest
import requests

from devhost.http import HttpHost
from devhost.queues import QueueHost
from devhost.worker import WorkerPool
from tests.peers.ports import wait_until

pytestmark = pytest.mark.e2e


def _probe_app(queue_name: str, seen: dict[str, Any], gate: threading.Event) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="boom", methods=["POST"])
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret detail that must not reach the caller")

    @app.route(route="headers", methods=["GET"])
    def headers(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(",".join(sorted(req.headers.keys())), mimetype="application/json")

    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    def probe(msg: func.QueueMessage) -> None:
        with seen["lock"]:
            seen["messages"].append(msg)
            seen["running"] += 1
            seen["peak"] = max(seen["peak"], seen["running"])
        gate.wait(30)
        with seen["lock"]:
            seen["running"] -= 1

    return app


@pytest.fixture
def probe(azurite: Any) -> Any:
    queue_name = f"probe-{uuid.uuid4().hex[:8]}"
    seen: dict[str, Any] = {"lock": threading.Lock(), "messages": [], "running": 0, "peak": 0}
    gate = threading.Event()
    functions = _probe_app(queue_name, seen, gate).get_functions()
    yield functions, queue_name, seen, gate
    gate.set()


def test_unhandled_exception_is_500_with_an_empty_body_and_headers_arrive_lower_cased(probe: Any) -> None:
    functions, _, _, _ = probe
    host = HttpHost(functions)
    host.start()
    try:
        failed = requests.post(host.base_url + "/api/boom", data="x", timeout=10)
        echoed = requests.get(host.base_url + "/api/headers", headers={"X-Twilio-Signature": "abc"}, timeout=10)
    finally:
        host.stop()
    assert (failed.status_code, failed.content) == (500, b"")
    assert "x-twilio-signature" in echoed.text.split(",") and "X-Twilio-Signature" not in echoed.text
    assert echoed.headers["Content-Type"] == "application/json"


def test_queue_message_is_a_string_with_trigger_metadata_and_the_thread_pool_caps_concurrency(probe: Any) -> None:
    functions, queue_name, seen, gate = probe
    from shared import storage

    for i in range(6):
        storage.queue(queue_name).send_message(f'{{"n": {i}, "text": "héllo"}}')
    pool = WorkerPool(threads=2)
    host = QueueHost(functions, pool=pool).start()
    try:
        # All six fetched in one batch (batchSize 16) and handed to the pool, yet only two run.
        wait_until(lambda: host.busy == 6 and seen["running"] == 2 and pool.waiting == 4, 30,
                   "six messages fetched, two running, four waiting for a thread")
        assert seen["peak"] == pool.peak == 2
        gate.set()
        wait_until(lambda: host.stats.succeeded == 6, 30, "all six to finish")
    finally:
        gate.set()
        host.stop()
        pool.shutdown()
    message = seen["messages"][0]
    assert message.get_body().decode("utf-8").endswith('"text": "héllo"}')
    assert message.id and message.pop_receipt and message.dequeue_count == 1
    assert message.insertion_time and message.expiration_time and message.time_next_visible
    assert message.insertion_time.tzinfo is not None and message.expiration_time > message.insertion_time
