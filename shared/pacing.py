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
  more than ~``SHARD_MPS`` writes/s even at a short code's 100 MPS. A message reads two random shards and uses the
  one that is free sooner (two choices keep shards even).
- A shard row keeps ``next_free``: when its next segment may go out. A message costing ``n`` segments takes the
  slot ``max(now, next_free)`` and moves ``next_free`` by ``n / rate`` (one etag-guarded MERGE; a lost race
  re-reads). A slot within the lead (``NORMAL_SHARE`` of it) is submitted now. A later slot is *reserved*: a
  ticket row (``ticket-xx``, RowKey = the id) holds it, and the message goes back on our queue with ``send_at`` =
  its slot less the lead, invisible until then; when it comes back (a ``send_at`` is what makes the pacer look for
  a ticket: one read, only for such messages) it is submitted at once. So a campaign keeps its order, and Twilio's
  queue holds about the lead. Every submission also moves the shard's ``horizon`` (how far Twilio's queue
  reaches), and nothing is submitted past ``now + lead``: a message that comes back late (a busy host) waits a
  moment more rather than arrive in a burst.
- ``priority: high`` (one-time codes, alerts) never waits for a slot: it is submitted at once and moves
  ``next_free``, so it waits in Twilio's queue behind at most the lead's worth of a campaign's segments (the rest
  of the campaign is still in our queue), and later arrivals queue behind it.
- Nothing is dropped: a message sent back comes back. No thread waits for a slot.

Segments are counted as Twilio counts them (:func:`segments`): GSM-7 160 per message or 153 per part of a long
one (characters of the extension table take two), UCS-2 70 or 67 UTF-16 units; MMS, WhatsApp and Content
templates 1. Campaign cancellation (``python -m shared.ops sends cancel --campaign TAG``) lives here too, in table
``cancellations``: a message with that ``campaign`` that has not been submitted yet never is.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Mapping

from . import storage
from .config import InvalidSettingError

TABLE = "pacing"
CANCELLATIONS = "cancellations"
SHARD_MPS = 10.0          # the most one shard row (one partition) paces
NORMAL_SHARE = 0.75       # normal messages fill this share of the lead; the rest is room for high priority
MAX_SHARDS = 64
MAX_TRIES = 8             # re-reads after lost races before giving up for this delivery (it is retried)
# Messages per second by sender type when SENDER_RATES does not name the sender (Twilio's documented defaults
# for an unregistered account; a 10DLC campaign's rate comes from its trust tier: set it in SENDER_RATES).
DEFAULT_RATES: Mapping[str, float] = {"longcode": 1.0, "tollfree": 3.0, "shortcode": 100.0, "whatsapp": 80.0,
                                      "service": 1.0}
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


def shard_count(rate: float) -> int:
    return max(1, min(MAX_SHARDS, math.ceil(rate / SHARD_MPS)))


def _row_key(sender: str, shard: int) -> tuple[str, str]:
    from .ledger import partition_key

    key = f"{sender}_{shard}"  # no # / \\ ? in a table key
    return partition_key("pace", key), key


def _ticket_key(ident: str) -> tuple[str, str]:
    from .ledger import partition_key

    return partition_key("ticket", ident), ident


def take_slot(sender: str, cost: int, *, rate: float, lead_seconds: float, ident: str, high: bool = False,
              returning: bool = False, now: float | None = None) -> Slot:
    """Ask for ``cost`` segments of ``sender``'s rate for message ``ident`` (see the module docstring).
    ``returning``: the message carries a ``send_at`` (ours, when the pacer sent it back), so it may hold a ticket."""
    ahead = lead_seconds if high else lead_seconds * NORMAL_SHARE
    shards = shard_count(rate)
    shard_rate = rate / shards
    step = cost / shard_rate
    ticket = _read_ticket(ident) if returning else None
    if ticket is not None:
        picks = [int(ticket.get("shard", 0) or 0) % shards]
    else:
        picks = random.sample(range(shards), 2) if shards > 1 else [0]
    rows = {shard: _read(sender, shard) for shard in picks}
    shard = min(picks, key=lambda s: _value(rows[s], "next_free"))
    row = rows[shard]
    for _ in range(MAX_TRIES):
        moment = time.time() if now is None else now
        next_free, horizon = _value(row, "next_free"), _value(row, "horizon")
        # Twilio's queue reaches to ``horizon``: submit only while that is within the lead (high) or its share.
        room = horizon <= moment + ahead + 0.01
        values: dict[str, float] = {}
        if ticket is not None:
            turn = float(ticket.get("slot", 0.0) or 0.0) - ahead
            if turn <= moment + 1.0 and room:  # its reserved turn (visibility counts whole seconds)
                values, decision = {"horizon": max(moment, horizon) + step}, Slot(True)
            else:
                wait = max(turn - moment, horizon - ahead - moment, 1.0)
                return Slot(False, wait, reserved=True, not_before=max(turn, moment + wait))
        elif high:
            if not room:  # the reserve is used up for a moment: ask again shortly, ahead of the queue
                return Slot(False, max(1.0, horizon - ahead - moment))
            values = {"horizon": max(moment, horizon) + step, "next_free": max(moment, next_free) + step}
            decision = Slot(True)
        else:
            slot = max(moment, next_free)
            if slot <= moment + ahead and room:
                values = {"next_free": slot + step, "horizon": max(moment, horizon) + step}
                decision = Slot(True)
            else:
                slot = max(slot, horizon)
                values = {"next_free": slot + step}
                decision = Slot(False, max(1.0, slot - ahead - moment), reserved=True, not_before=slot - ahead)
        if _write(sender, shard, row, values):
            if decision.reserved:
                _write_ticket(ident, decision.not_before + ahead, shard)
            return decision
        row = _read(sender, shard)
    raise PacingBusyError(f"pacing: {MAX_TRIES} lost races for one shard of a sender; retrying later")


def _value(row: Any, name: str) -> float:
    return float((row or {}).get(name, 0.0) or 0.0)


def _read_ticket(ident: str) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    partition, key = _ticket_key(ident)
    try:
        return storage.table(TABLE).get_entity(partition_key=partition, row_key=key)
    except ResourceNotFoundError:
        return None


def _write_ticket(ident: str, slot: float, shard: int) -> None:
    partition, key = _ticket_key(ident)
    storage.table(TABLE).upsert_entity({"PartitionKey": partition, "RowKey": key, "slot": slot, "shard": shard})


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
