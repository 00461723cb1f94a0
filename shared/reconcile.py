"""Settle a send in doubt by asking Twilio what it recorded (DESIGN, "Outcomes": reconciled).

Why it exists: a send whose answer we never saw (read timeout, connection lost after the request was written, a
host killed between the Twilio call and the ledger update) may or may not have created the message or call.
Twilio's Messages and Calls APIs take no idempotency key, so the only way to know is to read Twilio's list back
and look for it. Sending again blindly risks a double send; never sending risks a message nobody gets.

The rules, strictest first (a wrong "found" loses a message and sends another twice, a wrong "absent" sends twice):
- A candidate must match recipient, sender (number, or messaging service), content exactly and be created no
  earlier than the claim of the attempt in doubt (minus clock skew). SMS: the body as we sent it, or with exactly
  Twilio's trial-account prefix before it, and the media count; a Content template send (``content_sid``) has no
  body of ours to compare (Twilio renders it), so it matches on recipient, sender and time. Calls: Twilio's list
  shows no TwiML, so any outbound call from our number to the recipient is a candidate.
- A SID the SID index holds for this id: found (it was recorded, the row update was lost). Held by another id:
  never a candidate.
- An unclaimed candidate is ``contested`` while another of our sends to that recipient is unresolved and could
  own it (its attempt, in the attempt index, started before the candidate was created and its content matches),
  or while several unclaimed candidates match: their status callbacks (``?id=``) or their own reconciliation will
  tie them to their ids, so the caller waits and asks again.
- Exactly one unclaimed candidate and no rival: found, with ``claim`` set: the caller must win the SID index for it
  (:func:`shared.ledger.claim_sid`) before recording it, and reconcile again if another id won.
- None, from a complete read, once the attempt is older than the settle window (Twilio's lists lag a little):
  absent, so the caller may send it again under its claim. Younger: ``too_soon``.
- A read stopped by its page or time bound before reaching older resources proves nothing: ``unsure``.
Twilio unreadable (timeout, 5xx, 429, auth) raises :class:`shared.twilio_api.TwilioReadError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from . import ledger, twilio_api
from .outbound import CallMessage, OutboundMessage, SmsMessage

# Twilio's clock and ours may disagree a little, and date_created has one-second granularity.
CLOCK_SKEW = timedelta(seconds=60)

# Twilio prefixes every SMS body of a trial account with exactly this.
TRIAL_PREFIX = "Sent from your Twilio trial account - "
# How long before a message's creation the attempt that made it can have started: claim, then the create
# request (up to two Twilio timeouts, as the claim lease counts them), plus clock skew.
CREATE_LEAD_MARGIN = timedelta(seconds=30)
MAX_RIVAL_READS = 50

Outcome = Literal["found", "absent", "too_soon", "contested", "unsure"]


@dataclass(frozen=True)
class Verdict:
    """What Twilio's list says about one send in doubt; ``detail`` is safe to log and store. ``claim``: the SID is
    in no id's index yet, so the caller must win it before recording ``found``."""

    outcome: Outcome
    sid: str = ""
    status: str = ""
    detail: str = ""
    claim: bool = False


def content_key(message: OutboundMessage) -> str:
    """What the attempt index stores about a send's content: enough to tell whether a message in Twilio's list
    could be this send's, and nothing readable (a hash)."""
    if isinstance(message, SmsMessage):
        if message.content_sid:
            return "template"
        return _body_key(message.body or "", len(message.media_urls))
    return "call"


def _body_key(body: str, num_media: int) -> str:
    return hashlib.sha256(f"{num_media}\x00{body}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _item_keys(kind: str, item: twilio_api.RecordedSend) -> set[str]:
    if kind != "sms":
        return {"call"}
    keys = {"template", _body_key(item.body, item.num_media)}
    if item.body.startswith(TRIAL_PREFIX):
        keys.add(_body_key(item.body[len(TRIAL_PREFIX):], item.num_media))
    return keys


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
    owners = {c.sid: ledger.id_for_sid(message.kind, c.sid) for c in candidates}
    mine = [c for c in candidates if owners[c.sid] == message.id]
    if mine:
        return Verdict("found", sid=mine[0].sid, status=mine[0].status,
                       detail=f"found in Twilio's list as {mine[0].sid} (already indexed for this id)")
    free = [c for c in candidates if owners[c.sid] is None]
    if free:
        sids = ", ".join(c.sid for c in free[:5])
        rivals = _rivals(message, free, twilio_timeout)
        if rivals:
            return Verdict("contested", detail=f"unclaimed match(es) {sids} could also be unresolved id(s) "
                                               f"{', '.join(rivals[:5])}: waiting for status callbacks")
        if len(free) > 1:
            return Verdict("contested", detail=f"{len(free)} unclaimed sends in Twilio's list match ({sids}): "
                                               "waiting for status callbacks to tell them apart")
        return Verdict("found", sid=free[0].sid, status=free[0].status, claim=True,
                       detail=f"found in Twilio's list as {free[0].sid}")
    if not read.complete:
        return Verdict("unsure", detail=f"Twilio's list was not read to the claim time within {read.pages} pages")
    if now < settled_at(row, twilio_timeout=twilio_timeout, settle_seconds=settle_seconds):
        return Verdict("too_soon", detail="not in Twilio's list yet; waiting for it to settle")
    skipped = len(candidates)
    note = f" ({skipped} matching send(s) belong to other ids)" if skipped else ""
    return Verdict("absent", detail=f"not in Twilio's list after the settle window{note}")


def _rivals(message: OutboundMessage, free: list[twilio_api.RecordedSend], twilio_timeout: float) -> list[str]:
    """Other ids whose unresolved attempt to this recipient could have created one of ``free``."""
    created = [c.created for c in free if isinstance(c.created, datetime)]
    earliest = min(created) if len(created) == len(free) else None
    lead = timedelta(seconds=2 * twilio_timeout) + CREATE_LEAD_MARGIN + CLOCK_SKEW
    since = (earliest - lead) if earliest is not None else datetime.now(timezone.utc) - timedelta(days=1)
    keys = set().union(*(_item_keys(message.kind, c) for c in free))
    latest = max(created) + CLOCK_SKEW if len(created) == len(free) else None
    rivals: list[str] = []
    checked: set[str] = {message.id}
    for attempt in ledger.attempts_to(message.kind, message.to, since):
        if attempt.id in checked or len(checked) > MAX_RIVAL_READS:
            continue
        if attempt.content_key not in keys or (latest is not None and attempt.started > latest):
            continue
        checked.add(attempt.id)
        other = ledger.get(message.kind, attempt.id)
        if other is not None and other.unresolved:
            rivals.append(attempt.id)
    return rivals


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
        # A trial account prefixes the body with exactly TRIAL_PREFIX; anything else must be what we sent.
        return item.body in (body, TRIAL_PREFIX + body)
    return isinstance(message, CallMessage)
