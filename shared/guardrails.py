"""Spending guardrails on Table storage: a per-recipient cap, a global hourly budget, and a per-sender reply limit.

Why: a producer stuck in a loop can text one person a thousand times, a compromised one can spend the account, and
a flood of inbound texts can become a flood of paid replies. Each guard is off while its setting is empty.

All three live in one table, ``guardrails``, on partitions spread by the ledger's hash
(:func:`shared.ledger.partition_key`: ``<prefix>-<2 hex digits>`` over 256 partitions), so no guard adds a hot
partition. Every change is insert-if-absent or an etag-guarded MERGE retried on conflict, so concurrent instances
never both take the last unit of a limit. Within a process, threads do not race each other for a row: a budget
shard has one writer at a time (a send takes a shard nobody in its process is writing, else waits for one), and a
recipient's row too (64 striped locks): the worker's 16 threads otherwise lost a race on about one send in four,
each a wasted read and write and a back-off.

**Per recipient** (``MAX_SENDS_PER_RECIPIENT_PER_HOUR`` = N): one row per phone number (``recipient-xx``,
RowKey = the E.164 number; ``whatsapp:+1…`` and ``+1…`` are one recipient: one person, one phone, and calls
count too). The row holds a sliding-window log: a short hash of each send's ``kind:id`` with its time, pruned to
the last ``WINDOW_SECONDS``. A send whose id is already in the log is not counted again (queue redeliveries,
retries after a transient error, a copy deferred by the budget); otherwise it is appended if fewer than N are
live, else refused. The log and the check change in one etag-guarded write, so 16 concurrent sends to one number
at the cap give exactly N (losers re-read and decide again). Cost per send: 1 read + 1 write (+1 pair per lost
race). N is at most ``MAX_RECIPIENT_CAP`` (the log must fit one property).

**Global budget** (``MAX_SENDS_PER_HOUR`` = B): per clock hour (UTC), split into ``BUDGET_SHARDS`` (16) counters
on 16 spread partitions, shard i holding B // 16 (+1 for the first B % 16 shards) sends, so the sum is exactly B
and no single row takes every send. A send starts at a random shard and takes one unit with an etag-guarded
increment; a full shard sends it to the next. When all are full the send is deferred (``BudgetExhaustedError``:
the sender puts it back on its queue invisible until the next hour, plus a little jitter). Overrun by concurrency:
none (every unit is one successful conditional write). Margins, all on the safe side or from the clock: a unit is
spent per delivery that reaches the send step, so a retried or duplicate delivery may spend a second one (fewer
sends, never more); each instance's clock decides when an hour starts (a row never goes back to an older hour, so
skew of less than an hour moves the boundary, it does not add units; a row written by a clock hours off is
restarted, with an error line); and being per clock hour, up to 2 x B can go out in the 60
minutes around a boundary. Cost per send: 1 read + 1 write while the shard it lands on has room (+1 pair per lost
race); up to 16 reads to find the last units; none once this instance saw every shard full this hour (full shards
stay full until the hour ends, so that is cached in process).

**Replies** (``AUTO_REPLY_MIN_INTERVAL_SECONDS`` = T): one row per inbound sender number (``reply-xx``) holding
when we last replied; a reply is allowed when none was sent in the last T seconds, and taking it is one
insert or etag-guarded update (so two webhooks racing give one reply). Cost per reply: 1 read + 1 write.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import ledger, storage
from .config import InvalidSettingError, Settings
from .destinations import phone_number
from .throttled_log import log_throttled

log = logging.getLogger("switchboard.guardrails")

TABLE = "guardrails"
WINDOW_SECONDS = 3600.0      # "per hour"; tests shorten it to see a window roll over
BUDGET_SHARDS = 16
MAX_RECIPIENT_CAP = 1000     # 1000 log entries of ~22 chars fit one 64 KiB string property
MAX_TRIES = 64               # conditional writes lost in a row before giving up (the queue retries later)
DEFER_JITTER_SECONDS = 60    # spread of the wake-ups of sends deferred to the next hour (at most 5% of the window)
_TOKEN_CHARS = 12            # 48 bits of sha256(kind:id): collisions between two live sends of one number ~ never


class GuardrailBusyError(RuntimeError):
    """A guard's row changed under us ``MAX_TRIES`` times in a row: retry the work later."""


class RecipientRateLimitedError(RuntimeError):
    """The recipient already got ``count`` sends in the last ``window_seconds`` (the cap)."""

    def __init__(self, count: int, cap: int, window_seconds: float) -> None:
        super().__init__(f"recipient got {count} sends in the last {window_seconds:g} s "
                         f"(MAX_SENDS_PER_RECIPIENT_PER_HOUR = {cap})")
        self.count = count
        self.cap = cap
        self.window_seconds = window_seconds


class BudgetExhaustedError(RuntimeError):
    """All of ``MAX_SENDS_PER_HOUR`` is spent for this hour; ``retry_in`` seconds until the next one has room."""

    def __init__(self, budget: int, window_seconds: float, retry_in: float) -> None:
        super().__init__(f"{budget} sends per {window_seconds:g} s spent (MAX_SENDS_PER_HOUR); "
                         f"the next window opens in {retry_in:.0f} s")
        self.budget = budget
        self.retry_in = retry_in


# ---------------------------------------------------------------- settings


def _limit(settings: Settings, name: str, value: str, *, maximum: float | None = None,
           integer: bool = True) -> float | None:
    """A guard's setting as a positive number, None when empty (off); anything else is an InvalidSettingError."""
    text = value.strip()
    if not text:
        return None
    try:
        number = int(text) if integer else float(text)
    except ValueError:
        raise InvalidSettingError(name, f"must be a {'whole ' if integer else ''}number or empty, "
                                        f"not {text[:20]!r}") from None
    if not (number > 0 and math.isfinite(number)) or (maximum is not None and number > maximum):
        upper = f" and at most {maximum:g}" if maximum is not None else ""
        raise InvalidSettingError(name, f"must be above 0{upper} (empty = off), not {text[:20]!r}")
    return number


def recipient_cap(settings: Settings) -> int | None:
    value = _limit(settings, "MAX_SENDS_PER_RECIPIENT_PER_HOUR", settings.max_sends_per_recipient_per_hour,
                   maximum=MAX_RECIPIENT_CAP)
    return None if value is None else int(value)


def hourly_budget(settings: Settings) -> int | None:
    value = _limit(settings, "MAX_SENDS_PER_HOUR", settings.max_sends_per_hour)
    return None if value is None else int(value)


def reply_interval(settings: Settings) -> float | None:
    return _limit(settings, "AUTO_REPLY_MIN_INTERVAL_SECONDS", settings.auto_reply_min_interval_seconds,
                  integer=False)


# ---------------------------------------------------------------- table helpers


def _now() -> float:
    return time.time()


def _get(partition: str, row_key: str) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return storage.table(TABLE).get_entity(partition_key=partition, row_key=row_key)
    except ResourceNotFoundError:
        return None


def _write(existing: Any, entity: dict[str, Any]) -> bool:
    """Insert, or MERGE over ``existing`` if unchanged since read; False when another writer got there first."""
    return storage.write_if_unchanged(TABLE, existing, entity)


def _back_off(attempt: int) -> None:
    """Lost a conditional write: wait a little (random, growing) so racing writers do not collide again."""
    time.sleep(random.uniform(0, 0.005 * min(attempt + 1, 20)))


# ---------------------------------------------------------------- per recipient


def recipient_key(address: str) -> str:
    """One recipient = one phone number, whatever the channel (``whatsapp:+1…`` counts with ``+1…``)."""
    return phone_number(address)


def _token(kind: str, ident: str) -> str:
    return hashlib.sha256(f"{kind}\x00{ident}".encode("utf-8", "surrogatepass")).hexdigest()[:_TOKEN_CHARS]


def _entries(text: str) -> list[tuple[str, int]]:
    entries = []
    for item in text.split(","):
        token, _, at = item.partition("@")
        if token and at.isdigit():
            entries.append((token, int(at)))
    return entries


_recipient_writers = [threading.Lock() for _ in range(64)]  # striped: numbers sharing a stripe wait briefly


def count_recipient_send(address: str, kind: str, ident: str, cap: int) -> int:
    """Count send ``kind``/``ident`` to ``address`` in its sliding window and return the number of sends in the
    window, this one included; already counted → the same number, not counted again. Raises
    :class:`RecipientRateLimitedError` when ``cap`` sends are in the window already."""
    key = recipient_key(address)
    partition = ledger.partition_key("recipient", key)
    token = _token(kind, ident)
    window_ms = int(WINDOW_SECONDS * 1000)
    with _recipient_writers[hash(key) % len(_recipient_writers)]:  # one writer per number in this process
        return _count_in_window(partition, key, token, window_ms, cap)


def _count_in_window(partition: str, key: str, token: str, window_ms: int, cap: int) -> int:
    for attempt in range(MAX_TRIES):
        now_ms = int(_now() * 1000)
        existing = _get(partition, key)
        live = [(t, at) for t, at in _entries(str(existing.get("sends", "")) if existing else "")
                if now_ms - at < window_ms]
        if any(t == token for t, _ in live):
            return len(live)
        if len(live) >= cap:
            raise RecipientRateLimitedError(len(live), cap, WINDOW_SECONDS)
        live.append((token, now_ms))
        entity = {"PartitionKey": partition, "RowKey": key, "count": len(live),
                  "sends": ",".join(f"{t}@{at}" for t, at in live)}
        if _write(existing, entity):
            return len(live)
        _back_off(attempt)
    raise GuardrailBusyError(f"recipient counter busy: {MAX_TRIES} concurrent changes in a row")


# ---------------------------------------------------------------- global budget


@dataclass(frozen=True)
class BudgetUnit:
    """One unit of the hourly budget, taken from ``shard`` in ``window``."""

    shard: int
    window: int


_budget_writers = [threading.Lock() for _ in range(BUDGET_SHARDS)]  # one writer per shard row in this process
_full_lock = threading.Lock()
_full: set[tuple[float, int, int, int, int]] = set()  # (window length, budget, shards, window, shard) seen full


def _shares(budget: int) -> list[int]:
    shards = min(BUDGET_SHARDS, budget)
    return [budget // shards + (1 if i < budget % shards else 0) for i in range(shards)]


def take_budget_unit(budget: int) -> BudgetUnit:
    """Take one send from this window's budget, or raise :class:`BudgetExhaustedError` (see the module docstring)."""
    now = _now()
    window = int(now // WINDOW_SECONDS)
    shares = _shares(budget)
    start = random.randrange(len(shares))
    order = [(start + step) % len(shares) for step in range(len(shares))]
    # First a shard no other thread of this process is writing (16 threads on 16 shards collide often: each
    # collision a lost race, a wasted read and write); then, all busy, wait for one.
    for wait in (False, True):
        for shard in order:
            seen = (WINDOW_SECONDS, budget, len(shares), window, shard)
            if seen in _full:
                continue
            writer = _budget_writers[shard]
            if not writer.acquire(blocking=wait):
                continue
            try:
                taken = _take_from_shard(shard, shares[shard], window)
            finally:
                writer.release()
            if taken is not None:
                return taken
            with _full_lock:
                _full.add(seen)
                if len(_full) > 4 * BUDGET_SHARDS:  # keep only this window's marks
                    _full.intersection_update({s for s in _full if s[3] >= window})
    retry_in = (window + 1) * WINDOW_SECONDS - now
    raise BudgetExhaustedError(budget, WINDOW_SECONDS, retry_in)


def _take_from_shard(shard: int, share: int, window: int) -> BudgetUnit | None:
    row_key = f"budget-{shard:02d}"
    partition = ledger.partition_key("budget", row_key)
    for attempt in range(MAX_TRIES):
        existing = _get(partition, row_key)
        row_window = int(str(existing.get("window", -1))) if existing else -1  # a string: Int32 is too small
        count = int(existing.get("count", 0)) if existing else 0
        if row_window == window + 1:
            # Another instance's clock is a little ahead and started the next hour: count into it (a row never
            # goes back one hour, so clock skew moves the boundary without adding units).
            pass
        elif row_window != window:  # a new hour (or a row written by a clock hours off): start from zero
            if row_window > window:
                log_throttled(log, logging.ERROR, "budget clock", "budget shard %d was written for a window %d "
                              "hours ahead of this instance's clock; restarting it", shard, row_window - window)
            row_window, count = window, 0
        if count >= share:
            return None
        entity = {"PartitionKey": partition, "RowKey": row_key, "window": str(row_window), "count": count + 1,
                  "share": share}
        if _write(existing, entity):
            return BudgetUnit(shard, row_window)
        _back_off(attempt)
    raise GuardrailBusyError(f"budget shard {shard} busy: {MAX_TRIES} concurrent changes in a row")


def defer_seconds(retry_in: float) -> int:
    """How long a deferred send stays invisible: until the next window, plus jitter so the wake-ups of a backlog
    do not all hit storage in the same second."""
    jitter = random.uniform(0, min(DEFER_JITTER_SECONDS, WINDOW_SECONDS * 0.05))
    return max(1, math.ceil(retry_in + jitter))


def reset_caches() -> None:
    """Forget which budget shards this process saw full (tests reuse windows across settings)."""
    with _full_lock:
        _full.clear()


# ---------------------------------------------------------------- replies to inbound messages


def take_reply_slot(sender: str, interval: float) -> float | None:
    """Whether we may reply to ``sender`` now: None when yes (and the slot is taken), else the seconds since the
    last reply to that number. Two webhooks racing for one sender: one reply."""
    key = recipient_key(sender)
    partition = ledger.partition_key("reply", key)
    for attempt in range(MAX_TRIES):
        now = _now()
        existing = _get(partition, key)
        if existing is not None:
            since = now - float(existing.get("last_reply_at", 0) or 0)
            if since < interval:  # negative: another instance's clock is ahead; it replied just now
                return since
        if _write(existing, {"PartitionKey": partition, "RowKey": key, "last_reply_at": now}):
            return None
        _back_off(attempt)
    raise GuardrailBusyError(f"reply limiter busy: {MAX_TRIES} concurrent changes in a row")
