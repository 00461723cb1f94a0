"""Inbound SMS, WhatsApp and voicemail: keyword handling, the reply, and the event for the inbound queue.

Every inbound message becomes one JSON event on ``INBOUND_QUEUE`` so the user's own consumers see everything
Twilio told us, including opt-outs (``keyword``), media and the ``channel`` it came on (``sms`` or ``whatsapp``:
WhatsApp arrives on the same webhook with ``From: whatsapp:+…``). Opt-outs are kept per address, so a STOP on
WhatsApp stops WhatsApp sends to that number and a STOP by SMS stops SMS (README, "Opt-outs").
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone

from . import APP_NAME, flows, optouts, twiml
from .redact import mask_number
from .throttled_log import log_throttled
from .webhooks import MalformedRequestError, Params, WebhookRejected

log = logging.getLogger("switchboard.inbound")

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})
HELP_TEXT = f"{APP_NAME}: reply STOP to stop receiving messages, START to receive them again."
# Twilio confirms an SMS opt-out itself (carrier rules); on WhatsApp nobody does, so we do.
WHATSAPP_STOP_TEXT = f"{APP_NAME}: you will get no more WhatsApp messages from us. Reply START to resume."
WHATSAPP_PREFIX = "whatsapp:"
MAX_MEDIA = 10
# What is left of a body once whitespace, punctuation and invisible characters are trimmed from both ends: a
# keyword fits in this; anything longer is a message (and needs no normalising). Trimmed first, so a STOP with
# any amount of padding is still an opt-out (on WhatsApp nobody else would stop the sends).
MAX_KEYWORD_INPUT = 160

# What an inbound event may carry. The event goes on a Storage queue as is (messageEncoding none), and a queue
# message holds at most 64 KiB; json.dumps escapes every non-ASCII character (an emoji is 12 bytes), and the queue
# request is XML, which escapes & < >. Bodies as Twilio delivers them (an SMS up to 1600 UTF-16 units, WhatsApp up
# to 4096), URLs up to 2048 characters, any other value up to 256; the encoded event, counted with its XML
# escapes, within MAX_EVENT_BYTES. Past any of these the request is refused (413), before anything is recorded.
MAX_INBOUND_BODY_UNITS = {"sms": 1600, "whatsapp": 4096}
MAX_URL_CHARS = 2048
MAX_VALUE_CHARS = 256
MAX_EVENT_BYTES = 60 * 1024
# Table storage forbids these characters in a RowKey (controls U+0000-001F, U+007F-009F, / \ # ?); invisible
# format characters (zero-width, bidi overrides) would make two keys for one number. Neither is in an address.
_BAD_KEY_CHARS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f"
                            r"\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


class TooLargeError(WebhookRejected):
    """A signed request whose event could not be carried on the inbound queue: refused, never half-stored."""

    status = 413
    code = "too_large"


@dataclass(frozen=True)
class InboundResult:
    """What a webhook answers (TwiML) and the event it hands to the inbound queue."""

    twiml: str
    event: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _is_edge_noise(char: str) -> bool:
    """Whitespace, punctuation, invisible format characters and controls: never part of a keyword."""
    return char.isspace() or unicodedata.category(char)[0] in "PZC"


def _trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return text[start:end]


def normalise_keyword(body: str) -> str:
    """The body as a keyword candidate: whitespace, punctuation and invisible characters trimmed from both ends,
    then (when what is left is short enough to be a keyword) NFKC (full-width ＳＴＯＰ → STOP), invisible
    characters (zero-width, bidi marks: category Cf) removed, trimmed again, upper case."""
    text = _trim(body)
    if len(text) > MAX_KEYWORD_INPUT:
        return text[:MAX_KEYWORD_INPUT].upper()  # a message, not a keyword: no need to normalise all of it
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return _trim(text).upper()


def keyword_of(body: str) -> str:
    """The opt-out/opt-in/help keyword a body is, or '' (the whole normalised body must be the keyword, as
    Twilio matches it: "please stop texting me" is a message, not an opt-out)."""
    if len(_trim(body)) > MAX_KEYWORD_INPUT:
        return ""
    word = normalise_keyword(body)
    return word if word in OPT_OUT | OPT_IN | HELP else ""


def _value(params: Params, name: str, limit: int = MAX_VALUE_CHARS) -> str:
    """A parameter as it goes into an event or a table row: at most ``limit`` characters, else 413."""
    value = params.first(name)
    if len(value) > limit:
        raise TooLargeError(f"parameter {name} of {len(value)} characters is over the {limit}-character limit")
    return value


def _body(params: Params, channel: str) -> str:
    body = params.first("Body")
    limit = MAX_INBOUND_BODY_UNITS[channel]
    units = len(body.encode("utf-16-le", "surrogatepass")) // 2  # as Twilio counts: an emoji is 2
    if units > limit:
        raise TooLargeError(f"Body of {units} UTF-16 units is over the {limit} a {channel} message can have")
    return body


def encode_event(event: dict) -> str:
    """The event as the queue message text, or :class:`TooLargeError` when the queue could not hold it."""
    text = json.dumps(event)
    size = len(text.encode("utf-8")) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))
    if size > MAX_EVENT_BYTES:
        raise TooLargeError(f"the inbound event would be {size} bytes, over the {MAX_EVENT_BYTES}-byte queue limit")
    return text


def _media(params: Params) -> list[dict[str, str]]:
    try:
        count = min(int(params.first("NumMedia", "0") or 0), MAX_MEDIA)
    except ValueError:
        raise MalformedRequestError("NumMedia is not a number") from None
    return [
        {"url": _value(params, f"MediaUrl{i}", MAX_URL_CHARS), "content_type": _value(params, f"MediaContentType{i}")}
        for i in range(count)
        if params.first(f"MediaUrl{i}")
    ]


def channel_of(address: str) -> str:
    """``whatsapp`` for a ``whatsapp:`` address, else ``sms``."""
    return "whatsapp" if address.lower().startswith(WHATSAPP_PREFIX) else "sms"


def handle_sms(params: Params, auto_reply: str = "", reply_interval: str = "") -> InboundResult:
    """Apply STOP/START/HELP, choose the reply, and build the inbound event (SMS and WhatsApp alike).

    ``reply_interval`` (``AUTO_REPLY_MIN_INTERVAL_SECONDS``, empty = off): at most one reply per sender number in
    that many seconds (:func:`_reply_limited`), so a flood of inbound texts is not a flood of paid replies. The
    WhatsApp confirmation of a STOP that opts the address out is always sent (the sender must learn it worked);
    a repeated STOP from an address already opted out is limited like any reply. Every suppressed reply is logged,
    and the event says ``reply_limited``; the event goes on the inbound queue either way."""
    sender = params.require("From")
    if _BAD_KEY_CHARS.search(sender) or len(sender) > 64:
        raise MalformedRequestError("From is not a phone number or address")
    channel = channel_of(sender)
    body = _body(params, channel)
    keyword = keyword_of(body)
    message_sid = _value(params, "MessageSid") or _value(params, "SmsSid")
    # The whole event is built and measured before anything is recorded: a request refused for its size changes
    # nothing. (``reply_limited`` is measured as false, the longer of its two values.)
    event = {
        "type": "sms",
        "channel": channel,
        "from": sender,
        "to": _value(params, "To"),
        "body": body,
        "message_sid": message_sid,
        "account_sid": _value(params, "AccountSid"),
        "messaging_service_sid": _value(params, "MessagingServiceSid"),
        "media": _media(params),
        "keyword": keyword,
        "reply_limited": False,
        "received_at": _now(),
    }
    if channel == "whatsapp":  # what WhatsApp adds: the sender's profile name and WhatsApp id
        event.update(profile_name=_value(params, "ProfileName"), wa_id=_value(params, "WaId"))
    encode_event(event)
    reply = auto_reply
    confirms_opt_out = False
    if keyword in OPT_OUT:
        confirms_opt_out = channel == "whatsapp" and bool(reply_interval) and not _already_opted_out(sender)
        optouts.record_optout(sender, keyword, message_sid)
        # On SMS Twilio itself confirms an opt-out (a reply of ours would be blocked anyway); on WhatsApp we do.
        reply = WHATSAPP_STOP_TEXT if channel == "whatsapp" else ""
        log.info("opt-out recorded for %s (%s)", mask_number(sender), keyword)
    elif keyword in OPT_IN:
        optouts.clear_optout(sender)
        reply = ""
        log.info("opt-out cleared for %s (%s)", mask_number(sender), keyword)
    elif keyword in HELP:
        reply = HELP_TEXT
    else:
        reply = flows.keyword_reply(body, auto_reply)  # the flow file's keywords, else SMS_AUTO_REPLY
    limited = bool(reply) and not confirms_opt_out and _reply_limited(sender, reply_interval)
    if limited:
        reply = ""
    event["reply_limited"] = limited
    return InboundResult(twiml.sms_reply(reply), encode_event(event))


def _already_opted_out(sender: str) -> bool:
    try:
        return optouts.is_opted_out(sender)
    except optouts.InvalidAddressError:  # not a phone address: no reply can be limited by number anyway
        return False


def _reply_limited(sender: str, setting: str) -> bool:
    """True when a reply to ``sender`` must be suppressed: one went out within ``AUTO_REPLY_MIN_INTERVAL_SECONDS``
    (``shared.guardrails``). Fails closed: a bad setting or an unreachable table means no reply (it costs nothing;
    the inbound event is still queued), logged."""
    from . import guardrails, storage
    from .config import InvalidSettingError, get_settings

    try:
        interval = guardrails.reply_interval(get_settings()) if setting else None
    except InvalidSettingError as exc:
        log_throttled(log, logging.ERROR, "reply interval setting", "no replies to inbound messages: %s", exc)
        return True
    if interval is None:
        return False
    try:
        since = guardrails.take_reply_slot(sender, interval)
    except Exception as exc:  # noqa: BLE001 - storage down or the row too busy: no reply rather than many
        if not (storage.is_storage_error(exc) or isinstance(exc, guardrails.GuardrailBusyError)):
            raise
        log.warning("reply to %s suppressed: reply limiter unavailable (%s)", mask_number(sender),
                    type(exc).__name__)
        return True
    if since is None:
        return False
    log.info("reply to %s suppressed: last reply %.0f s ago (AUTO_REPLY_MIN_INTERVAL_SECONDS = %g)",
             mask_number(sender), max(since, 0.0), interval)
    return True


RECORDING_STATUSES = frozenset({"in-progress", "completed", "absent", "failed"})


def handle_recording_status(params: Params) -> str:
    """A voicemail's recording status callback (completed: the audio can be fetched; absent: nothing was said)
    as an inbound event, so consumers know when ``recording_url`` is ready. Returns the event."""
    status = params.require("RecordingStatus")  # exactly as Twilio writes it
    if status not in RECORDING_STATUSES:
        raise MalformedRequestError(f"RecordingStatus must be one of {', '.join(sorted(RECORDING_STATUSES))}")
    params.require("CallSid")
    event = {
        "type": "recording_status",
        "call_sid": _value(params, "CallSid"),
        "account_sid": _value(params, "AccountSid"),
        "recording_sid": _value(params, "RecordingSid"),
        "recording_url": _value(params, "RecordingUrl", MAX_URL_CHARS),
        "recording_status": status,
        "recording_duration": _value(params, "RecordingDuration"),
        "error_code": _value(params, "ErrorCode"),
        "received_at": _now(),
    }
    return encode_event(event)


def handle_voicemail(params: Params) -> InboundResult:
    """Thank the caller and hand the recording on."""
    params.require("CallSid")
    event = {
        "type": "voicemail",
        "from": _value(params, "From"),
        "to": _value(params, "To"),
        "call_sid": _value(params, "CallSid"),
        "account_sid": _value(params, "AccountSid"),
        "recording_url": _value(params, "RecordingUrl", MAX_URL_CHARS),
        "recording_sid": _value(params, "RecordingSid"),
        "recording_duration": _value(params, "RecordingDuration"),
        "digits": _value(params, "Digits"),
        "received_at": _now(),
    }
    return InboundResult(twiml.voicemail_saved(), encode_event(event))
