"""Twilio status callbacks for our own sends → the ``sends`` ledger row named by ``?id=``: message and call status,
and a call's asynchronous answering-machine detection result (``AnsweredBy``, plus the voicemail drop).

Why the id travels in the URL: Twilio's Messages/Calls APIs have no idempotency key or metadata field, so the
status callback URL we pass on create (``/api/status/message?id=…``) is the only way to tie Twilio's events back
to the queue message. That also resolves an "ambiguous" send (timed out, then accepted by Twilio): the callback
fills in its SID and status. Signature checking happens before this code runs (``routes.twilio_webhook``).
"""

from __future__ import annotations

import logging
import re

from typing import Any

from . import ledger, outcomes, secrets
from .outbound import ID_PATTERN, Kind, matches
from .redact import mask_number
from .webhooks import MalformedRequestError, Params, WebhookRejected

log = logging.getLogger("switchboard.status")


class UnknownSendRejected(WebhookRejected):
    """A callback for an id the ledger does not know (404: not ours, or already purged)."""

    status = 404
    code = "unknown_send"


class SidMismatchRejected(WebhookRejected):
    """The callback names another message or call than the one the ledger recorded for this id (409)."""

    status = 409
    code = "sid_mismatch"


RESOURCE_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")  # SM…/MM… (messages), CA… (calls)
# What a callback writes into the ledger row is bounded before it reaches the table (a string property holds at
# most 64 KiB; a longer value would fail the write, which answers 503 and makes Twilio retry for ever): a status is
# one of Twilio's status words (queued, in-progress, partially_delivered…), an ErrorCode Twilio's numeric code.
TWILIO_STATUS = re.compile(r"[A-Za-z][A-Za-z_-]{0,31}")
ERROR_CODE = re.compile(r"[0-9]{1,10}")


def handle(kind: Kind, query: Params, params: Params) -> dict[str, Any] | None:
    """Apply one signed callback; the outcome event when the ledger took the status (a repeat of the row's own
    status is emitted again: Twilio retries a callback it got no answer to, and consumers deduplicate), None when
    it would have gone backwards. Raises :class:`WebhookRejected` (400/404) for what a caller got wrong."""
    ident = query.first("id")
    if not ident:
        raise MalformedRequestError("missing id in the callback URL")
    if not matches(ID_PATTERN, ident):
        raise MalformedRequestError("id in the callback URL is not a valid send id")
    status_field = "MessageStatus" if kind == "sms" else "CallStatus"
    status = params.first(status_field) or params.first("SmsStatus")
    if not status:
        raise MalformedRequestError(f"missing parameter {status_field}")
    if not matches(TWILIO_STATUS, status.strip()):
        raise MalformedRequestError(f"{status_field} is not a Twilio status (1-32 letters, '-' or '_')")
    sid = params.first("MessageSid") or params.first("SmsSid") if kind == "sms" else params.first("CallSid")
    if sid and not matches(RESOURCE_SID, sid):  # it becomes a table key (the SID index)
        raise MalformedRequestError("the SID is not a Twilio SID (2 letters + 32 hex digits)")
    error_code = params.first("ErrorCode")
    if error_code and not matches(ERROR_CODE, error_code):
        raise MalformedRequestError("ErrorCode is not a Twilio error code (1-10 digits)")
    try:
        row = ledger.apply_callback(kind, ident, status, sid=sid, error_code=error_code)
    except ledger.UnknownSendError:
        raise UnknownSendRejected(f"no {kind} send with this id") from None
    except ledger.CallbackSidMismatchError as exc:
        # Flagged by the ledger (sid_mismatch, or double_send with the SID kept in the row's ``sids``); the row's
        # status stays the message's it already tracks.
        raise SidMismatchRejected("the callback's SID is not the one recorded for this id" +
                                  ("" if exc.owner else ": recorded as a second send of this id")) from None
    log.info("status %s id=%s to=%s twilio=%s row=%s%s", kind, ident, mask_number(params.first("To")), status,
             row.status, f" error={error_code}" if error_code else "")
    status = status.strip().lower()
    if row.twilio_status != status:
        return None
    duration = params.first("CallDuration") if kind == "call" else ""
    answered_by = params.first("AnsweredBy") or str(row.fields.get("answered_by", "") or "")
    return outcomes.status_event(kind, ident, params.first("To"), status, rank=ledger.status_rank(kind, status),
                                 sid=row.sid, error_code=error_code, duration=duration[:9],
                                 answered_by=answered_by if answered_by in ANSWERED_BY else "")


# ---------------------------------------------------------------- asynchronous answering-machine detection

# AnsweredBy values of Twilio's AMD; machine_end_* come with MachineDetection=DetectMessageEnd, after the beep.
ANSWERED_BY = frozenset({"human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other",
                         "fax", "unknown"})
MACHINE_MESSAGE_ENDED = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")


class CallMismatchRejected(SidMismatchRejected):
    """The AMD result names another call than the one the ledger recorded for this id (409)."""

    code = "call_mismatch"


class TwilioUnavailableRejected(WebhookRejected):
    """The voicemail could not be handed to Twilio just now (503: Twilio may retry the callback)."""

    status = 503
    code = "twilio_unavailable"


def handle_amd(query: Params, params: Params, *, max_tries: int = 8) -> ledger.Row:
    """Record ``AnsweredBy`` on the call's ledger row; when a machine's greeting has ended and the call has a
    voicemail, replace the call's TwiML with it (once: the etag-guarded ``voicemail_status`` claim makes a
    repeated callback a no-op)."""
    ident = _callback_id(query)
    answered_by = params.first("AnsweredBy")  # exactly as Twilio writes it
    if answered_by not in ANSWERED_BY:
        raise MalformedRequestError(f"AnsweredBy must be one of {', '.join(sorted(ANSWERED_BY))}")
    call_sid = params.first("CallSid")
    if not matches(CALL_SID, call_sid):
        raise MalformedRequestError("CallSid is not a call SID (CA + 32 hex digits)")
    duration = params.first("MachineDetectionDuration")[:16]
    for _ in range(max_tries):
        row = ledger.get("call", ident)
        if row is None:
            raise UnknownSendRejected("no call send with this id")
        if row.sid and row.sid != call_sid:
            raise CallMismatchRejected("AnsweredBy is for another call than this id's")
        drop = (answered_by in MACHINE_MESSAGE_ENDED and bool(row.fields.get("voicemail_twiml"))
                and not row.fields.get("voicemail_status"))
        values: dict[str, str] = {}
        if row.fields.get("answered_by") != answered_by:
            values.update(answered_by=answered_by, amd_duration_ms=duration)
        if drop:
            values["voicemail_status"] = "dropping"
        if not values:
            return row  # a repeated callback: already recorded
        try:
            row = ledger.update(row, **values)
        except ledger.LedgerConflictError:
            continue
        log.info("amd id=%s answered_by=%s%s", ident, answered_by, " voicemail=dropping" if drop else "")
        return _drop_voicemail(row, call_sid) if drop else row
    raise ledger.LedgerConflictError(f"call/{ident}: too many concurrent changes")


def _drop_voicemail(row: ledger.Row, call_sid: str) -> ledger.Row:
    from . import twilio_api

    try:
        twilio_api.drop_voicemail(call_sid, str(row.fields.get("voicemail_twiml")))
    except twilio_api.PermanentTwilioError as exc:  # e.g. the call already ended: record why, answer 204
        log.warning("amd id=%s voicemail not dropped: %s", row.id, exc.reason)
        return _record_voicemail(row, voicemail_status="failed", voicemail_error=exc.reason[:1000])
    except (twilio_api.TransientTwilioError, secrets.SecretUnavailableError) as exc:
        _record_voicemail(row, voicemail_status="", voicemail_error=getattr(exc, "reason", str(exc))[:1000])
        raise TwilioUnavailableRejected("voicemail not handed to Twilio yet; retry") from None
    return _record_voicemail(row, voicemail_status="dropped", voicemail_error="")


def _record_voicemail(row: ledger.Row, **values: str) -> ledger.Row:
    """Write the voicemail's outcome; only this callback holds the ``dropping`` claim, so re-read and retry."""
    for _ in range(8):
        try:
            return ledger.update(row, **values)
        except ledger.LedgerConflictError:
            fresh = ledger.get(row.kind, row.id)
            if fresh is None:
                return row
            row = fresh
    log.error("amd %s/%s: voicemail outcome %s not recorded", row.kind, row.id, values.get("voicemail_status"))
    return row


def _callback_id(query: Params) -> str:
    ident = query.first("id")
    if not ident:
        raise MalformedRequestError("missing id in the callback URL")
    if not matches(ID_PATTERN, ident):
        raise MalformedRequestError("id in the callback URL is not a valid send id")
    return ident
