"""Process one outbound queue message: send it exactly once, or dead-letter it with the reason.

Order of work, and why:
1. Parse + validate (``shared.outbound``; a ``to`` that cannot be a phone number is invalid). Invalid →
   dead-letter now; retrying cannot fix it. A recipient outside ``ALLOWED_DESTINATIONS`` → dead-lettered as
   ``destination_not_allowed`` (``shared.destinations``).
2. ``send_at`` in the future → put the message back on its queue, invisible until then (≤ 7 days a hop, the
   Storage maximum), and acknowledge. The ``id`` is written into the requeued copy so the ledger key stays the
   same even though the queue message id changes.
3. Opt-out check, the spending guards (``shared.guardrails``: over ``MAX_SENDS_PER_RECIPIENT_PER_HOUR`` →
   dead-lettered as ``recipient_rate_limited``; over ``MAX_SENDS_PER_HOUR`` → deferred to the next hour, outcome
   ``deferred`` with detail ``budget_exhausted``) and credentials *before* claiming, so a failure there leaves no
   claim behind (a claim with no outcome would later look like a crash mid-send).
4. Claim the id in the ledger (insert-if-absent), and note the attempt in the attempt index before the create.
   An existing row decides instead of us:
   - Twilio has it (``sid`` or a Twilio status) → duplicate delivery: acknowledged, not sent again.
   - ``failed`` / ``rejected`` → it was dead-lettered already: acknowledged; unless the row is ``resendable``
     (it never reached Twilio: invalid, opted out, or transient errors until the last try), then a corrected
     or re-submitted message with the same id takes the claim over and is sent.
   - ``retrying`` → the last try *observed* that Twilio did not get it (refused connection, 429, secret
     unavailable): take the claim over (etag-guarded) and send.
   - ``claimed`` younger than the lease → another delivery of the same id is sending right now: retry later (on
     the last try: back on the queue until the lease is over, never dead-lettered for it).
   - ``claimed`` older than the lease, or ``unknown`` → a previous try may have reached Twilio but left no result
     (crash mid-send, a timeout, a 5xx answer) → **reconciled** (``shared.reconcile``): Twilio's list is read
     back; found → the SID is claimed in the SID index (of two ids that found one message, one wins; the other
     looks again) and recorded; surely absent after the settle window → sent again under the claim; not settled
     yet, or contested (another unresolved send of ours to that recipient could own the match: its status
     callback will tell) → back on the queue with a delay, which is not a failed try; Twilio unreadable → retry
     (a failed try; ambiguous after ``MAX_UNREADABLE_READS`` failed reads in a row); still contested long after
     the settle window, or a read cut short → dead-lettered as **ambiguous**. The row's ``resolution`` says which.
5. Send; record the outcome (etag-guarded).

Timeouts: a read timeout (or a connection dropped after the request was written, or a 5xx answer) may mean Twilio
created the message and we never heard. We record ``unknown`` and raise, as the design asks for transient errors;
the retry then reconciles instead of sending blindly. On the last try the message is put back on its queue,
invisible until the settle window has passed, so the reconciliation still happens (bounded by ``MAX_ATTEMPTS``
sends of one id).
If Twilio did get it, its status callback (``?id=``) may also fill in the SID first, which settles the row.
A *connect* timeout or refusal never reached Twilio and is retried.

Transient failures raise :class:`RetryLaterError`, so the host retries after ``visibilityTimeout``; on the last
allowed try (``dequeue_count >= maxDequeueCount`` from host.json) the message is dead-lettered with its reason
instead. Dead-letter = ``<queue>-poison`` gets ``{"error": {...}, "message": <the text as received>}``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from . import (destinations, guardrails, ledger, optouts, outbound, outcomes, pacing, reconcile, secrets, storage,
               telemetry, twilio_api)
from .config import InvalidSettingError, MissingSettingError, Settings, get_settings
from .hostjson import queue_settings
from .outbound import CallMessage, InvalidMessageError, Kind, OutboundMessage, SmsMessage
from .redact import mask_number

log = logging.getLogger("switchboard.outbound")

MAX_HOP_SECONDS = 7 * 24 * 3600 - 60      # Storage's visibility timeout maximum is 7 days
SEND_AT_SLACK = timedelta(seconds=1)       # arriving this close to send_at counts as on time
CLAIM_LEASE_MARGIN_SECONDS = 30.0          # + 2 Twilio timeouts: how long a claim may be in flight
MAX_POISON_CHARS = 60 * 1024               # a queue message holds 64 KiB
MAX_ATTEMPTS = 10                          # sends of one id in doubt, before it is left to an operator
BUDGET_EXHAUSTED = "budget_exhausted"      # the detail of a deferral by MAX_SENDS_PER_HOUR (alerts match it)
CONTEST_WAIT_FACTOR = 5                    # a contested send waits up to this many settle windows for callbacks
MAX_UNREADABLE_READS = 5                   # Twilio's list unreadable this many reads in a row: ambiguous
MAX_SID_RACES = 3                          # reconcile again at most this often when another id wins a SID
PACED = "paced"                            # the code of a deferral by pacing (shared.pacing)
RATE_LIMITED = "rate_limited"              # the code of a back-off after Twilio's 429 / 20429
MAX_RATE_LIMITED_ATTEMPTS = 20             # past this many 429s in a row an id is retried as any transient error


class RetryLaterError(RuntimeError):
    """A transient failure: raise it out of the function so the queue delivers the message again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """What happened to one queue message (returned for tests and benchmarks; the function ignores it)."""

    kind: Kind
    id: str
    result: str            # sent | duplicate | deferred | cancelled | dead_lettered
    sid: str = ""
    reason: str = ""
    code: str = ""


@dataclass(frozen=True)
class _Delivery:
    kind: Kind
    body: bytes
    queue_message_id: str
    dequeue_count: int
    queue_name: str

    @property
    def last_try(self) -> bool:
        return self.dequeue_count >= queue_settings().max_dequeue_count


def queue_name_for(kind: Kind, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return settings.sms_queue if kind == "sms" else settings.call_queue


def process_sms(body: bytes | str, queue_message_id: str, dequeue_count: int = 1) -> Outcome:
    """Process one message of the SMS queue (what the queue function calls)."""
    return process("sms", body, queue_message_id, dequeue_count)


def process_call(body: bytes | str, queue_message_id: str, dequeue_count: int = 1) -> Outcome:
    """Process one message of the call queue (what the queue function calls)."""
    return process("call", body, queue_message_id, dequeue_count)


def process(kind: Kind, body: bytes | str, queue_message_id: str, dequeue_count: int = 1) -> Outcome:
    """Send, defer, acknowledge as duplicate, or dead-letter one queue message; raise RetryLaterError to retry."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body or b"")
    delivery = _Delivery(kind, raw, str(queue_message_id or ""), int(dequeue_count or 1),
                         queue_name_for(kind))
    try:
        return _process(delivery)
    except RetryLaterError as exc:
        if delivery.last_try:
            return _dead_letter(delivery, _guess_id(delivery), "retries_exhausted",
                                f"gave up after {delivery.dequeue_count} tries: {exc.reason}")
        raise
    except (secrets.SecretUnavailableError, MissingSettingError) as exc:
        reason = f"not configured: {exc}"
        if delivery.last_try:
            return _dead_letter(delivery, _guess_id(delivery), "retries_exhausted", reason)
        log.error("outbound %s id=%s retry: %s", kind, _guess_id(delivery), reason)
        raise RetryLaterError(reason) from None
    except Exception as exc:  # noqa: BLE001 - storage or other dependency errors are transient
        if not storage.is_storage_error(exc):
            raise
        reason = storage.transient_reason(exc)
        if delivery.last_try:
            return _dead_letter(delivery, _guess_id(delivery), "retries_exhausted", reason)
        log.warning("outbound %s id=%s retry: %s", kind, _guess_id(delivery), reason)
        raise RetryLaterError(reason) from exc


def _process(d: _Delivery) -> Outcome:
    settings = get_settings()
    try:
        message, decoded = outbound.parse(d.kind, d.body, d.queue_message_id)
        sender = _sender(message, settings)
    except InvalidMessageError as exc:
        ident = _guess_id(d)
        _ledger_note(d.kind, ident, "rejected", exc.reason)
        return _dead_letter(d, ident, "invalid_message", exc.reason, field=exc.field)
    try:
        destinations.check_allowed(message.to, settings.allowed_destinations)
    except destinations.DestinationNotAllowedError as exc:  # refused now, not after a send_at wait
        return _refuse(d, message, "destination_not_allowed", exc.reason, region=exc.region)
    if message.send_at is not None and message.send_at > _now() + SEND_AT_SLACK:
        return _defer(d, message, decoded)
    return _send(d, message, sender)


def _sender(message: OutboundMessage, settings: Settings) -> tuple[str | None, str | None]:
    """(from number, messaging service SID): the message's own, else TWILIO_FROM_NUMBER, else the service.
    A WhatsApp message sent from TWILIO_FROM_NUMBER goes out from ``whatsapp:`` + that number."""
    if message.from_:
        return message.from_, None
    if isinstance(message, SmsMessage) and message.messaging_service_sid:
        return None, message.messaging_service_sid
    if settings.from_number:
        if isinstance(message, SmsMessage) and message.is_whatsapp and \
                not settings.from_number.startswith(outbound.WHATSAPP_PREFIX):
            return outbound.WHATSAPP_PREFIX + settings.from_number, None
        return settings.from_number, None
    if isinstance(message, SmsMessage) and settings.messaging_service_sid:
        return None, settings.messaging_service_sid
    extra = " or TWILIO_MESSAGING_SERVICE_SID" if isinstance(message, SmsMessage) else ""
    raise InvalidMessageError("from", f"no sender: the message has none and TWILIO_FROM_NUMBER{extra} is not set")


def _defer(d: _Delivery, message: OutboundMessage, decoded: outbound.Decoded) -> Outcome:
    assert message.send_at is not None
    wait = (message.send_at - _now()).total_seconds()
    hop = _requeue(d, message, math.ceil(wait), decoded)
    _report(d, outcomes.reason_event(d.kind, message.id, message.to, "deferred", "send_at",
                                     f"not before {message.send_at.isoformat()}"), final=False)
    _log(d.kind, message.id, message.to, "deferred", f"until {message.send_at.isoformat()} (hop {hop} s)")
    return Outcome(d.kind, message.id, "deferred", reason=f"requeued for {hop} s")


def _requeue(d: _Delivery, message: OutboundMessage, seconds: float,
             decoded: outbound.Decoded | None = None) -> int:
    """Put the message back on its queue, invisible for ``seconds`` (1 s to 7 days), as it arrived (raw or base64)
    but with its resolved ``id`` written in: the copy gets a new queue message id, and the ledger key must not
    change with it (an ``"id": null`` or absent id would otherwise default to the new one). Returns the hop."""
    return _send_back(d, message, seconds, decoded)[0]


def _send_back(d: _Delivery, message: OutboundMessage, seconds: float,
               decoded: outbound.Decoded | None = None) -> tuple[int, Any]:
    """``_requeue``, also returning the copy's queue message (its id and pop receipt)."""
    decoded = decoded or outbound.decode(d.body)
    hop = max(1, min(MAX_HOP_SECONDS, math.ceil(seconds)))
    document = {**decoded.document, "id": message.id}
    copy = storage.queue(d.queue_name).send_message(outbound.encode(document, as_base64=decoded.was_base64),
                                                    visibility_timeout=hop, time_to_live=-1)
    return hop, copy


def _send(d: _Delivery, message: OutboundMessage, sender: tuple[str | None, str | None]) -> Outcome:
    digest = outbound.content_hash(message)
    # Pacing before the opt-out read: a message that must wait costs only its pacing round trips; the checks
    # below run when its turn comes, so a STOP recorded while it waited still applies.
    if message.campaign and pacing.campaign_cancelled(message.campaign):  # before its turn is even asked for
        _release_turn(message, sender)
        return _cancel(d, message, f"campaign {message.campaign} was cancelled")
    paced = _pace(d, message, sender)
    if isinstance(paced, Outcome):
        return paced
    if optouts.is_opted_out(message.to):
        _give_back(sender, paced)
        return _refuse(d, message, "opted_out", "recipient opted out (STOP)", last_error="recipient opted out")
    held = _guardrails(d, message)
    if held is not None:
        _give_back(sender, paced)
        return held
    twilio_api.get_client()  # credentials must be readable before we claim (else: retry, nothing claimed)

    claimed, row = ledger.try_claim(d.kind, message.id, to=mask_number(message.to), content_hash=digest,
                                    **_row_content(message))
    if not claimed:
        decision = _existing_claim(d, message, sender, row, digest)
        if isinstance(decision, Outcome):  # nothing submitted by this delivery: its room is not used
            _give_back(sender, paced)
            return decision
        row = decision
    _note_attempt(d, message, row)

    try:
        if isinstance(message, SmsMessage):
            from_, service = sender
            result = twilio_api.send_sms(message, from_=from_, messaging_service_sid=service)
        else:
            assert isinstance(message, CallMessage) and sender[0]
            result = twilio_api.place_call(message, from_=sender[0])
    except twilio_api.PermanentTwilioError as exc:
        return _dead_letter(d, message.id, "twilio_rejected", exc.reason, to=message.to, row=row,
                            ledger_values={"error_code": str(exc.code or "")}, twilio_code=exc.code,
                            http_status=exc.http_status)
    except twilio_api.TransientTwilioError as exc:
        if _rate_limited(exc) and row.attempts < MAX_RATE_LIMITED_ATTEMPTS:
            return _back_off(d, message, row, exc.reason)
        return _transient(d, message, row, exc.reason, maybe_sent=exc.maybe_sent)
    except secrets.SecretUnavailableError as exc:
        return _transient(d, message, row, f"secret unavailable: {exc.reason}", maybe_sent=False)
    except Exception as exc:  # noqa: BLE001 - we cannot tell whether Twilio got it: never send it again
        _safe_update(row, status="unknown", last_error=f"unexpected {type(exc).__name__} while sending")
        raise

    unreported = _emit_sent(d, message.id, message.to, result.sid, result.status)
    try:
        row = ledger.record_sent(row, result.sid, result.status, **unreported)
    except Exception as exc:  # noqa: BLE001 - it *was* sent: acknowledge; the status callback fills the row in
        log.error("outbound %s id=%s sent as %s but the ledger was not updated: %s", d.kind, message.id,
                  result.sid, type(exc).__name__)
    _log(d.kind, message.id, message.to, "sent", result.sid)
    _retry_for_the_event(d, unreported)
    return Outcome(d.kind, message.id, "sent", sid=result.sid)


def _emit_sent(d: _Delivery, ident: str, to: str | None, sid: str, twilio_status: str,
               **fields: Any) -> dict[str, bool]:
    """Write the ``sent`` event before the ledger records the send, so that a crash in between leaves a row in
    doubt, whose reconciliation finds the message and writes the event again (at least once). Returns what the
    ledger write adds: ``sent_unreported`` when the event could not be written (:func:`_retry_for_the_event`)."""
    document = outcomes.event(d.kind, ident, to, "sent", sequence=outcomes.SENT_SEQUENCE, sid=sid,
                              twilio_status=twilio_status, **fields)
    try:
        outcomes.emit(document)
    except outcomes.OutcomeNotWrittenError as exc:
        log.error("outbound %s id=%s %s%s", d.kind, ident, exc, " (last try: not retried)" if d.last_try else "")
        return {} if d.last_try else {"sent_unreported": True}
    return {}


def _retry_for_the_event(d: _Delivery, unreported: dict[str, bool]) -> None:
    """Sent, and recorded, but its event is not written: fail this try, so the queue delivers the message again;
    the ledger says sent (never sent twice) and :func:`_duplicate` writes the event then."""
    if unreported:
        raise RetryLaterError("sent; its outcome event was not written yet")


def _note_attempt(d: _Delivery, message: OutboundMessage, row: ledger.Row) -> None:
    """Write the attempt index row before the create, so another id reconciling against this recipient knows this
    attempt could own a message there. If it cannot be written nothing was sent: the row says so (``retrying``)."""
    try:
        ledger.note_attempt(d.kind, message.id, message.to, reconcile.content_key(message),
                            reconcile.attempt_started(row))
    except Exception:
        _safe_update(row, status="retrying", last_error="attempt index not written; nothing sent")
        raise


def _pace(d: _Delivery, message: OutboundMessage,
          sender: tuple[str | None, str | None]) -> Outcome | pacing.Slot | None:
    """Submit at the sender's rate (``shared.pacing``): a granted Slot (or None, not paced) = go now; an Outcome =
    the message went back on the queue, invisible until about its turn (not a failed try, nothing claimed).
    Calls are paced by Twilio itself."""
    settings = get_settings()
    if not isinstance(message, SmsMessage):
        return None
    if settings.pacing not in ("on", "off", ""):  # "false", "0": a wish we cannot read; SMS waits until fixed
        raise InvalidSettingError("PACING", f"must be on or off, not {settings.pacing[:20]!r}")
    if settings.pacing == "off":
        return None
    key = _pacing_key(sender)
    rate = _sender_rates(settings.sender_rates).rate_for(key)
    cost = pacing.segments(message.body, media=len(message.media_urls), whatsapp=message.is_whatsapp,
                           template=bool(message.content_sid))
    try:
        slot = pacing.take_slot(key, cost, rate=rate, lead_seconds=max(0.0, settings.pacing_lead_seconds),
                                ident=message.id, high=message.priority == "high",
                                returning=message.send_at is not None)
    except pacing.PacingBusyError as exc:
        raise RetryLaterError(str(exc)) from None
    if slot.submit:
        return slot
    decoded = outbound.decode(d.body)
    if slot.reserved and message.send_at is None:
        # Back with a send_at (already past: the queue's visibility does the waiting, and a copy called forward
        # is not held back by it), so the pacer looks for its ticket instead of queueing it again.
        decoded = outbound.Decoded({**decoded.document, "send_at": _now().isoformat()}, decoded.was_base64)
    hop, copy = _send_back(d, message, slot.wait_seconds, decoded)
    if slot.line:
        _stand_in_line(key, slot, d.queue_name, copy)
    telemetry.count_pacing_deferral(message.priority, "turn" if message.send_at is None else "no_room")
    if message.send_at is None:  # its first wait only: a producer needs one word that it is paced, not one a hop
        _report(d, outcomes.reason_event(d.kind, message.id, message.to, "deferred", PACED,
                                         f"sender at {rate:g}/s: waits for its turn"), final=False)
    _log(d.kind, message.id, message.to, "deferred",
         f"{PACED}: sender {mask_number(key)} at {rate:g}/s, {cost} segment(s), back in {hop} s")
    return Outcome(d.kind, message.id, "deferred", reason=f"{PACED}: requeued for {hop} s", code=PACED)


def _pacing_key(sender: tuple[str | None, str | None]) -> str:
    """The sender a message is paced as: its from number, else its messaging service."""
    return sender[0] or sender[1] or ""


def _stand_in_line(key: str, slot: pacing.Slot, queue_name: str, copy: Any) -> None:
    """The waiting copy can be called forward when a turn ahead of it goes unused (``pacing.hold``)."""
    try:
        pacing.hold(key, slot, queue_name, copy.id, copy.pop_receipt)
    except Exception as exc:  # noqa: BLE001 - it still comes back at its turn
        log.warning("pacing: not in line (%s)", type(exc).__name__)


def _release_turn(message: OutboundMessage, sender: tuple[str | None, str | None]) -> None:
    """A waiting message that will never be sent came back: the next in line takes its turn."""
    if message.send_at is None or not isinstance(message, SmsMessage) or get_settings().pacing == "off":
        return
    try:
        pacing.release(_pacing_key(sender), message.id)
    except Exception as exc:  # noqa: BLE001 - only throughput is lost
        log.warning("pacing: turn not released (%s)", type(exc).__name__)


def _give_back(sender: tuple[str | None, str | None], granted: pacing.Slot | None) -> None:
    """Granted a submission but not making it: its room goes to the next message (``pacing.give_back``)."""
    if granted is None:
        return
    try:
        pacing.give_back(_pacing_key(sender), granted)
    except Exception as exc:  # noqa: BLE001 - only throughput is lost; the message's outcome stands
        log.warning("pacing: room not given back (%s)", type(exc).__name__)


@functools.lru_cache(maxsize=4)
def _sender_rates(text: str) -> pacing.SenderRates:
    return pacing.parse_rates(text)


def _cancel(d: _Delivery, message: OutboundMessage, reason: str) -> Outcome:
    """Its campaign was cancelled before it was submitted: never sent; the row says ``cancelled``. A row that
    already reached Twilio (or is in doubt) is left to the usual rules: cancelling cannot recall a message."""
    existing = ledger.insert_if_absent(d.kind, message.id, status="cancelled", attempts=0, last_error=reason,
                                       to=mask_number(message.to), content_hash=outbound.content_hash(message))
    if existing is not None and existing.status in ("failed", "rejected", "retrying") and not existing.reached_twilio:
        _safe_update(existing, status="cancelled", last_error=reason)
    elif existing is not None and existing.status != "cancelled":
        return _send_regardless_of_campaign(d, message, existing)
    _report(d, outcomes.reason_event(d.kind, message.id, message.to, "cancelled", "cancelled", reason))
    _log(d.kind, message.id, message.to, "cancelled", reason)
    return Outcome(d.kind, message.id, "cancelled", reason=reason)


def _send_regardless_of_campaign(d: _Delivery, message: OutboundMessage, row: ledger.Row) -> Outcome:
    """A row that reached Twilio or is in doubt: a duplicate, or a reconciliation (which refuses to resend a
    cancelled campaign's message it proves absent)."""
    digest = outbound.content_hash(message)
    decision = _existing_claim(d, message, _sender(message, get_settings()), row, digest)
    if isinstance(decision, Outcome):
        return decision
    raise RetryLaterError("a send in doubt of a cancelled campaign: reconciling first")


def _rate_limited(exc: twilio_api.TransientTwilioError) -> bool:
    return exc.http_status == 429 or exc.code in twilio_api.RATE_LIMIT_CODES


def _back_off(d: _Delivery, message: OutboundMessage, row: ledger.Row, reason: str) -> Outcome:
    """Twilio's account concurrency limit (429 / 20429): nothing was created, and it is no failure of this
    message. Back on the queue after a growing, jittered pause; the row says ``retrying``."""
    updated = _safe_update(row, status="retrying", last_error=reason) or row
    pause = min(60.0, 2.0 ** min(updated.attempts, 6)) * random.uniform(0.5, 1.0)
    hop = _requeue(d, message, pause)
    _log(d.kind, message.id, message.to, "deferred", f"{RATE_LIMITED}: {reason} (back in {hop} s)")
    return Outcome(d.kind, message.id, "deferred", reason=f"{RATE_LIMITED}: requeued for {hop} s",
                   code=RATE_LIMITED)


def _refuse(d: _Delivery, message: OutboundMessage, code: str, reason: str, *, last_error: str = "",
            **extra: Any) -> Outcome:
    """Dead-letter a message a guard refuses before any claim (opted out, region, recipient cap), leaving a
    resendable ``rejected`` row; unless its id already reached Twilio: then it is the duplicate of a send made
    before the guard said no (or an id conflict), and is treated as one."""
    digest = outbound.content_hash(message)
    existing = ledger.insert_if_absent(d.kind, message.id, status="rejected", attempts=0, resendable=True,
                                       last_error=(last_error or reason)[:1000], to=mask_number(message.to),
                                       content_hash=digest)
    if existing is not None and existing.reached_twilio:
        if existing.conflicts_with(digest):
            return _id_conflict(d, message, existing, digest)
        return _duplicate(d, message, existing)
    return _dead_letter(d, message.id, code, reason, to=message.to, **extra)


def _guardrails(d: _Delivery, message: OutboundMessage) -> Outcome | None:
    """The spending guards (``shared.guardrails``), after the opt-out check and before the claim: the recipient
    cap (counted by id, so a redelivery never counts twice) dead-letters; the hourly budget defers. None = go."""
    settings = get_settings()
    cap = guardrails.recipient_cap(settings)
    budget = guardrails.hourly_budget(settings)
    try:
        if cap is not None:
            guardrails.count_recipient_send(message.to, d.kind, message.id, cap)
        if budget is not None:
            guardrails.take_budget_unit(budget)
    except guardrails.RecipientRateLimitedError as exc:
        return _refuse(d, message, "recipient_rate_limited", str(exc), count=exc.count, cap=exc.cap,
                       window_seconds=exc.window_seconds)
    except guardrails.BudgetExhaustedError as exc:
        return _defer_for_budget(d, message, exc)
    except guardrails.GuardrailBusyError as exc:
        raise RetryLaterError(str(exc)) from None
    return None


def _defer_for_budget(d: _Delivery, message: OutboundMessage, exc: guardrails.BudgetExhaustedError) -> Outcome:
    """Over ``MAX_SENDS_PER_HOUR``: not dropped, put back on its queue invisible until the next window has room
    (as ``send_at`` does), with an outcome line the budget alert counts."""
    hop = _requeue(d, message, guardrails.defer_seconds(exc.retry_in))
    telemetry.count_pacing_deferral(message.priority, BUDGET_EXHAUSTED)
    _report(d, outcomes.reason_event(d.kind, message.id, message.to, "deferred", BUDGET_EXHAUSTED,
                                     f"MAX_SENDS_PER_HOUR spent: back in {hop} s"), final=False)
    _log(d.kind, message.id, message.to, "deferred", f"{BUDGET_EXHAUSTED}: {exc} (requeued for {hop} s)")
    return Outcome(d.kind, message.id, "deferred", reason=f"{BUDGET_EXHAUSTED}: requeued for {hop} s",
                   code=BUDGET_EXHAUSTED)


def _existing_claim(d: _Delivery, message: OutboundMessage, sender: tuple[str | None, str | None],
                    row: ledger.Row, digest: str) -> ledger.Row | Outcome:
    """Decide what an existing ledger row means for this delivery (see the module docstring, step 4)."""
    if row.status == "cancelled":
        _log(d.kind, message.id, message.to, "cancelled", f"already cancelled ({row.last_error})")
        return Outcome(d.kind, message.id, "cancelled", reason=row.last_error)
    resendable = row.status in ("failed", "rejected") and row.fields.get("resendable") and not row.reached_twilio
    if not resendable and row.conflicts_with(digest):
        return _id_conflict(d, message, row, digest)
    if row.reached_twilio or row.status == "sent":
        return _duplicate(d, message, row)
    if resendable:
        # Dead-lettered without ever reaching Twilio (invalid, opted out, retries exhausted): a corrected or
        # re-submitted message with the same id may be sent; the row now records the new content.
        try:
            return ledger.update(row, status="claimed", attempts=row.attempts + 1, claimed_at=_now(),
                                 resendable=False, content_hash=digest, **_row_content(message, clear=True))
        except ledger.LedgerConflictError:
            raise RetryLaterError("another delivery of this id took the claim") from None
    if row.status in ("failed", "rejected"):
        _log(d.kind, message.id, message.to, "duplicate", f"already dead-lettered ({row.last_error})")
        return Outcome(d.kind, message.id, "duplicate", reason=f"already {row.status}: {row.last_error}")
    if row.status == "retrying":
        try:
            return ledger.update(row, status="claimed", attempts=row.attempts + 1, claimed_at=_now())
        except ledger.LedgerConflictError:
            raise RetryLaterError("another delivery of this id took the claim") from None
    if row.status == "claimed" and _lease_active(row):
        if d.last_try:
            # Another delivery may be sending it, or one died after its attempt without a word (its update
            # failed). Either way come back once the lease is over: then the row says which, or it is reconciled.
            hop = _requeue(d, message, (_lease_end(row) - _now()).total_seconds() + 1)
            _log(d.kind, message.id, message.to, "deferred", f"claimed by another delivery; back in {hop} s")
            return Outcome(d.kind, message.id, "deferred", reason=f"claim in flight; requeued for {hop} s")
        raise RetryLaterError("another delivery of this id is sending it now")
    return _resolve_in_doubt(d, message, sender, row)


def _resolve_in_doubt(d: _Delivery, message: OutboundMessage, sender: tuple[str | None, str | None],
                      row: ledger.Row) -> ledger.Row | Outcome:
    """A previous try may have reached Twilio (``unknown``, or a claim whose lease ran out): ask Twilio.
    Waiting (for the settle window, or for status callbacks that tell contested matches apart) puts the message
    back on its queue with a delay, so it never spends the queue's retry budget."""
    settings = get_settings()
    doubt = row.last_error or "a previous try left no result"
    for _ in range(MAX_SID_RACES):
        try:
            verdict = reconcile.reconcile(message, sender, row, twilio_timeout=settings.twilio_http_timeout,
                                          settle_seconds=settings.reconcile_settle_seconds)
        except twilio_api.TwilioReadError as exc:
            telemetry.count_reconciliation("unreadable", outcomes.channel_of(d.kind, message.to))
            return _unreadable(d, message, row, f"{doubt}; {exc.reason}")
        if verdict.outcome != "found" or not verdict.claim:
            break
        try:
            ledger.claim_sid(d.kind, verdict.sid, message.id)  # of two ids that found one message, one wins
            break
        except ledger.SidClaimedError:
            continue  # another id proved it is theirs just now: look again
    else:
        raise RetryLaterError("reconciling: the SID index changed under every read of Twilio's list")
    telemetry.count_reconciliation(verdict.outcome, outcomes.channel_of(d.kind, message.to))
    if row.fields.get("read_errors"):
        row = _safe_update(row, read_errors=0) or row
    if verdict.outcome == "found":
        unreported = _emit_sent(d, message.id, message.to, verdict.sid, verdict.status, resolution="found")
        try:
            ledger.record_sent(row, verdict.sid, verdict.status, resolution="found",
                               resolution_detail=verdict.detail, **unreported)
        except Exception as exc:  # noqa: BLE001 - it was sent: acknowledge; the callback fills the row in
            log.error("outbound %s id=%s found as %s but the ledger was not updated: %s", d.kind, message.id,
                      verdict.sid, type(exc).__name__)
        _log(d.kind, message.id, message.to, "duplicate", f"in doubt ({doubt}); {verdict.detail}")
        _retry_for_the_event(d, unreported)
        return Outcome(d.kind, message.id, "duplicate", sid=verdict.sid, reason=verdict.detail)
    settled = reconcile.settled_at(row, twilio_timeout=settings.twilio_http_timeout,
                                   settle_seconds=settings.reconcile_settle_seconds)
    if verdict.outcome == "too_soon":
        return _wait_in_doubt(d, message, (settled - _now()).total_seconds() + 1, f"{doubt}; {verdict.detail}")
    if verdict.outcome == "contested":
        give_up = settled + timedelta(seconds=CONTEST_WAIT_FACTOR * settings.reconcile_settle_seconds)
        if _now() < give_up:
            poll = max(1.0, min(15.0, settings.reconcile_settle_seconds / 4))
            return _wait_in_doubt(d, message, min(poll, (give_up - _now()).total_seconds() + 1),
                                  f"{doubt}; {verdict.detail}")
        waited = CONTEST_WAIT_FACTOR * settings.reconcile_settle_seconds
        return _dead_letter(d, message.id, "ambiguous", f"ambiguous: {verdict.detail}; no callback settled it "
                            f"within {waited:g} s after the settle window", to=message.to, row=row,
                            ledger_values={"resolution": "ambiguous", "resolution_detail": verdict.detail})
    if verdict.outcome == "unsure":
        return _dead_letter(d, message.id, "ambiguous", f"ambiguous: {doubt}; {verdict.detail}", to=message.to,
                            row=row, ledger_values={"resolution": "ambiguous", "resolution_detail": verdict.detail})
    if row.attempts >= MAX_ATTEMPTS:
        # Every attempt so far is proven absent from Twilio's list: nothing was sent, so it may be replayed.
        return _dead_letter(d, message.id, "retries_exhausted",
                            f"gave up after {row.attempts} attempts, none of them in Twilio's list; last: {doubt}",
                            to=message.to, row=row, resendable=True,
                            ledger_values={"resolution": "absent", "resolution_detail": verdict.detail})
    if message.campaign and pacing.campaign_cancelled(message.campaign):
        # Proven never created, and its campaign was cancelled meanwhile: not sent again.
        _safe_update(row, status="cancelled", last_error=f"campaign {message.campaign} was cancelled",
                     resolution="absent", resolution_detail=verdict.detail)
        _report(d, outcomes.reason_event(d.kind, message.id, message.to, "cancelled", "cancelled",
                                         f"campaign {message.campaign} was cancelled"))
        _log(d.kind, message.id, message.to, "cancelled", f"campaign {message.campaign} was cancelled")
        return Outcome(d.kind, message.id, "cancelled", reason=f"campaign {message.campaign} was cancelled")
    log.warning("outbound %s id=%s to=%s resending: %s", d.kind, message.id, mask_number(message.to),
                verdict.detail)
    try:
        return ledger.update(row, status="claimed", attempts=row.attempts + 1, claimed_at=_now(),
                             resolution="resent", resolution_detail=verdict.detail)
    except ledger.LedgerConflictError:
        raise RetryLaterError("another delivery of this id took the claim") from None


def _wait_in_doubt(d: _Delivery, message: OutboundMessage, seconds: float, reason: str) -> Outcome:
    """Not decidable yet, and only time tells: back on the queue, invisible for ``seconds``. Not a failed try."""
    hop = _requeue(d, message, seconds)
    _log(d.kind, message.id, message.to, "deferred", f"in doubt, reconciling in {hop} s: {reason}")
    return Outcome(d.kind, message.id, "deferred", reason=f"in doubt; requeued for {hop} s")


def _unreadable(d: _Delivery, message: OutboundMessage, row: ledger.Row, reason: str) -> Outcome:
    """Twilio's list could not be read: a failed try (the queue retries). On the last try the message comes back
    later, unless the list failed ``MAX_UNREADABLE_READS`` times in a row: then it is ambiguous, and says so."""
    streak = int(row.fields.get("read_errors", 0) or 0) + 1
    updated = _safe_update(row, read_errors=streak) or row
    if not d.last_try:
        log.warning("outbound %s id=%s to=%s in doubt, retry: %s", d.kind, message.id, mask_number(message.to),
                    reason)
        raise RetryLaterError(reason)
    if streak >= MAX_UNREADABLE_READS:
        return _dead_letter(d, message.id, "ambiguous",
                            f"ambiguous: Twilio's list unreadable on {streak} reads in a row; last: {reason}",
                            to=message.to, row=updated, ledger_values={"resolution": "ambiguous",
                                                                       "resolution_detail": reason[:1000]})
    return _wait_in_doubt(d, message, max(1.0, queue_settings().visibility_timeout),
                          f"Twilio's list unreadable ({streak} in a row): {reason}")


def _come_back_later(d: _Delivery, message: OutboundMessage, row: ledger.Row, reason: str) -> Outcome:
    settings = get_settings()
    ready = reconcile.settled_at(row, twilio_timeout=settings.twilio_http_timeout,
                                 settle_seconds=settings.reconcile_settle_seconds)
    return _wait_in_doubt(d, message, (ready - _now()).total_seconds() + 1, reason)


def _row_content(message: OutboundMessage, *, clear: bool = False) -> dict[str, Any]:
    """What a later webhook needs from the message and can only find on its ledger row: the voicemail TwiML the
    AMD callback plays when a machine answers (``shared.status_callbacks``). ``clear`` blanks it for a row
    taken over by a message without one."""
    if isinstance(message, CallMessage) and message.voicemail:
        return {"voicemail_twiml": outbound.voicemail_twiml(message)}
    return {"voicemail_twiml": ""} if clear and isinstance(message, CallMessage) else {}


def _lease_end(row: ledger.Row) -> datetime:
    lease = 2 * get_settings().twilio_http_timeout + CLAIM_LEASE_MARGIN_SECONDS
    return (row.claimed_at or _now()) + timedelta(seconds=lease)


def _lease_active(row: ledger.Row) -> bool:
    return row.claimed_at is not None and _now() < _lease_end(row)


def _id_conflict(d: _Delivery, message: OutboundMessage, row: ledger.Row, digest: str) -> Outcome:
    """This id was claimed for other content: dead-letter this message; the original row is left as it is."""
    reason = (f"id {message.id} was already used for other content (status {row.status}); "
              "give this message its own id")
    return _dead_letter(d, message.id, "id_conflict", reason, to=message.to, update_ledger=False,
                        content_hash=digest, recorded_content_hash=row.content_hash)


def _duplicate(d: _Delivery, message: OutboundMessage, row: ledger.Row) -> Outcome:
    """Already sent: acknowledged, nothing emitted again, unless the ``sent`` event was never written."""
    _log(d.kind, message.id, message.to, "duplicate", f"already sent as {row.sid or row.twilio_status}")
    if row.fields.get("sent_unreported") and row.sid:
        unreported = _emit_sent(d, message.id, message.to, row.sid, row.twilio_status)
        if not unreported:
            _safe_update(row, sent_unreported=False)
        _retry_for_the_event(d, unreported)
    return Outcome(d.kind, message.id, "duplicate", sid=row.sid)


def _transient(d: _Delivery, message: OutboundMessage, row: ledger.Row, reason: str, *,
               maybe_sent: bool) -> Outcome:
    status = "unknown" if maybe_sent else "retrying"
    updated = _safe_update(row, status=status, last_error=reason)
    if d.last_try and maybe_sent:
        if (updated or row).attempts >= MAX_ATTEMPTS:
            return _dead_letter(d, message.id, "ambiguous", f"ambiguous: {row.attempts} attempts; {reason}",
                                to=message.to, row=updated or row, ledger_values={"resolution": "ambiguous"})
        return _come_back_later(d, message, updated or row, reason)
    if d.last_try:
        return _dead_letter(d, message.id, "retries_exhausted", f"gave up after {d.dequeue_count} tries: {reason}",
                            to=message.to, row=updated or row, resendable=True)
    log.warning("outbound %s id=%s to=%s retry (%s): %s", d.kind, message.id, mask_number(message.to), status,
                reason)
    raise RetryLaterError(reason)


def _safe_update(row: ledger.Row, **values: Any) -> ledger.Row | None:
    """Record an outcome; a conflict or storage error is logged, not raised (the outcome itself stands)."""
    try:
        return ledger.update(row, **values)
    except Exception as exc:  # noqa: BLE001
        log.warning("ledger %s/%s not updated to %s: %s", row.kind, row.id, values.get("status"), exc)
        return None


def _ledger_note(kind: Kind, ident: str, status: str, reason: str) -> None:
    """Best-effort row for a message that never got a claim (invalid): the poison entry is the record."""
    try:
        ledger.insert_if_absent(kind, ident, status=status, attempts=0, last_error=reason[:1000], resendable=True)
    except Exception as exc:  # noqa: BLE001
        log.warning("ledger %s/%s: could not note %s: %s", kind, ident, status, type(exc).__name__)


# ---------------------------------------------------------------- dead letters


def poison_queue_name(queue_name: str) -> str:
    return f"{queue_name}-poison"


def poison_document(d: _Delivery, ident: str, code: str, reason: str, **extra: Any) -> dict[str, Any]:
    """``{"error": {...}, "message": <text as received>}``; undecodable bytes go in as base64 with a flag."""
    error: dict[str, Any] = {"code": code, "reason": reason, "id": ident, "kind": d.kind, "queue": d.queue_name,
                             "queue_message_id": d.queue_message_id, "dequeue_count": d.dequeue_count,
                             "at": _now().isoformat()}
    error.update({k: v for k, v in extra.items() if v is not None})
    document: dict[str, Any] = {"error": error}
    try:
        document["message"] = d.body.decode("utf-8")
    except UnicodeDecodeError:
        document["message"] = base64.b64encode(d.body).decode("ascii")
        document["message_base64"] = True
    if len(json.dumps(document)) > MAX_POISON_CHARS:
        # Keep the poison message storable: a prefix, the size and a hash identify the original.
        document["message_bytes"] = len(d.body)
        document["message_sha256"] = hashlib.sha256(d.body).hexdigest()
        document["message_truncated"] = True
        document["message"] = document["message"][:4096]
    return document


def _dead_letter(d: _Delivery, ident: str, code: str, reason: str, *, to: str | None = None,
                 row: ledger.Row | None = None, update_ledger: bool = True, resendable: bool = False,
                 ledger_values: dict[str, Any] | None = None, **extra: Any) -> Outcome:
    to = to if to is not None else _guess_to(d)
    _report(d, outcomes.reason_event(d.kind, ident, to, "opted_out" if code == "opted_out" else "dead_lettered",
                                     code, reason))
    document = poison_document(d, ident, code, reason, **extra)
    storage.queue(poison_queue_name(d.queue_name)).send_message(json.dumps(document, ensure_ascii=True),
                                                                time_to_live=-1)
    if update_ledger and row is not None:
        _safe_update(row, status="failed", last_error=reason[:1000], resendable=resendable, **(ledger_values or {}))
    telemetry.count_dead_letter(code, outcomes.channel_of(d.kind, to))
    _log(d.kind, ident, to, "dead_lettered", f"{code}: {reason}")
    return Outcome(d.kind, ident, "dead_lettered", reason=reason, code=code)


def _report(d: _Delivery, document: dict[str, Any], *, final: bool = True) -> None:
    """Emit an outcome event before what it reports is done. A final one that cannot be written fails this try
    (the queue delivers the message again and it is decided, and emitted, again); on the last try, or for a
    deferral (already requeued), the miss is logged."""
    try:
        outcomes.emit(document)
    except outcomes.OutcomeNotWrittenError as exc:
        if final and not d.last_try:
            raise RetryLaterError(str(exc)) from None
        log.error("outbound %s id=%s %s", d.kind, document.get("id"), exc)


# ---------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _log(kind: str, ident: str, to: str | None, outcome: str, detail: str) -> None:
    """The outcome line (the alerts parse it: tests/unit/test_outcome_log_format.py) and ``switchboard.sends``."""
    telemetry.count_send(outcome, outcomes.channel_of(kind, to))
    level = logging.WARNING if outcome == "dead_lettered" else logging.INFO
    log.log(level, "outbound %s id=%s to=%s outcome=%s %s", kind, ident, mask_number(to), outcome, detail)


def _decoded_document(d: _Delivery) -> dict[str, Any] | None:
    try:
        return outbound.decode(d.body).document
    except InvalidMessageError:
        return None


def _guess_id(d: _Delivery) -> str:
    """The id the message claims if it is a valid one, else the queue message id (for logs and poison)."""
    document = _decoded_document(d)
    ident = document.get("id") if document else None
    if isinstance(ident, str) and outbound.matches(outbound.ID_PATTERN, ident):
        return ident
    return d.queue_message_id or "unknown"


def _guess_to(d: _Delivery) -> str | None:
    document = _decoded_document(d)
    to = document.get("to") if document else None
    return to if isinstance(to, str) else None
