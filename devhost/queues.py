"""The queue half of the local Functions host (also the tests' and the bench's queue host).

Polls the storage queue of every indexed queue-trigger function with host.json's semantics:
- ``batchSize`` messages per receive; a new batch is fetched when the running ones drop to
  ``newBatchThreshold``; an empty queue is polled again after ``poll_interval`` (doubling up to
  ``maxPollingInterval`` when ``max_polling_interval`` is given, as the host backs off);
- a message is invisible while its function runs; success deletes it; an exception makes it visible again after
  ``visibilityTimeout`` (configurable here: tests scale it down, the default is host.json's);
- when a failing try had ``dequeue_count >= maxDequeueCount`` the message moves to ``<queue>-poison`` (same
  content), as the host does.
Sync invocations run on the worker's thread pool (``devhost.worker.WorkerPool``, ``PYTHON_THREADPOOL_THREAD_COUNT``
threads), so however many messages a batch holds, at most that many sync functions run at once; an ``async def``
function runs on the worker's event loop (awaited: its message is settled when the coroutine ends).
The function gets what the Python worker builds: azure.functions' own ``QueueMessageInConverter`` decoding the
message as a string, with the trigger metadata ``Id``, ``DequeueCount``, ``InsertionTime``, ``ExpirationTime``,
``NextVisibleTime`` and ``PopReceipt``.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
import uuid
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.functions import meta
from azure.functions.queue import QueueMessage, QueueMessageInConverter

from shared import storage
from shared.hostjson import queue_settings

from .settings import resolve_setting
from .worker import WorkerPool

log = logging.getLogger("devhost.queues")
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

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


def _iso(moment: datetime | None) -> meta.Datum | None:
    return None if moment is None else meta.Datum(moment.isoformat(), "string")


def queue_message(message: Any) -> QueueMessage:
    """What the Python worker hands a queue-triggered function for a received storage message."""
    content = message.content
    text = content if isinstance(content, str) else bytes(content or b"").decode("utf-8", "replace")
    metadata = {
        "Id": meta.Datum(message.id, "string"),
        "DequeueCount": meta.Datum(message.dequeue_count, "int"),
        "PopReceipt": meta.Datum(message.pop_receipt, "string"),
        "InsertionTime": _iso(message.inserted_on),
        "ExpirationTime": _iso(message.expires_on),
        "NextVisibleTime": _iso(message.next_visible_on),
    }
    return QueueMessageInConverter.decode(meta.Datum(text, "string"),
                                          trigger_metadata={k: v for k, v in metadata.items() if v is not None})


class QueueHost:
    """Run ``functions``' queue triggers against the queues named by their (resolved) bindings."""

    def __init__(self, functions: list[Any], *, visibility_timeout: float | None = None,
                 poll_interval: float = 0.05, max_polling_interval: float | None = None,
                 pool: WorkerPool | None = None) -> None:
        settings = queue_settings()
        self.batch_size = settings.batch_size
        self.new_batch_threshold = settings.new_batch_threshold
        self.max_dequeue_count = settings.max_dequeue_count
        self.visibility_timeout = settings.visibility_timeout if visibility_timeout is None else visibility_timeout
        self.poll_interval = poll_interval
        self.max_polling_interval = max(poll_interval, max_polling_interval or poll_interval)
        self.stats = QueueStats()
        self.triggers: list[_Trigger] = []
        for fn in functions:
            for binding in json.loads(fn.get_function_json())["bindings"]:
                if binding["type"] == "queueTrigger":
                    self.triggers.append(_Trigger(fn.get_function_name(), resolve_setting(binding["queueName"]),
                                                  binding["name"], fn.get_user_function()))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._own_pool = pool is None
        self.pool = pool or WorkerPool()
        self._running = 0
        self._running_lock = threading.Condition()
        # The host's side of async invocations: settling their messages (blocking storage calls) never runs on
        # the worker's event loop.
        self._settler = ThreadPoolExecutor(max_workers=4, thread_name_prefix="devhost-settle")

    def describe(self) -> list[str]:
        """One line per queue function, as ``func start`` lists them."""
        return [f"{t.function_name}: queueTrigger ({t.queue_name})" for t in self.triggers]

    def start(self) -> "QueueHost":
        for trigger in self.triggers:
            try:
                storage.queue(trigger.queue_name)
            except Exception as exc:  # noqa: BLE001 - the poller keeps trying, as the host's listener does
                log.warning("queue %s not reachable yet: %s", trigger.queue_name, type(exc).__name__)
            thread = threading.Thread(target=self._poll, args=(trigger,), daemon=True,
                                      name=f"devhost-poll-{trigger.function_name}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop fetching, let the running invocations finish (messages not started stay invisible until their
        lease ends, as when the real host shuts down)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._running_lock:
            self._running_lock.wait_for(lambda: self._running == 0, timeout=30)
        self._settler.shutdown(wait=True)
        if self._own_pool:
            self.pool.shutdown()

    @property
    def busy(self) -> int:
        with self._running_lock:
            return self._running

    def _poll(self, trigger: _Trigger) -> None:
        client: Any = None
        idle_wait = self.poll_interval
        while not self._stop.is_set():
            with self._running_lock:
                while self._running > self.new_batch_threshold and not self._stop.is_set():
                    self._running_lock.wait(0.1)
            try:
                client = client or storage.queue(trigger.queue_name)
                messages = list(client.receive_messages(messages_per_page=self.batch_size,
                                                        max_messages=self.batch_size,
                                                        visibility_timeout=LEASE_SECONDS))
            except Exception as exc:  # noqa: BLE001 - keep polling (Azurite restarting, queue not there yet)
                log.warning("receive from %s failed: %s", trigger.queue_name, type(exc).__name__)
                messages = []
            if not messages:
                self._stop.wait(idle_wait)
                idle_wait = min(idle_wait * 2, self.max_polling_interval)
                continue
            idle_wait = self.poll_interval
            for message in messages:
                if self._stop.is_set():
                    break  # not started: it reappears when its lease ends, as with the real host
                with self._running_lock:
                    self._running += 1
                self._dispatch(trigger, client, message)

    def _dispatch(self, trigger: _Trigger, client: Any, message: Any) -> None:
        """A sync function runs (and its message is settled) on a pool thread; a coroutine function runs on the
        worker's event loop and its message is settled by the host's own thread once it finishes."""
        if not trigger.is_async:
            self.pool.submit(self._invoke, trigger=trigger, client=client, message=message)
            return
        invocation, started = str(uuid.uuid4()), time.perf_counter()
        self.stats.add(invocations=1)
        try:
            future = self.pool.invoke(trigger.user_function, **{trigger.arg_name: queue_message(message)})
        except Exception as exc:  # noqa: BLE001 - settled as a failed try
            self._settle(trigger, client, message, invocation, started, exc)
            return

        def settle(done: Future) -> None:
            error = CancelledError() if done.cancelled() else done.exception()
            self._settler.submit(self._settle, trigger, client, message, invocation, started, error)

        future.add_done_callback(settle)

    def _invoke(self, trigger: _Trigger, client: Any, message: Any) -> None:
        invocation, started = str(uuid.uuid4()), time.perf_counter()
        self.stats.add(invocations=1)
        error: BaseException | None = None
        try:
            trigger.user_function(**{trigger.arg_name: queue_message(message)})
        except Exception as exc:  # noqa: BLE001 - the host logs and retries
            error = exc
        self._settle(trigger, client, message, invocation, started, error)

    def _settle(self, trigger: _Trigger, client: Any, message: Any, invocation: str, started: float,
                error: BaseException | None) -> None:
        """Delete the message after a success; after a failure make it visible again after ``visibilityTimeout``,
        or move it to ``<queue>-poison`` when this was try ``maxDequeueCount``."""
        try:
            if error is not None:
                self.stats.add(failed=1)
                log.info("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms, DequeueCount=%s): %s",
                         trigger.function_name, invocation, (time.perf_counter() - started) * 1000,
                         message.dequeue_count, type(error).__name__)
                if message.dequeue_count >= self.max_dequeue_count:
                    storage.queue(trigger.queue_name + "-poison").send_message(message.content)
                    client.delete_message(message.id, message.pop_receipt)
                    self.stats.add(moved_to_poison=1)
                    log.warning("Message has reached MaxDequeueCount of %s. Moving message to queue '%s'.",
                                self.max_dequeue_count, trigger.queue_name + "-poison")
                else:
                    client.update_message(message.id, message.pop_receipt,
                                          visibility_timeout=max(0, round(self.visibility_timeout)))
                return
            self.stats.add(succeeded=1)
            client.delete_message(message.id, message.pop_receipt)
            log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", trigger.function_name,
                     invocation, (time.perf_counter() - started) * 1000)
        except Exception:  # noqa: BLE001
            log.exception("local host could not settle message %s", getattr(message, "id", "?"))
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
