"""Pacing: submit each sender's messages to Twilio at the rate that sender really delivers, from every instance.

Why: Twilio accepts API requests far faster than a sender delivers (a long code 1 message segment per second, a
toll-free number 3, a short code 100, WhatsApp ~80), and holds the rest in a per-sender queue of about 10 hours;
past that a create fails (21611), or with a Messaging Service the message fails later (30001, queue overflow).
What sits in Twilio's queue can no longer be stopped: a STOP or a cancel after submission does not recall it, and a
one-time code waits behind a whole campaign. So the queue that waits is ours, where STOP, cancel and priority
still apply, and Twilio's holds only ``PACING_LEAD_SECONDS`` of sending, enough never to run dry.

How (one budget for all instances, on Table storage, table ``pacing``):
- A sender's rate R (``SENDER_RATES``, else a default by number type: :data:`DEFAULT_RATES`) is split over
  ``ceil(R / SHARD_MPS)`` shards, each a row on its own spread partition holding R/shards, so no partition takes
  more than ~``SHARD_MPS`` writes/s even at a short code's 100 MPS. A message reads one random shard; if that one
  has no room it reads a second and uses the one whose turns end sooner (two choices keep shards even).
- A shard row keeps ``horizon``, how far Twilio's queue for it reaches (each submission adds ``n / rate`` for
  ``n`` segments), and ``next_free``, the end of the turns handed out. A message goes now when Twilio's queue
  would still end within its share of the lead (``NORMAL_SHARE``, ``HIGH_SHARE``); an idle queue counts from
  ``TRANSIT_SHARE`` of the lead ahead, the time a paced message takes to reach Twilio. Whoever is in hand when
  there is room goes: a message whose holder is late (a busy host) or whose turn went unused does not leave
  Twilio's queue dry. Each process has one writer per shard row (a lock around its read and etag-guarded
  MERGE): the worker's 16 threads racing for one row lost two races a message, each a wasted read and write;
  other instances still race through the etag, and a lost race re-reads.
- Otherwise a normal message takes the next turn (``next_free`` moves by its ``n / rate``): a ticket row
  (``ticket-xx``, RowKey = the id) holds it, and the message goes back on our queue, invisible until
  ``EARLY_RETURN_SECONDS`` before its room opens (the queue's whole seconds bring it back up to a second
  later), with a ``send_at`` (the moment it was paced: already past when it comes back, so it never holds a copy
  back; its presence is what makes the pacer look for a ticket, one read, only for such messages). Back, it goes
  if there is room, or would be when its room opens (up to ``HIGH_SHARE`` of the lead). If there is none:
  early or just due (copies a moment early or late overtake each other), it goes back until its own turn, or
  for a second, into the room the one that overtook it leaves; late (its room went to a newcomer, a high
  message, a late crowd behind a busy host's backlog) it takes a new turn after the last one handed out, so the
  holders still on time keep theirs. A newcomer that goes in a holder's room does not move ``next_free``: that
  holder moves instead, and counting both would leave a turn nobody uses. So a campaign keeps about its order,
  and Twilio's queue holds about the lead.
- A turn left unused (a cancelled holder, a STOP, a granted room given back by ``give_back``) would leave
  Twilio's queue a turn short from then on. So a holder away for more than ``LINE_MIN_HOP_SECONDS`` also stands
  in its shard's *line* (same table, one partition per shard, RowKey = when its copy comes back, latest first,
  + id, with the copy's queue message id and pop receipt). An unused turn calls the *last* holder in line
  forward (its copy becomes visible now: ``update_message``), so the schedule ends a turn sooner instead of the
  gap moving down it: a holder that goes seconds early moves ``next_free`` back by its turn.
- ``priority: high`` (one-time codes, alerts) never takes a turn: it goes whenever Twilio's queue is within the
  whole lead, so it waits there behind at most the lead's worth of a campaign (the rest of the campaign is still
  in our queue, where STOP and cancel apply), and later turns queue behind it.
- Nothing is dropped: a message sent back comes back. No thread waits for a slot.
- Tickets and places in line are not read again once their message went; Table storage has no expiry, so
  :func:`prune` (``python -m shared.ops pacing prune``) deletes those of turns long past.

Segments are counted as Twilio counts them (:func:`segments`): GSM-7 160 per message or 153 per part of a long
one (characters of the extension table take two), UCS-2 70 or 67 UTF-16 units; MMS, WhatsApp and Content
templates 1. Campaign cancellation (``python -m shared.ops sends cancel --campaign TAG``) lives here too, in table
``cancellations``: a message with that ``campaign`` that has not been submitted yet never is.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import storage
from .config import InvalidSettingError

log = logging.getLogger(__name__)

TABLE = "pacing"
CANCELLATIONS = "cancellations"
SHARD_MPS = 10.0          # the most one shard row (one partition) paces
NORMAL_SHARE = 0.70       # normal messages fill this share of the lead; the rest is room for high priority
HIGH_SHARE = 0.95         # high ones fill up to this share (the rest: on a busy host a message granted room
                          # reaches Twilio a moment later than planned, and the lead is a limit)
TRANSIT_SHARE = 0.25      # an idle queue restarts this share of the lead from now: the time a paced message takes
                          # to reach Twilio (our checks, the claim, the request), so it does not arrive on top
MAX_SHARDS = 64
EARLY_RETURN_SECONDS = 0.5    # a holder's copy shows this much before its room opens (the queue's whole seconds
                              # make it up to a second later): it may go that early (< HIGH_SHARE of the lead)
QUEUE_ROUNDING_SECONDS = 1.0  # visibility timeouts are whole seconds: a copy comes back up to this much late
ROOM_SLACK = 0.001       # seconds: float rounding, not a tolerance
MAX_TRIES = 8             # re-reads after lost races before giving up for this delivery (it is retried)
LINE_MIN_HOP_SECONDS = 3.0    # a holder away longer than this stands in the line (it can be called forward)
CALL_FORWARD_SPARE_ROWS = 3  # places tried beyond ``count`` when copies are gone (callers at once pick the same)
CALL_FORWARD_GAIN = 0.5   # seconds: a holder due back sooner than this is not worth calling
# Messages per second by sender type when SENDER_RATES does not name the sender (Twilio's documented defaults
# for an unregistered account; a 10DLC campaign's rate comes from its trust tier: set it in SENDER_RATES).
DEFAULT_RATES: Mapping[str, float] = {"longcode": 1.0, "tollfree": 3.0, "shortcode": 100.0, "whatsapp": 80.0,
                                      "service": 1.0}
# Who a rate can name: a number, a WhatsApp address, a Messaging Service, a short code (as Twilio writes them).
_SENDER_NAME = re.compile(r"(?:whatsapp:)?\+[1-9][0-9]{1,14}|MG[0-9a-fA-F]{32}|[0-9]{3,8}")
TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")

_GSM7 = frozenset("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


class PacingBusyError(RuntimeError):
    """Too many instances raced for one sender's shards at once; the delivery is retried."""


@dataclass(frozen=True)
class SenderRates:
    """Messages per second by sender (a number, ``whatsapp:`` address or ``MG…`` service SID) and by type."""

    by_sender: Mapping[str, float]
    by_type: Mapping[str, float]

    def rate_for(self, sender: str) -> float:
        return self.by_sender.get(sender) or self.by_type.get(sender_type(sender), 1.0)


def parse_rates(text: str) -> SenderRates:
    """``SENDER_RATES``: comma-separated ``sender=mps`` pairs, where sender is a number (``+18005550100``), a
    ``whatsapp:+…`` address, a Messaging Service SID (``MG…``) or a type (``longcode``, ``tollfree``,
    ``shortcode``, ``whatsapp``, ``service``) that sets the default for its kind. Empty = the defaults."""
    by_sender: dict[str, float] = {}
    by_type = dict(DEFAULT_RATES)
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not name.strip() or not (0 < rate <= 10_000) or math.isnan(rate):
            raise InvalidSettingError("SENDER_RATES", f"{item!r} is not sender=messages-per-second (0 < mps <= "
                                                      "10000)")
        name = name.strip()
        if name not in DEFAULT_RATES and not _SENDER_NAME.fullmatch(name):
            # A typo here would pace that sender at its type's default without a word: say so instead.
            raise InvalidSettingError("SENDER_RATES", f"{name[:40]!r} is not a sender: +E.164, whatsapp:+E.164, "
                                      f"MG… service SID, a short code, or a type ({', '.join(DEFAULT_RATES)})")
        (by_type if name in DEFAULT_RATES else by_sender)[name] = rate
    return SenderRates(by_sender, by_type)


def sender_type(sender: str) -> str:
    if sender.startswith("MG"):
        return "service"
    if sender.lower().startswith("whatsapp:"):
        return "whatsapp"
    if sender.startswith(TOLL_FREE_PREFIXES):
        return "tollfree"
    if sender.isdigit() and 4 <= len(sender) <= 6:
        return "shortcode"
    return "longcode"


def segments(body: str | None, *, media: int = 0, whatsapp: bool = False, template: bool = False) -> int:
    """Message segments as Twilio bills and paces them (see the module docstring)."""
    if media or whatsapp or template or not body:
        return 1
    if all(ch in _GSM7 or ch in _GSM7_EXTENSION for ch in body):
        septets = sum(2 if ch in _GSM7_EXTENSION else 1 for ch in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


@dataclass(frozen=True)
class Slot:
    """The pacer's answer: submit now, or come back at ``not_before`` (epoch seconds) holding the slot reserved
    at ``slot`` (``reserved``), or come back in ``wait_seconds`` and ask again (a high message whose reserve is
    momentarily used up)."""

    submit: bool
    wait_seconds: float = 0.0
    reserved: bool = False
    not_before: float = 0.0
    shard: int = 0
    step: float = 0.0   # seconds of the shard's sending this message takes
    line: str = ""      # reserved and away long enough: its place in the shard's line (see ``hold``)
    turn: float = 0.0   # reserved: the turn it holds


def shard_count(rate: float) -> int:
    return max(1, min(MAX_SHARDS, math.ceil(rate / SHARD_MPS)))


def _row_key(sender: str, shard: int) -> tuple[str, str]:
    from .ledger import partition_key

    key = f"{sender}_{shard}"  # no # / \\ ? in a table key
    return partition_key("pace", key), key


def _ticket_key(ident: str) -> tuple[str, str]:
    from .ledger import partition_key

    return partition_key("ticket", ident), ident


def _line_partition(sender: str, shard: int) -> str:
    return f"line-{sender}_{shard}"  # one per shard: its holders in the order their copies come back


_LINE_END_MS = 10**15 - 1


def _line_key(visible_at: float, ident: str = "") -> str:
    """Latest first: the holder whose copy comes back last is the first row of the line's partition."""
    return f"{_LINE_END_MS - min(_LINE_END_MS, max(0, int(visible_at * 1000))):015d}_{ident}"


def _waiting(ident: str, moment: float, turn: float, shard: int, step: float, ahead: float) -> Slot:
    """A holder of ``turn``, back when its room opens less ``EARLY_RETURN_SECONDS`` (at least the queue's 1 s
    from now); away long enough, it also has a place in its shard's line."""
    wait = max(1.0, _opens(turn, step, ahead) - EARLY_RETURN_SECONDS - moment)
    return Slot(False, wait, reserved=True, not_before=moment + wait, shard=shard, step=step, turn=turn,
                line=_line_key(moment + wait, ident) if wait >= LINE_MIN_HOP_SECONDS else "")


def take_slot(sender: str, cost: int, *, rate: float, lead_seconds: float, ident: str, high: bool = False,
              returning: bool = False, now: float | None = None) -> Slot:
    """Ask for ``cost`` segments of ``sender``'s rate for message ``ident`` (see the module docstring).
    ``returning``: the message carries a ``send_at`` (ours, when the pacer sent it back), so it may hold a ticket."""
    ahead = lead_seconds * (HIGH_SHARE if high else NORMAL_SHARE)
    transit = lead_seconds * TRANSIT_SHARE
    shards = shard_count(rate)
    shard_rate = rate / shards
    step = cost / shard_rate
    ticket = _read_ticket(ident) if returning else None
    shard = int(ticket.get("shard", 0) or 0) % shards if ticket is not None else random.randrange(shards)
    lock = _writer(sender, shard)
    lock.acquire()
    try:
        row = _read(sender, shard)
        if ticket is None and shards > 1 and not _has_room(row, step, ahead, transit, now):
            # Busy: a second random shard, and the one whose turns end sooner (two choices keep shards even). Read
            # under its writer, so what we read is what we write over; one a thread of ours is writing is skipped
            # (not waited for while holding this one: two threads crossing would wait for each other).
            other = random.choice([s for s in range(shards) if s != shard])
            other_lock = _writer(sender, other)
            if other_lock.acquire(blocking=False):
                try:
                    other_row = _read(sender, other)
                except BaseException:
                    other_lock.release()
                    raise
                if _value(other_row, "next_free") < _value(row, "next_free"):
                    lock.release()
                    shard, row, lock = other, other_row, other_lock
                else:
                    other_lock.release()
        decision, slot = _decide(sender, shard, row, ticket, ident, step, ahead, transit, lead_seconds * HIGH_SHARE,
                                 high, now)
    finally:
        lock.release()
    if slot is not None:  # a new turn: its ticket
        _write_ticket(ident, slot, shard, step)
    return decision


def _decide(sender: str, shard: int, row: Any, ticket: Any, ident: str, step: float, ahead: float,
            transit: float, reach: float, high: bool, now: float | None) -> tuple[Slot, float | None]:
    """One shard's answer for one message (``take_slot``), written to its row: the Slot, and the turn handed out
    if it took one (for its new ticket)."""
    for _ in range(MAX_TRIES):
        moment = time.time() if now is None else now
        next_free, horizon, held = _value(row, "next_free"), _value(row, "horizon"), _value(row, "held")
        turn = _value(ticket, "slot")
        opens = _opens(turn, step, ahead)
        slot: float | None = None
        # Twilio's queue reaches to ``horizon``; this message may go while it would still end within ``ahead``.
        # Whoever is in hand when there is room goes (a ticket's turn is when to come back, not a gate), so
        # Twilio's queue never runs dry while a holder is late (a busy host) or a turn went unused (STOP, cancel).
        after = max(moment + transit, horizon) + step
        # A holder back before its room opens (its copy shows early, and the queue's whole seconds make copies
        # come back up to a second late, so on average on time) may go if its room would be there when it opens,
        # Twilio's queue draining meanwhile (at most ``reach`` deep).
        early = min(EARLY_RETURN_SECONDS, max(0.0, opens - moment), max(0.0, reach - ahead)) if ticket is not None \
            else 0.0
        if _room(moment, horizon, step, ahead + early, transit):
            # A newcomer in a room that was a holder's does not move ``next_free``: that holder, finding no
            # room, takes the next turn itself (counting both would leave a turn nobody uses).
            values = {"horizon": after}
            if ticket is not None and moment < opens - QUEUE_ROUNDING_SECONDS:
                # Seconds early: called forward, from the end of the schedule. Its turn goes unused, so the
                # schedule is a turn shorter (else the next new turn would leave a gap at its end).
                values["next_free"] = max(moment, next_free - step)
            decision = Slot(True, shard=shard, step=step)
        elif ticket is not None and moment < opens + QUEUE_ROUNDING_SECONDS:
            # Early, or just due (copies a moment early or late overtake each other) and the room was taken: back
            # at its own turn, or in a second, into the room the one that overtook it leaves, keeping its turn.
            return _waiting(ident, moment, turn, shard, step, ahead), None
        elif high:  # the reserve is used up for a moment: ask again shortly, ahead of the queue
            return Slot(False, max(1.0, after - ahead - moment)), None
        else:
            # A new turn after the last one handed out. Also for a holder due or late with no room (a late crowd
            # behind a busy host's backlog): the room went to those on time, and they keep their turns; a line of
            # late places beside the turns would push each of them late in turn.
            slot = max(moment, next_free, horizon)
            values = {"next_free": slot + step, "held": max(held, slot)}
            decision = _waiting(ident, moment, slot, shard, step, ahead)
        if _write(sender, shard, row, values):
            return decision, slot
        row = _read(sender, shard)  # another instance wrote first
    raise PacingBusyError(f"pacing: {MAX_TRIES} lost races for one shard of a sender; retrying later")


_writers: dict[tuple[str, int], threading.Lock] = {}
_writers_guard = threading.Lock()


def _writer(sender: str, shard: int) -> threading.Lock:
    """One writer per shard row in this process. Why: the worker's threads (16 here) all pace the same sender;
    racing for one row, each message lost about two races (a wasted read and a failed write each). Other
    instances still race through the row's etag."""
    key = (sender, shard)
    found = _writers.get(key)
    if found is None:
        with _writers_guard:
            found = _writers.setdefault(key, threading.Lock())
    return found


def give_back(sender: str, granted: Slot) -> None:
    """A submission was granted and then not made (the recipient sent STOP while it waited, a guardrail held it):
    take its segments off the shard's horizon, so the room goes to the next message rather than stay unused.
    Best effort: a lost race or a storage error only costs that room."""
    with _writer(sender, granted.shard):
        for _ in range(MAX_TRIES):
            row = _read(sender, granted.shard)
            horizon, moment = _value(row, "horizon"), time.time()
            if row is None or horizon <= moment:
                return
            if _write(sender, granted.shard, row, {"horizon": max(moment, horizon - granted.step)}):
                break
        else:
            return
    if _value(row, "held") > moment:
        _call_forward_quietly(sender, granted.shard, 1)


def hold(sender: str, reserved: Slot, queue_name: str, message_id: str, pop_receipt: str) -> None:
    """Stand in the shard's line: ``reserved`` (a Slot with a ``line`` place) waits as queue message
    ``message_id`` (its copy, just sent back with that pop receipt) until ``reserved.not_before``. Without this
    the message still comes back at its turn; it only cannot be called forward."""
    if not reserved.line:
        return
    storage.table(TABLE).upsert_entity({
        "PartitionKey": _line_partition(sender, reserved.shard), "RowKey": reserved.line, "queue": queue_name,
        "message_id": message_id, "pop_receipt": pop_receipt, "visible_at": reserved.not_before})


def release(sender: str, ident: str) -> None:
    """A holder that will never be sent (its campaign was cancelled) came back: its turn goes to the last in
    line; one called forward (seconds early) leaves the schedule a turn shorter. Best effort, as
    ``give_back``."""
    ticket = _read_ticket(ident)
    if ticket is None:
        return
    shard = int(ticket.get("shard", 0) or 0)
    turn, step, moment = _value(ticket, "slot"), _value(ticket, "step"), time.time()
    if step > 0 and turn - moment > LINE_MIN_HOP_SECONDS:  # called forward, from the end: a turn shorter
        with _writer(sender, shard):
            row = _read(sender, shard)
            if row is not None:  # a lost race only leaves that turn unused
                _write(sender, shard, row, {"next_free": max(moment, _value(row, "next_free") - step)})
    _call_forward_quietly(sender, shard, 1)


def call_forward(sender: str, shard: int, count: int) -> int:
    """A turn of ``shard`` went unused (a STOP, a cancel): make the copies of the last ``count`` holders in its
    line (those due back latest, and later than ``CALL_FORWARD_GAIN`` from now) visible now. Taken from the end,
    the freed room shortens the schedule instead of moving down it: the holders on time keep their turns. Each
    place is used once: a copy that is gone (sent, or in hand and sent back with a new pop receipt) costs only
    its row, and the next place is tried. Returns how many came."""
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError

    table = storage.table(TABLE)
    moment = time.time()
    rows = table.query_entities("PartitionKey eq @line and RowKey lt @soon",  # a key range: no scan of the past
                                parameters={"line": _line_partition(sender, shard),
                                            "soon": _line_key(moment + CALL_FORWARD_GAIN)},
                                results_per_page=max(1, count) + CALL_FORWARD_SPARE_ROWS)
    called = 0
    for row in itertools.islice(rows, max(0, count) + CALL_FORWARD_SPARE_ROWS):
        if called >= count:
            break
        try:
            storage.queue(str(row["queue"])).update_message(str(row["message_id"]),
                                                            pop_receipt=str(row["pop_receipt"]),
                                                            visibility_timeout=0)
            called += 1
        except HttpResponseError:
            pass  # the copy is gone (sent; in hand; another caller took this place first): try the next
        try:
            table.delete_entity(row["PartitionKey"], row["RowKey"], etag=row.metadata["etag"],
                                match_condition=MatchConditions.IfNotModified)
        except HttpResponseError:
            pass  # it stood in line again meanwhile: that newer place stays
    return called


def _call_forward_quietly(sender: str, shard: int, count: int) -> None:
    try:
        call_forward(sender, shard, count)
    except Exception as exc:  # noqa: BLE001 - only throughput is lost: each holder still comes back at its turn
        log.warning("pacing: holders not called forward (%s)", type(exc).__name__)


def _has_room(row: Any, step: float, ahead: float, transit: float, now: float | None) -> bool:
    return _room(time.time() if now is None else now, _value(row, "horizon"), step, ahead, transit)


def _opens(turn: float, step: float, ahead: float) -> float:
    """When the room for a turn opens: Twilio's queue reaches the turn and still ends within ``ahead`` with it."""
    return turn + step - ahead


def _room(moment: float, horizon: float, step: float, ahead: float, transit: float) -> bool:
    """Whether Twilio's queue, reaching to ``horizon``, takes ``step`` more at ``moment`` and still ends within
    ``ahead``; an idle one always takes one message (a segment may last longer than the lead at a slow rate)."""
    return max(moment + transit, horizon) + step <= moment + ahead + ROOM_SLACK or horizon <= moment


def _value(row: Any, name: str) -> float:
    return float((row or {}).get(name, 0.0) or 0.0)


def _read_ticket(ident: str) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    partition, key = _ticket_key(ident)
    try:
        return storage.table(TABLE).get_entity(partition_key=partition, row_key=key)
    except ResourceNotFoundError:
        return None


def _write_ticket(ident: str, slot: float, shard: int, step: float) -> None:
    partition, key = _ticket_key(ident)
    storage.table(TABLE).upsert_entity({"PartitionKey": partition, "RowKey": key, "slot": slot, "shard": shard,
                                        "step": step})


def _read(sender: str, shard: int) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    partition, key = _row_key(sender, shard)
    try:
        return storage.table(TABLE).get_entity(partition_key=partition, row_key=key)
    except ResourceNotFoundError:
        return None


def _write(sender: str, shard: int, existing: Any, values: dict[str, float]) -> bool:
    partition, key = _row_key(sender, shard)
    return storage.write_if_unchanged(TABLE, existing, {"PartitionKey": partition, "RowKey": key, **values})


# ---------------------------------------------------------------- retention


@dataclass(frozen=True)
class Pruned:
    """What :func:`prune` removed (or, dry, would remove): tickets of turns and places in line."""

    tickets: int
    places: int


def prune(before: float, *, dry_run: bool = False, progress: Callable[[int], None] | None = None) -> Pruned:
    """Delete ticket rows whose turn and line places whose copy's return are older than ``before`` (epoch
    seconds). Why: each paced message leaves a ticket (and one that waited long, a place in line) that nothing
    reads once it went; Table storage has no expiry. Safe at any age: a message that comes back without its
    ticket asks as a newcomer (it goes if there is room, else takes a new turn), and one without a place only
    cannot be called forward. Shard rows (the budget itself) are never touched; a row rewritten meanwhile (a new
    turn, a new place) is kept (etag). ``progress`` is told how many rows were looked at so far, row by row."""
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError

    table = storage.table(TABLE)
    rows = table.query_entities("slot lt @before or visible_at lt @before", parameters={"before": float(before)},
                                results_per_page=1000)
    tickets = places = 0
    for seen, row in enumerate(rows, 1):
        if progress is not None:
            progress(seen)
        partition = str(row["PartitionKey"])
        if partition.startswith("ticket-"):
            tickets += 1
        elif partition.startswith("line-"):
            places += 1
        else:
            continue  # not ours to expire
        if dry_run:
            continue
        try:
            table.delete_entity(partition, row["RowKey"], etag=row.metadata["etag"],
                                match_condition=MatchConditions.IfNotModified)
        except HttpResponseError:
            pass  # rewritten (a new turn or place) or already gone: it stays / nothing to do
    return Pruned(tickets, places)


# ---------------------------------------------------------------- campaign cancellation

CAMPAIGN_PARTITION = "campaign"


def cancel_campaign(tag: str, *, by: str = "") -> None:
    """Record that no message of campaign ``tag`` still waiting in our queue may be sent."""
    from datetime import datetime, timezone

    storage.table(CANCELLATIONS).upsert_entity({"PartitionKey": CAMPAIGN_PARTITION, "RowKey": tag,
                                                "cancelled_at": datetime.now(timezone.utc), "by": by[:200]})


def campaign_cancelled(tag: str) -> bool:
    """Whether ``tag`` was cancelled (one point read: only messages that carry a campaign pay it)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        storage.table(CANCELLATIONS).get_entity(partition_key=CAMPAIGN_PARTITION, row_key=tag, select=["RowKey"])
        return True
    except ResourceNotFoundError:
        return False
