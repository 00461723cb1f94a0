"""The queue half of a stand-in Functions host, for e2e tests (``func`` cannot be installed here).

Polls the Azurite queue of every indexed queue-trigger function with host.json's semantics:
- ``batchSize`` messages per receive, run concurrently; a new batch is fetched when the running ones drop to
  ``newBatchThreshold``;
- a message is invisible while its function runs; success deletes it; an exception makes it visible again after
  ``visibilityTimeout`` (configurable here: tests scale it down, the default is host.json's);
- when a failing try had ``dequeue_count >= maxDequeueCount`` the message moves to ``<queue>-poison`` (same
  content), as the host does.
The function gets an ``azure.functions.queue.QueueMessage`` with id, body (bytes) and dequeue_count.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from azure.functions.queue import QueueMessage

from shared import storage
from shared.hostjson import queue_settings
from tests.standin.http import resolve_setting

log = logging.getLogger("tests.standin.queues")
LEASE_SECONDS = 600  # the host keeps a running message invisible (it renews); tests never run this long


@dataclass
class QueueStats:
    invocations: int = 0
    succeeded: int = 0
    failed: int = 0
    moved_to_poison: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass
class _Trigger:
    function_name: str
    queue_name: str
    arg_name: str
    user_function: Any


class StandinQueueHost:
    """Run ``functions``' queue triggers against the queues named by their (resolved) bindings."""

    def __init__(self, functions: list[Any], *, visibility_timeout: float | None = None,
                 poll_interval: float = 0.05) -> None:
        settings = queue_settings()
        self.batch_size = settings.batch_size
        self.new_batch_threshold = settings.new_batch_threshold
        self.max_dequeue_count = settings.max_dequeue_count
        self.visibility_timeout = settings.visibility_timeout if visibility_timeout is None else visibility_timeout
        self.poll_interval = poll_interval
        self.stats = QueueStats()
        self.triggers: list[_Trigger] = []
        for fn in functions:
            for binding in json.loads(fn.get_function_json())["bindings"]:
                if binding["type"] == "queueTrigger":
                    self.triggers.append(_Trigger(fn.get_function_name(), resolve_setting(binding["queueName"]),
                                                  binding["name"], fn.get_user_function()))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(max_workers=self.batch_size * max(1, len(self.triggers)),
                                        thread_name_prefix="standin-queue")
        self._running = 0
        self._running_lock = threading.Condition()

    def start(self) -> "StandinQueueHost":
        for trigger in self.triggers:
            storage.queue(trigger.queue_name)
            thread = threading.Thread(target=self._poll, args=(trigger,), daemon=True,
                                      name=f"standin-poll-{trigger.function_name}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    @property
    def busy(self) -> int:
        with self._running_lock:
            return self._running

    def _poll(self, trigger: _Trigger) -> None:
        client = storage.queue(trigger.queue_name)
        while not self._stop.is_set():
            with self._running_lock:
                while self._running > self.new_batch_threshold and not self._stop.is_set():
                    self._running_lock.wait(0.1)
            try:
                messages = list(client.receive_messages(messages_per_page=self.batch_size,
                                                        max_messages=self.batch_size,
                                                        visibility_timeout=LEASE_SECONDS))
            except Exception as exc:  # noqa: BLE001 - keep polling (Azurite restarting, queue not there yet)
                log.warning("receive from %s failed: %s", trigger.queue_name, exc)
                messages = []
            if not messages:
                self._stop.wait(self.poll_interval)
                continue
            for message in messages:
                with self._running_lock:
                    self._running += 1
                self._pool.submit(self._invoke, trigger, client, message)

    def _invoke(self, trigger: _Trigger, client: Any, message: Any) -> None:
        try:
            content = message.content
            body = content.encode("utf-8") if isinstance(content, str) else bytes(content or b"")
            qm = QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                              pop_receipt=message.pop_receipt)
            self.stats.add(invocations=1)
            try:
                trigger.user_function(**{trigger.arg_name: qm})
            except Exception as exc:  # noqa: BLE001 - the host logs and retries
                self.stats.add(failed=1)
                log.info("%s failed (try %s): %s", trigger.function_name, message.dequeue_count, exc)
                if message.dequeue_count >= self.max_dequeue_count:
                    storage.queue(trigger.queue_name + "-poison").send_message(content)
                    client.delete_message(message.id, message.pop_receipt)
                    self.stats.add(moved_to_poison=1)
                else:
                    client.update_message(message.id, message.pop_receipt,
                                          visibility_timeout=max(0, round(self.visibility_timeout)))
                return
            self.stats.add(succeeded=1)
            client.delete_message(message.id, message.pop_receipt)
        except Exception:  # noqa: BLE001
            log.exception("stand-in host could not settle message %s", getattr(message, "id", "?"))
        finally:
            with self._running_lock:
                self._running -= 1
                self._running_lock.notify_all()

    def wait_idle(self, queue_names: list[str] | None = None) -> bool:
        """True when no function runs and the queues hold no messages (visible or not)."""
        if self.busy:
            return False
        names = queue_names or [t.queue_name for t in self.triggers]
        for name in names:
            props = storage.queue(name).get_queue_properties()
            if props.approximate_message_count:
                return False
        return not self.busy
