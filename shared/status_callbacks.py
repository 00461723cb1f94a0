"""Twilio status callbacks for our own sends → the ``sends`` ledger row named by ``?id=``.

Why the id travels in the URL: Twilio's Messages/Calls APIs have no idempotency key or metadata field, so the
status callback URL we pass on create (``/api/status/message?id=…``) is the only way to tie Twilio's events back
to the queue message. That also resolves an "ambiguous" send (timed out, then accepted by Twilio): the callback
fills in its SID and status. Signature checking happens before this code runs (``routes.twilio_webhook``).
"""

from __future__ import annotations

import logging

from . import ledger
from .outbound import ID_PATTERN, Kind, matches
from .redact import mask_number
from .webhooks import MalformedRequestError, Params, WebhookRejected

log = logging.getLogger("switchboard.status")


class UnknownSendRejected(WebhookRejected):
    """A callback for an id the ledger does not know (404: not ours, or already purged)."""

    status = 404


def handle(kind: Kind, query: Params, params: Params) -> None:
    """Apply one signed callback. Raises :class:`WebhookRejected` (400/404) for what a caller got wrong."""
    ident = query.first("id")
    if not ident:
        raise MalformedRequestError("missing id in the callback URL")
    if not matches(ID_PATTERN, ident):
        raise MalformedRequestError("id in the callback URL is not a valid send id")
    status_field = "MessageStatus" if kind == "sms" else "CallStatus"
    status = params.first(status_field) or params.first("SmsStatus")
    if not status:
        raise MalformedRequestError(f"missing parameter {status_field}")
    sid = params.first("MessageSid") or params.first("SmsSid") if kind == "sms" else params.first("CallSid")
    error_code = params.first("ErrorCode")
    try:
        row = ledger.apply_callback(kind, ident, status, sid=sid, error_code=error_code)
    except ledger.UnknownSendError:
        raise UnknownSendRejected(f"no {kind} send with this id") from None
    log.info("status %s id=%s to=%s twilio=%s row=%s%s", kind, ident, mask_number(params.first("To")), status,
             row.status, f" error={error_code}" if error_code else "")
