"""A small function app for the local host's execution-model tests: ``async def`` functions (an HTTP route and a
queue trigger) beside sync ones, each reporting where it ran (thread, event loop) so a test can see it.

The queue trigger's queue is the setting ``ASYNC_APP_QUEUE``. ``SEEN`` holds what the queue trigger saw; ``GATE``
holds the sync ``block`` route until a test sets it (so a test can occupy the worker's only thread)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
SEEN: list[dict[str, Any]] = []
GATE = threading.Event()
BLOCKED = threading.Event()


def _where() -> dict[str, Any]:
    try:
        loop: int | None = id(asyncio.get_running_loop())
    except RuntimeError:
        loop = None
    return {"thread": threading.current_thread().name, "loop": loop}


@app.route(route="async/hello", methods=["GET"])
async def async_hello(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0.01)  # a real await: the answer exists only if the coroutine was run to its end
    body = {"greeting": f"hello {req.params.get('name', 'world')} from a coroutine", **_where()}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="sync/hello", methods=["GET"])
def sync_hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(_where()), mimetype="application/json")


@app.route(route="sync/block", methods=["GET"])
def sync_block(req: func.HttpRequest) -> func.HttpResponse:
    BLOCKED.set()
    GATE.wait(60)
    return func.HttpResponse("released")


@app.queue_trigger(arg_name="msg", queue_name="%ASYNC_APP_QUEUE%", connection="AzureWebJobsStorage")
async def async_queue(msg: func.QueueMessage) -> None:
    await asyncio.sleep(0.01)
    body = msg.get_body().decode("utf-8")
    SEEN.append({"body": body, "dequeue_count": msg.dequeue_count, **_where()})
    if body.startswith("fail-once") and msg.dequeue_count == 1:
        raise RuntimeError("first try fails: the host must retry the message")
