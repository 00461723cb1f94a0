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
- A shard row keeps ``next_free``: when its next segment may go out. A message costing ``n`` segments whose slot
  (``max(now, next_free)``) is within the lead is submitted now and moves ``next_free`` by ``n / rate``. Otherwise
  it is not submitted: it is put back on our queue, invisible until about its turn (``tail``, the expected slot
  of the last message sent back, moves by ``n / rate`` so waiting messages wake spread out, not all at once), and
  asks again then. Every change is one etag-guarded MERGE; a lost race re-reads.
- ``priority: high`` (one-time codes, alerts) is submitted at once and pushes ``next_free`` back by its cost, so
  the normal messages behind it yield: it waits behind at most the lead's worth of segments in Twilio's queue.
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
    """The pacer's answer: submit now, or come back in ``wait_seconds`` (nothing reserved meanwhile)."""

    submit: bool
    wait_seconds: float = 0.0
    shard: int = 0


def shard_count(rate: float) -> int:
    return max(1, min(MAX_SHARDS, math.ceil(rate / SHARD_MPS)))


def _row_key(sender: str, shard: int) -> tuple[str, str]:
    from .ledger import partition_key

    key = f"{sender}#{shard}"
    return partition_key("pace", key), key


def take_slot(sender: str, cost: int, *, rate: float, lead_seconds: float, high: bool = False,
              now: float | None = None) -> Slot:
    """Ask for ``cost`` segments of ``sender``'s rate (see the module docstring for the rules)."""
    shards = shard_count(rate)
    shard_rate = rate / shards
    picks = random.sample(range(shards), 2) if shards > 1 else [0]
    rows = {shard: _read(sender, shard) for shard in picks}
    shard = min(picks, key=lambda s: float((rows[s] or {}).get("next_free", 0.0) or 0.0))
    row = rows[shard]
    for _ in range(MAX_TRIES):
        moment = time.time() if now is None else now
        next_free = float((row or {}).get("next_free", 0.0) or 0.0)
        tail = float((row or {}).get("tail", 0.0) or 0.0)
        slot = max(moment, next_free)
        step = cost / shard_rate
        if high or slot <= moment + lead_seconds:
            values, decision = {"next_free": slot + step}, Slot(True, shard=shard)
        else:
            base = max(tail, slot)
            values, decision = {"tail": base + step}, Slot(False, max(1.0, base - lead_seconds - moment), shard)
        if _write(sender, shard, row, values):
            return decision
        row = _read(sender, shard)
    raise PacingBusyError(f"pacing: {MAX_TRIES} lost races for one shard of a sender; retrying later")


def _read(sender: str, shard: int) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    partition, key = _row_key(sender, shard)
    try:
        return storage.table(TABLE).get_entity(partition_key=partition, row_key=key)
    except ResourceNotFoundError:
        return None


def _write(sender: str, shard: int, existing: Any, values: dict[str, float]) -> bool:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import UpdateMode

    partition, key = _row_key(sender, shard)
    entity = {"PartitionKey": partition, "RowKey": key, **values}
    table = storage.table(TABLE)
    try:
        if existing is None:
            table.create_entity(entity)
        else:
            table.update_entity(entity, mode=UpdateMode.MERGE, etag=existing.metadata["etag"],
                                match_condition=MatchConditions.IfNotModified)
        return True
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        return False


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
