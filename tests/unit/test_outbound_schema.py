"""The outbound message schema: what is accepted, and rejections that name the field and the rule."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest

from shared import outbound
from shared.outbound import CallMessage, InvalidMessageError, SmsMessage, decode, encode, parse, validate

TO = "+14155550100"


def reason(kind: str, doc: dict) -> str:
    with pytest.raises(InvalidMessageError) as info:
        validate(kind, doc, "qid")  # type: ignore[arg-type]
    return info.value.reason


def test_minimal_sms_takes_the_queue_message_id() -> None:
    message = validate("sms", {"to": TO, "body": "hi"}, "queue-id-1")
    assert isinstance(message, SmsMessage) and message.id == "queue-id-1" and message.from_ is None


def test_full_sms_is_typed() -> None:
    message = validate("sms", {"id": "a.b:c-d_1", "to": TO, "from": "+15005550006", "body": "x",
                               "media_urls": ["https://e.com/1.png"], "send_at": "2030-01-01T09:00:00Z"})
    assert message.send_at == datetime(2030, 1, 1, 9, tzinfo=timezone.utc)
    assert message.media_urls == ("https://e.com/1.png",)


def test_priority_and_campaign_are_optional_and_null_means_absent() -> None:
    plain = validate("sms", {"to": TO, "body": "x", "priority": None, "campaign": None}, "q1")
    assert (plain.priority, plain.campaign) == ("normal", None)
    tagged = validate("sms", {"to": TO, "body": "x", "priority": "high", "campaign": "spring-2027.a:1"}, "q1")
    assert (tagged.priority, tagged.campaign) == ("high", "spring-2027.a:1")
    assert validate("call", {"to": TO, "say": "x", "campaign": "c" * 64}, "q1").campaign == "c" * 64


def test_media_only_sms_is_valid() -> None:
    assert validate("sms", {"to": TO, "media_urls": ["https://e.com/x.jpg"]}, "q").body is None


@pytest.mark.parametrize("doc,expected", [
    ({"to": "4155550100", "body": "x"}, "to: not an E.164 number"),
    ({"to": "+0155550100", "body": "x"}, "to: not an E.164 number"),
    ({"to": 14155550100, "body": "x"}, "to: must be a string, not number"),
    ({"body": "x"}, "to: required"),
    ({"to": TO, "body": "x" * 1700}, "body: 1700 UTF-16 units > 1600"),
    ({"to": TO}, "body: body or media_urls is required"),
    ({"to": TO, "body": ""}, "body: body or media_urls is required"),
    ({"to": TO, "media_urls": ["https://e.com"] * 11}, "media_urls: 11 URLs > 10"),
    ({"to": TO, "media_urls": ["http://e.com/a"]}, "media_urls[0]: not an https URL"),
    ({"to": TO, "media_urls": "https://e.com/a"}, "media_urls: must be a list of https URLs"),
    ({"to": TO, "body": "x", "boddy": "y"}, "boddy: unknown field"),
    ({"to": TO, "body": "x", "id": "has space"}, "id: must be 1-128 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "id": "x" * 129}, "id: must be 1-128 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "send_at": "tomorrow"}, "send_at: not an ISO-8601 time"),
    ({"to": TO, "body": "x", "send_at": "2030-01-01T09:00:00"}, "send_at: must be UTC (end with Z or +00:00)"),
    ({"to": TO, "body": "x", "send_at": "2030-01-01T09:00:00+02:00"}, "send_at: must be UTC (end with Z or +00:00)"),
    ({"to": TO, "body": "x", "messaging_service_sid": "MG123"},
     "messaging_service_sid: must be MG followed by 32 hex digits"),
    ({"to": TO, "body": "x", "from": "+15005550006", "messaging_service_sid": "MG" + "a" * 32},
     "from: give from or messaging_service_sid, not both"),
    ({"to": TO, "body": "x", "priority": "HIGH"}, "priority: must be high or normal (lower case)"),
    ({"to": TO, "body": "x", "priority": "urgent"}, "priority: must be high or normal"),
    ({"to": TO, "body": "x", "priority": ""}, "priority: must be high or normal"),
    ({"to": TO, "body": "x", "priority": "high\n"}, "priority: must be high or normal"),
    ({"to": TO, "body": "x", "priority": 1}, "priority: must be a string, not number"),
    ({"to": TO, "body": "x", "priority": ["high"]}, "priority: must be a string"),
    ({"to": TO, "body": "x", "campaign": ""}, "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "campaign": "spring sale"}, "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "campaign": "c" * 65}, "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "campaign": "spring\n"}, "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "campaign": "spr\u0131ng"}, "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "campaign": "\u0661\u0662"}, "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "campaign": "a/b"}, "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
    ({"to": TO, "body": "x", "campaign": {"tag": "x"}}, "campaign: must be a string"),
])
def test_sms_rejections_name_field_and_rule(doc: dict, expected: str) -> None:
    assert reason("sms", doc).startswith(expected)


@pytest.mark.parametrize("doc,expected", [
    ({"to": TO}, "say: exactly one of say, twiml, url (got none)"),
    ({"to": TO, "twiml": "<Response/>", "url": "https://e.com"}, "twiml: exactly one of say, twiml, url (got twiml, url)"),
    ({"to": TO, "twiml": "<Response>"}, "twiml: not well-formed XML"),
    ({"to": TO, "twiml": "<Foo/>"}, "twiml: root element must be <Response>, not <Foo>"),
    ({"to": TO, "twiml": "<Response>" + "a" * 4000 + "</Response>"}, "twiml: 4021 chars > 4000"),
    ({"to": TO, "url": "ftp://e.com"}, "url: not an https URL"),
    ({"to": TO, "say": "x", "timeout": 2}, "timeout: 2 s is outside 5-600 s"),
    ({"to": TO, "say": "x", "timeout": "30"}, "timeout: must be an integer number of seconds"),
    ({"to": TO, "say": "x", "timeout": True}, "timeout: must be an integer number of seconds"),
    ({"to": TO, "say": "x", "machine_detection": "yes"}, "machine_detection: must be true or false"),
    ({"to": TO, "url": "https://e.com", "voice": "alice"}, "voice: only applies with say"),
    ({"to": TO, "say": "x", "language": "english!"}, "language: must be a language tag"),
    ({"to": TO, "say": "x", "body": "y"}, "body: unknown field"),
    ({"to": TO, "say": "<" * 1500}, "say: TwiML built from it is over 4000 chars"),
])
def test_call_rejections_name_field_and_rule(doc: dict, expected: str) -> None:
    assert reason("call", doc).startswith(expected)


def test_call_say_builds_twiml_with_voice_and_language_escaped() -> None:
    message = validate("call", {"to": TO, "say": "Tom & <Jerry>", "voice": "Polly.Joanna", "language": "en-US"}, "q")
    assert isinstance(message, CallMessage)
    assert outbound.say_twiml(message) == ('<Response><Say language="en-US" voice="Polly.Joanna">'
                                           'Tom &amp; &lt;Jerry&gt;</Say></Response>')


def test_raw_and_base64_json_decode_the_same() -> None:
    doc = {"to": TO, "body": "héllo"}
    raw = encode(doc)
    assert decode(raw).document == doc and not decode(raw).was_base64
    b64 = encode(doc, as_base64=True)
    assert decode(b64).document == doc and decode(b64).was_base64
    assert json.loads(base64.b64decode(b64)) == doc


@pytest.mark.parametrize("raw,expected", [
    (b"", "message: empty"),
    (b"   ", "message: empty"),
    (b"\xff\xfe{}", "message: not valid UTF-8"),
    (b"{not json", "message: not valid JSON"),
    (b"[1, 2]", "message: neither a JSON object nor base64-encoded JSON"),
    (b"bm90IGpzb24=", "message: base64 content is not a JSON object"),
    (b"!!!!", "message: neither a JSON object nor base64-encoded JSON"),
    (b'{"to": NaN}', "message: not valid JSON"),
    (b"x" * (64 * 1024 + 1), "message: 65537 bytes > 65536"),
])
def test_undecodable_bodies_are_rejected(raw: bytes, expected: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        parse("sms", raw, "q")
    assert info.value.reason.startswith(expected)


def test_content_hash_ignores_id_send_at_and_nulls_but_sees_every_content_field() -> None:
    from shared.outbound import content_hash, validate

    base = content_hash(validate("sms", {"to": TO, "body": "hi"}, "q1"))
    same = validate("sms", {"id": "other", "to": TO, "body": "hi", "from": None, "media_urls": None,
                            "send_at": "2020-01-01T00:00:00Z"}, "q2")
    assert content_hash(same) == base and len(base) == 64
    changed = [{"to": "+14155550199", "body": "hi"}, {"to": TO, "body": "hi "}, {"to": TO, "body": "hi", "from": TO},
               {"to": TO, "body": "hi", "media_urls": ["https://ex.com/a"]},
               {"to": TO, "body": "hi", "messaging_service_sid": "MG" + "a" * 32}]
    assert len({content_hash(validate("sms", doc, "q")) for doc in changed} | {base}) == len(changed) + 1
    assert content_hash(validate("call", {"to": TO, "say": "hi"}, "q")) != content_hash(
        validate("call", {"to": TO, "url": "https://ex.com/hi"}, "q"))


def test_body_limit_counts_utf16_units_like_twilio() -> None:
    from shared.outbound import InvalidMessageError, utf16_length, validate

    assert utf16_length("\U0001F600" * 800) == 1600 and utf16_length("é" * 1600) == 1600
    validate("sms", {"to": TO, "body": "\U0001F600" * 800}, "q")
    with pytest.raises(InvalidMessageError, match="body: 1602 UTF-16 units > 1600"):
        validate("sms", {"to": TO, "body": "\U0001F600" * 801}, "q")
