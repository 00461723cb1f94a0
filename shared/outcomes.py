"""Outcome events: what became of each queued message, pushed to a queue of the producer's (``OUTCOMES_QUEUE``).

Why: without it a producer drops a message on a queue and must poll the ``sends`` table (or the ``-poison``
queues) to learn whether it went out. Azure Communication Services pushes delivery reports (Event Grid); this is
the same loop for Twilio. One JSON event per change a producer cares about:

- ``sent``: Twilio accepted it (``sid``);
- ``status``: a Twilio status callback moved the message or call forward (``status``: delivered, undelivered,
  failed with ``error`` = Twilio's code and its meaning, read for WhatsApp, a call's completed with
  ``duration_seconds`` and ``answered_by``…); a status that would go backwards is refused by the ledger and never
  emitted;
- ``dead_lettered`` (``reason``: the poison entry's code and text), ``opted_out`` (the recipient sent STOP),
  ``cancelled`` (``ops sends cancel``), ``deferred`` (``send_at``, pacing, the hourly budget: ``reason``).

Every event carries ``id`` (the message's), ``kind`` (sms|call), ``channel`` (sms|whatsapp|call), the masked
recipient ``to``, ``at`` (UTC) and ``sequence``: the stage in the message's life (deferred 10 < sent 20 < each
Twilio status by its order < dead_lettered/opted_out/cancelled 100), so a consumer can order one message's events
whichever arrives first. Delivery is **at least once**: deduplicate on ``event_id``
(``<kind>:<id>:<type>[:<status or code>]``), the same for every copy of one event.

Where they are written: the send path (queue-triggered) with the Storage SDK (:func:`emit`); the status callbacks
(HTTP-triggered by Twilio) through the Functions queue output binding (:func:`output_queue_binding_name`, set from
``routes.Reply.outcome``). Empty or ``off`` = no events.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any, Mapping


SETTING = "OUTCOMES_QUEUE"
DEFAULT_QUEUE = "outbound-outcomes"
OFF_VALUES = ("", "off")

# The stage of each event type in a message's life (``sequence``); Twilio statuses sit between sent and the end.
DEFERRED_SEQUENCE = 10
SENT_SEQUENCE = 20
STATUS_SEQUENCE_BASE = 20   # + 10 x the status's rank in its lifecycle (shared.ledger.status_rank)
FINAL_SEQUENCE = 100        # dead_lettered, opted_out, cancelled: nothing follows

# What Twilio's most common delivery error codes mean (twilio.com/docs/api/errors), for the ``error`` of a
# failed or undelivered status; any other code is passed on with a pointer to Twilio's error reference.
TWILIO_ERRORS: Mapping[str, str] = {
    "30001": "Queue overflow", "30002": "Account suspended", "30003": "Unreachable destination handset",
    "30004": "Message blocked", "30005": "Unknown destination handset", "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by the carrier", "30008": "Unknown error", "30009": "Missing segment",
    "30010": "Message price exceeds max price", "30032": "Toll-free number has not been verified",
    "30034": "Message from an unregistered number (US A2P 10DLC)", "21610": "Recipient unsubscribed (STOP)",
    "21211": "Invalid 'To' phone number", "21408": "Permission to send to this region is not enabled",
    "21614": "'To' number is not a valid mobile number", "63016": "Outside the WhatsApp 24-hour window",
    "63003": "WhatsApp: the channel could not find the recipient",
}


class OutcomeNotWrittenError(RuntimeError):
    """The outcome event could not be put on the outcomes queue (the caller decides whether to retry)."""

    def __init__(self, event_id: str, cause: str) -> None:
        super().__init__(f"outcome {event_id} not written: {cause}")
        self.event_id = event_id
        self.cause = cause


def queue_name(environ: Mapping[str, str] | None = None) -> str:
    """The outcomes queue, or "" when events are off (``OUTCOMES_QUEUE`` empty or ``off``; unset = the default)."""
    env = os.environ if environ is None else environ
    value = env.get(SETTING)
    if value is None:
        return DEFAULT_QUEUE
    value = value.strip()
    return "" if value.lower() in OFF_VALUES else value


def output_queue_binding_name(environ: Mapping[str, str] | None = None) -> str:
    """The queue name for the status callbacks' output binding. The host fails to index a function whose
    ``%SETTING%`` is unset or empty, so the expression is used only when the setting names a queue; otherwise the
    default name stands in, and nothing is ever written to it (the app sets the binding only when events are on)."""
    env = os.environ if environ is None else environ
    return f"%{SETTING}%" if queue_name(env) and env.get(SETTING) is not None else DEFAULT_QUEUE


def channel_of(kind: str, to: str | None) -> str:
    if kind == "call":
        return "call"
    return "whatsapp" if (to or "").lower().startswith("whatsapp:") else "sms"


def event(kind: str, ident: str, to: str | None, event_type: str, *, sequence: int, key: str = "",
          **fields: Any) -> dict[str, Any]:
    """One outcome event (see the module docstring); ``key`` makes ``event_id`` unique for repeatable types."""
    from .redact import mask_number

    event_id = f"{kind}:{ident}:{event_type}" + (f":{key}" if key else "")
    document: dict[str, Any] = {"event_id": event_id, "type": event_type, "id": ident, "kind": kind,
                                "channel": channel_of(kind, to), "to": mask_number(to), "sequence": sequence,
                                "at": datetime.now(timezone.utc).isoformat()}
    document.update({name: value for name, value in fields.items() if value not in (None, "")})
    return document


def status_event(kind: str, ident: str, to: str | None, status: str, *, rank: int, sid: str = "",
                 error_code: str = "", duration: str = "", answered_by: str = "") -> dict[str, Any]:
    """A Twilio status the ledger accepted (it only moves forward)."""
    error = None
    if error_code:
        error = {"code": error_code, "meaning": TWILIO_ERRORS.get(
            error_code, f"see https://www.twilio.com/docs/api/errors/{error_code}")}
    return event(kind, ident, to, "status", sequence=STATUS_SEQUENCE_BASE + 10 * rank, key=status, status=status,
                 sid=sid, error=error, duration_seconds=int(duration) if duration.isdigit() else None,
                 answered_by=answered_by)


def reason_event(kind: str, ident: str, to: str | None, event_type: str, code: str, text: str,
                 **fields: Any) -> dict[str, Any]:
    """dead_lettered, opted_out, cancelled (final) or deferred, with the reason's code and text."""
    sequence = DEFERRED_SEQUENCE if event_type == "deferred" else FINAL_SEQUENCE
    return event(kind, ident, to, event_type, sequence=sequence, key=code if event_type == "deferred" else "",
                 reason={"code": code, "text": text[:500]}, **fields)


def encode(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def emit(document: Mapping[str, Any]) -> bool:
    """Put one event on the outcomes queue with the Storage SDK (the send path). False = events are off.
    Raises :class:`OutcomeNotWrittenError` when the queue cannot be written."""
    name = queue_name()
    if not name:
        return False
    from . import storage

    try:
        storage.queue(name).send_message(encode(document))
    except Exception as exc:  # noqa: BLE001 - any storage failure: the caller decides (retry or log)
        raise OutcomeNotWrittenError(str(document.get("event_id", "")), type(exc).__name__) from None
    return True


def for_binding(document: Mapping[str, Any] | None) -> str | None:
    """The text for the output binding, or None when there is no event or events are off."""
    return encode(document) if document is not None and queue_name() else None
