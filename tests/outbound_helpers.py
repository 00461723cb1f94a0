"""Helpers shared by the outbound tests: put messages on queues, read poison queues and ledger rows."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import socket
from typing import Any, Iterator

from shared import ledger, storage


_numbers = itertools.count(random.randrange(1000, 9000))


def fresh_number() -> str:
    """A recipient no other test of this session uses: reconciliation looks at every unresolved send of ours to a
    recipient (the attempt index), so tests sharing one Azurite must not share recipients by accident."""
    return f"+1628555{next(_numbers) % 10000:04d}"


@contextlib.contextmanager
def twilio_unreachable() -> Iterator[None]:
    """Twilio refuses connections (nothing listens on its port): observed not sent, a failed try each time."""
    from tests.conftest import reset_app_state

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    saved = os.environ.get("TWILIO_API_BASE_URL")
    os.environ["TWILIO_API_BASE_URL"] = f"http://127.0.0.1:{port}"
    reset_app_state()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TWILIO_API_BASE_URL", None)
        else:
            os.environ["TWILIO_API_BASE_URL"] = saved
        reset_app_state()


def sms_queue() -> str:
    return os.environ["SMS_QUEUE"]


def call_queue() -> str:
    return os.environ["CALL_QUEUE"]


def put(queue_name: str, message: dict[str, Any] | str | bytes) -> None:
    text = json.dumps(message) if isinstance(message, dict) else message
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    storage.queue(queue_name).send_message(text)


def drain(queue_name: str) -> list[str]:
    """Receive and delete every visible message of a queue; returns their texts."""
    client = storage.queue(queue_name)
    texts: list[str] = []
    while True:
        batch = list(client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=60))
        if not batch:
            return texts
        for message in batch:
            texts.append(message.content)
            client.delete_message(message.id, message.pop_receipt)


def poison(queue_name: str) -> list[dict[str, Any]]:
    """The dead letters of a queue, parsed (and removed)."""
    return [json.loads(text) for text in drain(queue_name + "-poison")]


def row(kind: str, ident: str) -> ledger.Row | None:
    return ledger.get(kind, ident)
