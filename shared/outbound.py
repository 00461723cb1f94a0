"""The outbound queue message schema: parse, validate, encode (DESIGN, "Queue functions").

Why a module of its own: the queue functions and the enqueue CLI must agree on exactly one definition of a valid
message, so a producer learns about a bad message at enqueue time and the function never sends one. Nothing here
touches the network or an SDK; every rejection is an :class:`InvalidMessageError` naming the field and the rule
(``"to: not an E.164 number"``, ``"body: 1700 chars > 1600"``), which is what ends up in the poison queue.

Wire format: a UTF-8 JSON object, either raw or base64-encoded (host.json has ``messageEncoding: none`` so any
producer works; producers that base64 by habit still work). Unknown fields are rejected so a typo (``"boddy"``)
is not silently dropped.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

Kind = Literal["sms", "call"]
KINDS: tuple[Kind, ...] = ("sms", "call")

MAX_MESSAGE_BYTES = 64 * 1024          # a Storage queue message can hold no more
MAX_BODY_CHARS = 1600                  # Twilio's limit for one (concatenated) SMS body
MAX_MEDIA_URLS = 10                    # Twilio's limit per MMS
MAX_TWIML_CHARS = 4000                 # Twilio's limit for the Twiml parameter
MAX_URL_CHARS = 2048
MAX_CONTENT_VARIABLES = 100            # template variables per message
MAX_CONTENT_VARIABLES_CHARS = 8000     # the ContentVariables JSON we send, as compact JSON
MAX_CONTENT_VARIABLE_CHARS = 1600      # one value (UTF-16 units), no more than a body
MIN_TIMEOUT, MAX_TIMEOUT = 5, 600

# Field patterns. Always applied with ``fullmatch`` (via :func:`matches`): ``re.match(...$)`` also accepts a
# trailing newline, which once let "+14155553333\n" past the opt-out check. ``[0-9]``, not ``\d``: ``\d`` would
# accept fullwidth and Arabic-Indic digits. The id alphabet also keeps out every character a Table key forbids.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
WHATSAPP_PREFIX = "whatsapp:"
WHATSAPP_ADDRESS = re.compile(r"whatsapp:\+[1-9][0-9]{1,14}")
CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
# Template variable names as Twilio's Content API writes them ({{1}}, {{first_name}}).
CONTENT_VARIABLE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")
VOICE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Characters XML 1.0 forbids (TwiML is XML): C0 controls but tab/LF/CR, U+FFFE/U+FFFF, surrogates.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Lone surrogates: JSON's "\ud800" escape makes them, but no UTF-8 request (Twilio, Storage) can carry them.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Control characters (C0, DEL, C1): never part of a URL (RFC 3986 has them percent-encoded). urlsplit drops some
# (tab, CR, LF) and keeps the rest, so "https://ex.com/a\x00.png" would reach Twilio as something else.
URL_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

COMMON_FIELDS = frozenset({"id", "to", "from", "send_at", "priority", "campaign"})
PRIORITIES = ("normal", "high")
CAMPAIGN_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SMS_FIELDS = COMMON_FIELDS | {"body", "media_urls", "messaging_service_sid", "content_sid", "content_variables"}
CALL_FIELDS = COMMON_FIELDS | {"say", "twiml", "url", "voice", "language", "timeout", "machine_detection",
                               "voicemail"}
CALL_CONTENT = ("say", "twiml", "url")


def matches(pattern: re.Pattern[str], value: str) -> bool:
    """Whether all of ``value`` (no trailing newline, no prefix) is one ``pattern``: the only way we validate."""
    return pattern.fullmatch(value) is not None


def is_whatsapp(address: str | None) -> bool:
    """Whether ``address`` is a WhatsApp channel address (``whatsapp:+E164``) rather than a phone number."""
    return bool(address) and matches(WHATSAPP_ADDRESS, address or "")


def utf16_length(text: str) -> int:
    """Length as Twilio counts a body: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class InvalidMessageError(ValueError):
    """A queue message that can never be sent as it is; ``field`` and ``rule`` say what is wrong."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    @property
    def reason(self) -> str:
        return f"{self.field}: {self.rule}"


@dataclass(frozen=True)
class OutboundMessage:
    """Fields every outbound message has. ``from_`` is None when the app's default sender applies."""

    id: str
    to: str
    from_: str | None
    send_at: datetime | None
    priority: str = "normal"       # high: submitted ahead of normal messages of the same sender (shared.pacing)
    campaign: str | None = None    # a tag: `ops sends cancel --campaign TAG` stops what has not been submitted

    kind: Kind = "sms"


@dataclass(frozen=True)
class SmsMessage(OutboundMessage):
    body: str | None = None
    media_urls: tuple[str, ...] = ()
    messaging_service_sid: str | None = None
    content_sid: str | None = None
    # (name, value) pairs sorted by name: hashable, and the producer's key order does not change the content hash.
    content_variables: tuple[tuple[str, str], ...] = ()
    kind: Kind = "sms"

    @property
    def is_whatsapp(self) -> bool:
        return is_whatsapp(self.to)

    def content_variables_json(self) -> str | None:
        """``ContentVariables`` as Twilio takes it (a JSON object of strings), or None without variables."""
        if not self.content_variables:
            return None
        return json.dumps(dict(self.content_variables), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class CallMessage(OutboundMessage):
    say: str | None = None
    twiml: str | None = None
    url: str | None = None
    voice: str | None = None
    language: str | None = None
    timeout: int | None = None
    machine_detection: bool = False
    voicemail: str | None = None  # said after the beep when a machine answers (needs machine_detection)
    kind: Kind = "call"


@dataclass(frozen=True)
class Decoded:
    """A queue message body turned into a JSON object, and how it arrived (to re-encode it the same way)."""

    document: dict[str, Any]
    was_base64: bool


# ---------------------------------------------------------------- decoding


def decode(raw: bytes | str) -> Decoded:
    """Queue body (raw JSON or base64 of JSON) → JSON object, or :class:`InvalidMessageError` (field ``message``)."""
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    if not data.strip():
        raise InvalidMessageError("message", "empty")
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidMessageError("message", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessageError("message", f"not valid UTF-8 (byte {exc.start})") from None
    text = text.strip().lstrip("\ufeff")
    was_base64 = False
    if not text.startswith("{"):
        try:  # line-wrapped base64 (the base64 tool, MIME) is still base64; words with spaces between are not
            if " " in text or "\t" in text:
                raise ValueError("plain text")
            inner = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidMessageError("message", "neither a JSON object nor base64-encoded JSON") from None
        try:
            text = inner.decode("utf-8").strip().lstrip("\ufeff")
        except UnicodeDecodeError as exc:
            raise InvalidMessageError("message", f"base64 content is not valid UTF-8 (byte {exc.start})") from None
        was_base64 = True
        if not text.startswith("{"):
            raise InvalidMessageError("message", "base64 content is not a JSON object")
    try:
        document = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        raise InvalidMessageError("message", str(exc)) from None
    except ValueError as exc:
        detail = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidMessageError("message", f"not valid JSON ({detail})") from None
    except RecursionError:
        raise InvalidMessageError("message", "JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidMessageError("message", "must be a JSON object")
    return Decoded(document, was_base64)


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse ``{"to": a, "to": b}``: parsers disagree on which wins, so a reader upstream may have seen the other."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKeyError(f"duplicate key {_field_name(key)}")
        document[key] = value
    return document


def _field_name(key: Any) -> str:
    """A field name safe to put in a reason or a log line (control characters and length made visible)."""
    text = str(key)
    return text if matches(re.compile(r"[A-Za-z0-9_]{1,40}"), text) else repr(text[:40])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def encode(document: Mapping[str, Any], *, as_base64: bool = False) -> str:
    """A message document as queue text (compact JSON, optionally base64-encoded). ASCII only: a Storage queue
    message travels inside XML, which cannot carry U+FFFE or control characters raw; ``\\u`` escapes can."""
    text = json.dumps(document, ensure_ascii=True, separators=(",", ":"))
    return base64.b64encode(text.encode("utf-8")).decode("ascii") if as_base64 else text


# ---------------------------------------------------------------- validation


def parse(kind: Kind, raw: bytes | str, default_id: str) -> tuple[OutboundMessage, Decoded]:
    """Decode and validate a queue body; ``default_id`` (the queue message id) applies when ``id`` is absent."""
    decoded = decode(raw)
    return validate(kind, decoded.document, default_id), decoded


def validate(kind: Kind, doc: Mapping[str, Any], default_id: str | None = None) -> OutboundMessage:
    """Check ``doc`` against the schema for ``kind`` and return the typed message."""
    if kind not in KINDS:
        raise InvalidMessageError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    allowed = SMS_FIELDS if kind == "sms" else CALL_FIELDS
    unknown = sorted(_field_name(k) for k in doc if k not in allowed)
    if unknown:
        raise InvalidMessageError(unknown[0], f"unknown field (allowed for {kind}: {', '.join(sorted(allowed))})")
    ident = doc.get("id")
    if ident is None:  # null means absent, as for every optional field
        ident = default_id
    if ident is None:
        raise InvalidMessageError("id", "required (no queue message id to default to)")
    ident = _string(doc, "id", ident)
    if not matches(ID_PATTERN, ident):
        raise InvalidMessageError("id", "must be 1-128 of [A-Za-z0-9._:-]")
    whatsapp_ok = kind == "sms"
    to = _address(doc, "to", required=True, whatsapp_ok=whatsapp_ok)
    assert to is not None
    from_ = _address(doc, "from", required=False, whatsapp_ok=whatsapp_ok)
    if from_ is not None and is_whatsapp(to) != is_whatsapp(from_):
        raise InvalidMessageError("from", "to and from must both be whatsapp: addresses or both phone numbers")
    send_at = _send_at(doc)
    priority = _optional_string(doc, "priority")
    if priority is None:  # null or absent; an empty string is a mistake, not "normal"
        priority = "normal"
    elif priority not in PRIORITIES:
        raise InvalidMessageError("priority", "must be high or normal (lower case)")
    campaign = _optional_string(doc, "campaign")
    if campaign is not None and not matches(CAMPAIGN_PATTERN, campaign):
        raise InvalidMessageError("campaign", "must be 1-64 of [A-Za-z0-9._:-]")
    message = (_validate_sms(doc, ident, to, from_, send_at) if kind == "sms"
               else _validate_call(doc, ident, to, from_, send_at))
    return dataclasses.replace(message, priority=priority, campaign=campaign)


def _validate_sms(doc: Mapping[str, Any], ident: str, to: str, from_: str | None,
                  send_at: datetime | None) -> SmsMessage:
    body = _optional_string(doc, "body")
    if body is not None and utf16_length(body) > MAX_BODY_CHARS:
        raise InvalidMessageError("body", f"{utf16_length(body)} UTF-16 units > {MAX_BODY_CHARS} (as Twilio counts)")
    media = doc.get("media_urls")
    media_urls: tuple[str, ...] = ()
    if media is not None:
        if not isinstance(media, list):
            raise InvalidMessageError("media_urls", "must be a list of https URLs")
        if len(media) > MAX_MEDIA_URLS:
            raise InvalidMessageError("media_urls", f"{len(media)} URLs > {MAX_MEDIA_URLS}")
        media_urls = tuple(_https_url(f"media_urls[{i}]", u) for i, u in enumerate(media))
    content_sid = _optional_string(doc, "content_sid")
    if content_sid is not None and not matches(CONTENT_SID, content_sid):
        raise InvalidMessageError("content_sid", "must be HX followed by 32 hex digits")
    variables = _content_variables(doc)
    if variables and content_sid is None:
        raise InvalidMessageError("content_variables", "only applies with content_sid")
    if content_sid is not None and (body or media_urls):
        raise InvalidMessageError("body" if body else "media_urls",
                                  "a template (content_sid) replaces body and media_urls: give one or the other")
    if not body and not media_urls and content_sid is None:
        raise InvalidMessageError("body", "body or media_urls is required (or a template: content_sid)")
    service = _optional_string(doc, "messaging_service_sid")
    if service is not None and not matches(MESSAGING_SERVICE_SID, service):
        raise InvalidMessageError("messaging_service_sid", "must be MG followed by 32 hex digits")
    if service is not None and from_ is not None:
        raise InvalidMessageError("from", "give from or messaging_service_sid, not both")
    return SmsMessage(id=ident, to=to, from_=from_, send_at=send_at, body=body or None, media_urls=media_urls,
                      messaging_service_sid=service, content_sid=content_sid, content_variables=variables)


def _content_variables(doc: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``content_variables``: a JSON object of template variable name → string value, size-limited."""
    value = doc.get("content_variables")
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidMessageError("content_variables", f"must be a JSON object of strings, not {_json_type(value)}")
    if len(value) > MAX_CONTENT_VARIABLES:
        raise InvalidMessageError("content_variables", f"{len(value)} variables > {MAX_CONTENT_VARIABLES}")
    pairs: list[tuple[str, str]] = []
    for name, item in value.items():
        if not matches(CONTENT_VARIABLE_NAME, name):
            raise InvalidMessageError("content_variables",
                                      f"variable name {_field_name(name)} must be 1-64 of [A-Za-z0-9_]")
        label = f"content_variables.{name}"
        if not isinstance(item, str):
            raise InvalidMessageError(label, f"must be a string, not {_json_type(item)}")
        _unicode(label, item)
        if utf16_length(item) > MAX_CONTENT_VARIABLE_CHARS:
            raise InvalidMessageError(label, f"{utf16_length(item)} UTF-16 units > {MAX_CONTENT_VARIABLE_CHARS}")
        pairs.append((name, item))
    size = len(json.dumps(dict(pairs), ensure_ascii=False, separators=(",", ":")))
    if size > MAX_CONTENT_VARIABLES_CHARS:
        raise InvalidMessageError("content_variables", f"{size} chars of JSON > {MAX_CONTENT_VARIABLES_CHARS}")
    return tuple(sorted(pairs))


def _validate_call(doc: Mapping[str, Any], ident: str, to: str, from_: str | None,
                   send_at: datetime | None) -> CallMessage:
    given = [name for name in CALL_CONTENT if doc.get(name) is not None]
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        raise InvalidMessageError(given[0] if given else "say", f"exactly one of say, twiml, url (got {got})")
    say = _optional_string(doc, "say")
    if say is not None and (not say.strip() or len(say) > MAX_TWIML_CHARS):
        raise InvalidMessageError("say", f"must be 1-{MAX_TWIML_CHARS} chars of text")
    if say is not None:
        _xml_text("say", say)
    twiml = _optional_string(doc, "twiml")
    if twiml is not None:
        if len(twiml) > MAX_TWIML_CHARS:
            raise InvalidMessageError("twiml", f"{len(twiml)} chars > {MAX_TWIML_CHARS}")
        _xml_text("twiml", twiml)
        check_twiml("twiml", twiml)
    url = doc.get("url")
    url = _https_url("url", url) if url is not None else None
    voice = _optional_string(doc, "voice")
    if voice is not None and not matches(VOICE, voice):
        raise InvalidMessageError("voice", "must be a voice name such as alice or Polly.Joanna")
    language = _optional_string(doc, "language")
    if language is not None and not matches(LANGUAGE, language):
        raise InvalidMessageError("language", "must be a language tag such as en-US")
    if (voice or language) and say is None and doc.get("voicemail") is None:
        raise InvalidMessageError("voice" if voice else "language", "only applies with say or voicemail")
    timeout = doc.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            raise InvalidMessageError("timeout", "must be an integer number of seconds")
        if not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
            raise InvalidMessageError("timeout", f"{timeout} s is outside {MIN_TIMEOUT}-{MAX_TIMEOUT} s")
    detection = doc.get("machine_detection")
    if detection is None:
        detection = False
    if not isinstance(detection, bool):
        raise InvalidMessageError("machine_detection", "must be true or false")
    voicemail = _optional_string(doc, "voicemail")
    if voicemail is not None:
        if not voicemail.strip() or len(voicemail) > MAX_TWIML_CHARS:
            raise InvalidMessageError("voicemail", f"must be 1-{MAX_TWIML_CHARS} chars of text")
        _xml_text("voicemail", voicemail)
        if not detection:
            raise InvalidMessageError("voicemail", "only applies with machine_detection: true")
    message = CallMessage(id=ident, to=to, from_=from_, send_at=send_at, say=say, twiml=twiml, url=url,
                          voice=voice, language=language, timeout=timeout, machine_detection=detection,
                          voicemail=voicemail)
    if say is not None:
        built = say_twiml(message)
        if len(built) > MAX_TWIML_CHARS:
            raise InvalidMessageError("say", f"TwiML built from it is over {MAX_TWIML_CHARS} chars")
        check_twiml("say", built)  # every TwiML we send must parse
    if voicemail is not None:
        built = voicemail_twiml(message)
        if len(built) > MAX_TWIML_CHARS:
            raise InvalidMessageError("voicemail", f"TwiML built from it is over {MAX_TWIML_CHARS} chars")
        check_twiml("voicemail", built)
    return message


# Not content: the id is the key the hash is stored under; send_at, priority and campaign only say when and how.
_NOT_CONTENT = frozenset({"id", "send_at", "priority", "campaign"})
# Fields added after hashes were first stored: hashed only when set, so a message that does not use them keeps
# the hash its ledger row already holds (no false id_conflict for messages in flight across an upgrade).
_HASHED_WHEN_SET = frozenset({"content_sid", "content_variables", "voicemail"})


def content_hash(message: OutboundMessage) -> str:
    """sha256 over a canonical JSON of what the message sends (kind, to, from, body, media, content template and
    its variables, say/twiml/url, voice, language, timeout, machine_detection, voicemail, messaging service). Two
    deliveries of one id must have the same hash; ``from`` is the message's own (None = the app's default), so
    changing a setting is not a conflict."""
    content = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)
               if f.name not in _NOT_CONTENT and not (f.name in _HASHED_WHEN_SET and not getattr(message, f.name))}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def say_twiml(message: CallMessage) -> str:
    """``<Response><Say voice=… language=…>text</Say></Response>`` built with twilio's VoiceResponse."""
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    attrs = {k: v for k, v in (("voice", message.voice), ("language", message.language)) if v}
    response.say(message.say, **attrs)
    return str(response.to_xml(xml_declaration=False))


def voicemail_twiml(message: CallMessage) -> str:
    """What a machine hears after its beep: the voicemail text (in the call's voice/language), then hang up."""
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    attrs = {k: v for k, v in (("voice", message.voice), ("language", message.language)) if v}
    response.say(message.voicemail, **attrs)
    response.hangup()
    return str(response.to_xml(xml_declaration=False))


def check_twiml(name: str, twiml: str) -> None:
    """``twiml`` parses as Twilio will receive it (UTF-8 bytes), has no DTD, and is a ``<Response>``."""
    if "<!DOCTYPE" in twiml.upper() or "<!ENTITY" in twiml.upper():
        raise InvalidMessageError(name, "must not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(twiml.encode("utf-8"))
    except ET.ParseError as exc:
        raise InvalidMessageError(name, f"not well-formed XML ({exc})") from None
    if root.tag != "Response":
        raise InvalidMessageError(name, f"root element must be <Response>, not <{root.tag}>")


def _xml_text(name: str, value: str) -> None:
    """Refuse (not drop) characters XML 1.0 forbids: silently changing what a call says is worse than a clear
    dead letter the producer can fix."""
    bad = XML_FORBIDDEN.search(value)
    if bad:
        raise InvalidMessageError(name, f"contains U+{ord(bad.group()):04X}, a character XML 1.0 (TwiML) forbids")


def _string(doc: Mapping[str, Any], name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(name, f"must be a string, not {_json_type(value)}")
    _unicode(name, value)
    return value


def _unicode(name: str, value: str) -> None:
    bad = LONE_SURROGATE.search(value)
    if bad:
        raise InvalidMessageError(name, f"contains a lone surrogate U+{ord(bad.group()):04X} (not valid Unicode)")


def _optional_string(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return None if value is None else _string(doc, name, value)


def _address(doc: Mapping[str, Any], name: str, *, required: bool, whatsapp_ok: bool) -> str | None:
    """An E.164 number, or (SMS only) a ``whatsapp:+E164`` address; full match, case as Twilio writes it."""
    value = doc.get(name)
    if value is None:
        if required:
            raise InvalidMessageError(name, "required")
        return None
    value = _string(doc, name, value)
    if matches(E164, value):
        return _possible(name, value)
    if value[:len(WHATSAPP_PREFIX)].lower() == WHATSAPP_PREFIX:
        if not whatsapp_ok:
            raise InvalidMessageError(name, "calls cannot be placed to or from a whatsapp: address")
        if matches(WHATSAPP_ADDRESS, value):
            return _possible(name, value)
        raise InvalidMessageError(name, "not a whatsapp:+E.164 address")
    raise InvalidMessageError(name, "not an E.164 number")


def _possible(name: str, address: str) -> str:
    """A recipient must be a number that can exist (``shared.destinations``: length for its country code, by
    libphonenumber's metadata); whether it is in service stays Twilio's to say. The sender is our own number."""
    if name == "to":
        from .destinations import check_possible

        check_possible(name, address)
    return address


def _https_url(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(name, f"must be a string, not {_json_type(value)}")
    _unicode(name, value)
    if len(value) > MAX_URL_CHARS:
        raise InvalidMessageError(name, f"URL of {len(value)} chars > {MAX_URL_CHARS}")
    control = URL_CONTROL.search(value)
    if control:
        raise InvalidMessageError(name, f"not an https URL: contains control character U+{ord(control.group()):04X}")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise InvalidMessageError(name, "not an https URL") from None
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value):
        raise InvalidMessageError(name, "not an https URL")
    return value


def _send_at(doc: Mapping[str, Any]) -> datetime | None:
    value = doc.get("send_at")
    if value is None:
        return None
    value = _string(doc, "send_at", value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMessageError("send_at", "not an ISO-8601 time") from None
    if when.tzinfo is None or when.utcoffset() != timezone.utc.utcoffset(None):
        raise InvalidMessageError("send_at", "must be UTC (end with Z or +00:00)")
    return when.astimezone(timezone.utc)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
