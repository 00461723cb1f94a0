"""Settle a send in doubt by asking Twilio what it recorded (DESIGN, "Outcomes": reconciled).

Why it exists: a send whose answer we never saw (read timeout, connection lost after the request was written, a
host killed between the Twilio call and the ledger update) may or may not have created the message or call.
Twilio's Messages and Calls APIs take no idempotency key, so the only way to know is to read Twilio's list back
and look for it. Sending again blindly risks a double send; never sending risks a message nobody gets.

The rules, strictest first (a wrong "found" loses a message, a wrong "absent" sends it twice):
- A candidate must match recipient, sender (number, or messaging service), content (SMS: body and media count;
  calls: outbound-api) and be created no earlier than the claim of the attempt in doubt (minus clock skew).
  A Content template send (``content_sid``) is matched on recipient, sender and time only: Twilio's list shows
  the body rendered from the template, which we never see, so there is no content to compare.
- A SID the ledger already holds for another id is never a candidate.
- Exactly one candidate: found. More than one: not sure (:attr:`Verdict.outcome` ``unsure``).
- None, from a complete read, once the attempt is older than the settle window (Twilio's lists lag a little):
  absent, so the caller may send it again under its claim. Younger: ``too_soon``.
- A read stopped by its page or time bound before reaching older resources proves nothing: ``unsure_incomplete``.
Twilio unreadable (timeout, 5xx, 429, auth) raises :class:`shared.twilio_api.TwilioReadError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from . import ledger, twilio_api
from .outbound import CallMessage, OutboundMessage, SmsMessage

# Twilio's clock and ours may disagree a little, and date_created has one-second granularity.
CLOCK_SKEW = timedelta(seconds=60)

Outcome = Literal["found", "absent", "too_soon", "unsure"]


@dataclass(frozen=True)
class Verdict:
    """What Twilio's list says about one send in doubt; ``detail`` is safe to log and store."""

    outcome: Outcome
    sid: str = ""
    status: str = ""
    detail: str = ""


def attempt_started(row: ledger.Row) -> datetime:
    """When the attempt in doubt began: its claim (each take-over renews ``claimed_at``)."""
    started = row.claimed_at or row.fields.get("created_at")
    if isinstance(started, datetime):
        return started if started.tzinfo else started.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc) - timedelta(days=1)  # unknown: look back a day


def settled_at(row: ledger.Row, *, twilio_timeout: float, settle_seconds: float) -> datetime:
    """From when on an absent send is surely absent: the attempt's last possible moment plus the settle window."""
    return attempt_started(row) + timedelta(seconds=twilio_timeout + settle_seconds)


def reconcile(message: OutboundMessage, sender: tuple[str | None, str | None], row: ledger.Row, *,
              twilio_timeout: float, settle_seconds: float, now: datetime | None = None) -> Verdict:
    """Look for ``message`` in Twilio's list; see the module docstring for the rules."""
    now = now or datetime.now(timezone.utc)
    from_, service = sender
    since = attempt_started(row) - CLOCK_SKEW
    read = twilio_api.list_recent(message.kind, to=message.to, from_=from_, created_after=since)
    candidates = [item for item in read.items if _matches(message, from_, service, item, since)]
    mine = [c for c in candidates if _owner(message.kind, c.sid) in (None, message.id)]
    if len(mine) == 1:
        return Verdict("found", sid=mine[0].sid, status=mine[0].status,
                       detail=f"found in Twilio's list as {mine[0].sid}")
    if len(mine) > 1:
        sids = ", ".join(c.sid for c in mine[:5])
        return Verdict("unsure", detail=f"{len(mine)} sends in Twilio's list match ({sids})")
    if not read.complete:
        return Verdict("unsure", detail=f"Twilio's list was not read to the claim time within {read.pages} pages")
    if now < settled_at(row, twilio_timeout=twilio_timeout, settle_seconds=settle_seconds):
        return Verdict("too_soon", detail="not in Twilio's list yet; waiting for it to settle")
    skipped = len(candidates) - len(mine)
    note = f" ({skipped} matching send(s) belong to other ids)" if skipped else ""
    return Verdict("absent", detail=f"not in Twilio's list after the settle window{note}")


def _matches(message: OutboundMessage, from_: str | None, service: str | None,
             item: twilio_api.RecordedSend, since: datetime) -> bool:
    if item.to != message.to or not item.direction.startswith("outbound"):
        return False
    if item.created is not None and item.created < since:
        return False
    if from_ and item.from_ != from_:
        return False
    if isinstance(message, SmsMessage):
        if not from_ and service and item.messaging_service_sid != service:
            return False
        if message.content_sid:
            return True  # rendered by Twilio from the template: nothing of ours to compare
        if item.num_media != len(message.media_urls):
            return False
        body = message.body or ""
        # A trial account prefixes the body; anything else must be exactly what we sent.
        return item.body == body or (bool(body) and item.body.endswith(body))
    return isinstance(message, CallMessage)


def _owner(kind: str, sid: str) -> str | None:
    """The id the ledger recorded ``sid`` for, if any."""
    return ledger.id_for_sid(kind, sid)
