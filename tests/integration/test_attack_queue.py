"""Attacks on the outbound queues, built from DESIGN's message schema: what a hostile or careless producer can put on
``outbound-sms`` / ``outbound-calls``. Every case runs through the real sender against Azurite and the Twilio fake,
and ends one of two ways: sent exactly once (only when the contract says it is valid), or dead-lettered at once,
on the first try, with a named reason. Nothing is retried for content, nothing vanishes, nothing raises.
"""

from __future__ import annotations

import base64
import codecs
import json
import threading
import uuid
from typing import Any

import pytest

from shared import ledger, optouts, outbound, sender
from shared.sender import RetryLaterError
from tests.outbound_helpers import call_queue, poison, row, sms_queue

TO = "+14155550100"
FROM = "+14155550111"
EMOJI = "\U0001F600"  # 2 UTF-16 units
INVALID = "invalid_message"


def _raw(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False)


def sms(**fields: Any) -> dict[str, Any]:
    return {"to": TO, "body": "hello", **fields}


def call(**fields: Any) -> dict[str, Any]:
    return {"to": TO, "say": "hello", **fields}


def _b64(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


# (kind, queue body (dict = JSON of it, str/bytes = as is), expected: "sent" or (code, reason fragment))
CASES: list[tuple[str, str, Any, Any]] = [
    # ---- encodings of the whole message
    ("plain JSON", "sms", sms(), "sent"),
    ("base64 JSON", "sms", _b64(_raw(sms())), "sent"),
    ("base64 wrapped at 76 columns like the base64 tool", "sms",
     "\n".join(_b64(_raw(sms(body="x" * 200)))[i:i + 76] for i in range(0, 400, 76)), "sent"),
    ("UTF-8 BOM before JSON", "sms", "\ufeff" + _raw(sms()), "sent"),
    ("base64 of BOM + JSON", "sms", _b64("\ufeff" + _raw(sms())), "sent"),
    ("UTF-16-LE bytes", "sms", codecs.BOM_UTF16_LE + _raw(sms()).encode("utf-16-le"), (INVALID, "message: not valid UTF-8")),
    ("UTF-16-BE bytes", "sms", _raw(sms()).encode("utf-16-be"), (INVALID, "message:")),
    ("overlong UTF-8 for '{'", "sms", b"\xc1\xbb" + _raw(sms()).encode()[1:], (INVALID, "message: not valid UTF-8")),
    ("invalid UTF-8 inside body", "sms", _raw(sms(body="AB")).encode().replace(b"AB", b"A\xffB"),
     (INVALID, "message: not valid UTF-8")),
    ("CESU-8 surrogate bytes", "sms", _raw(sms(body="AB")).encode().replace(b"AB", b"\xed\xa0\x80"),
     (INVALID, "message: not valid UTF-8")),
    ("URL-safe base64 alphabet", "sms", _b64(_raw(sms(body="???>>>"))).replace("+", "-").replace("/", "_"),
     (INVALID, "message:")),
    ("base64 without padding", "sms", _b64(_raw(sms(body="abcd"))).rstrip("="), (INVALID, "message:")),
    ("double base64", "sms", _b64(_b64(_raw(sms()))), (INVALID, "message: base64 content is not a JSON object")),
    ("base64 of invalid UTF-8", "sms", _b64(b'{"to":"\xff"}'), (INVALID, "message: base64 content is not valid UTF-8")),
    ("empty body", "sms", "", (INVALID, "message: empty")),
    ("whitespace only", "sms", " \n\t ", (INVALID, "message: empty")),
    ("JSON array", "sms", "[" + _raw(sms()) + "]", (INVALID, "message:")),
    ("JSON string", "sms", json.dumps(_raw(sms())), (INVALID, "message:")),
    ("NaN constant", "call", _raw(call()).replace('"say"', '"timeout":NaN,"say"'), (INVALID, "message: not valid JSON")),
    ("trailing garbage after object", "sms", _raw(sms()) + "x", (INVALID, "message: not valid JSON")),
    ("deep nesting", "sms", '{"to":' + "[" * 5000 + "]" * 5000 + "}", (INVALID, "message:")),
    ("message over 64 KiB", "sms", _raw(sms(body="x" * (64 * 1024))), (INVALID, "message:")),
    # ---- duplicate keys: parsers disagree on which wins
    ("duplicate to", "sms", '{"to":"+14155550100","to":"+14155550199","body":"x"}',
     (INVALID, "message: duplicate key to")),
    ("duplicate id", "sms", '{"id":"a","id":"b","to":"+14155550100","body":"x"}', (INVALID, "duplicate key id")),
    # ---- trailing newline and other whitespace on patterned fields
    ("to with trailing newline", "sms", sms(to=TO + "\n"), (INVALID, "to: not an E.164 number")),
    ("to with trailing CRLF", "sms", sms(to=TO + "\r\n"), (INVALID, "to: not an E.164 number")),
    ("to with leading space", "sms", sms(to=" " + TO), (INVALID, "to: not an E.164 number")),
    ("from with trailing newline", "sms", sms(**{"from": FROM + "\n"}), (INVALID, "from: not an E.164 number")),
    ("id with trailing newline", "sms", sms(id="order-1\n"), (INVALID, "id: must be 1-128")),
    ("voice with trailing newline", "call", call(voice="alice\n"), (INVALID, "voice:")),
    ("language with trailing newline", "call", call(language="en-US\n"), (INVALID, "language:")),
    ("messaging service with trailing newline", "sms", sms(messaging_service_sid="MG" + "a" * 32 + "\n"),
     (INVALID, "messaging_service_sid:")),
    # ---- non-E.164 numbers, lookalike digits
    ("fullwidth digits", "sms", sms(to="+１４１５５５５０１００"), (INVALID, "to: not an E.164 number")),
    ("Arabic-Indic digits", "sms", sms(to="+١٤١٥٥٥٥٠١٠٠"), (INVALID, "to: not an E.164 number")),
    ("superscript digit", "sms", sms(to="+1415555010²"), (INVALID, "to: not an E.164 number")),
    ("fullwidth plus", "sms", sms(to="＋14155550100"), (INVALID, "to: not an E.164 number")),
    ("no plus", "sms", sms(to="14155550100"), (INVALID, "to: not an E.164 number")),
    ("leading zero country code", "sms", sms(to="+04155550100"), (INVALID, "to: not an E.164 number")),
    ("16 digits", "sms", sms(to="+1" + "2" * 15), (INVALID, "to: not an E.164 number")),
    ("dashes", "sms", sms(to="+1-415-555-0100"), (INVALID, "to: not an E.164 number")),
    ("zero-width space inside number", "sms", sms(to="+1415\u200b5550100"), (INVALID, "to: not an E.164 number")),
    ("RTL override before number", "sms", sms(to="\u202e" + TO), (INVALID, "to: not an E.164 number")),
    ("15 digits is the E.164 maximum", "sms", sms(to="+49" + "2" * 13), "sent"),
    ("local-only number without area code", "sms", sms(to="+15550100"),
     (INVALID, "to: not a possible phone number: 7 digits after +1 is a local-only number in US")),
    ("unassigned country code", "sms", sms(to="+999123456789"),
     (INVALID, "to: not a possible phone number: it starts with no country code")),
    ("whatsapp number too short", "sms", sms(to="whatsapp:+4420"),
     (INVALID, "to: not a possible phone number: 2 digits after +44 is too short for GB")),
    ("15 digits where +1 has 10", "sms", sms(to="+1" + "2" * 14),
     (INVALID, "to: not a possible phone number: 14 digits after +1 is too long for US")),
    # ---- type confusion
    ("to as number", "sms", sms(to=14155550100), (INVALID, "to: must be a string, not number")),
    ("to as array", "sms", sms(to=[TO]), (INVALID, "to: must be a string, not array")),
    ("to as object", "sms", sms(to={"n": TO}), (INVALID, "to: must be a string, not object")),
    ("body as number", "sms", sms(body=5), (INVALID, "body: must be a string, not number")),
    ("body as boolean", "sms", sms(body=True), (INVALID, "body: must be a string, not boolean")),
    ("id as number", "sms", sms(id=12), (INVALID, "id: must be a string, not number")),
    ("timeout as string", "call", call(timeout="30"), (INVALID, "timeout: must be an integer")),
    ("timeout as float", "call", call(timeout=30.5), (INVALID, "timeout: must be an integer")),
    ("timeout as boolean", "call", call(timeout=True), (INVALID, "timeout: must be an integer")),
    ("machine_detection as string", "call", call(machine_detection="true"), (INVALID, "machine_detection:")),
    ("machine_detection as 1", "call", call(machine_detection=1), (INVALID, "machine_detection:")),
    ("media_urls as string", "sms", sms(media_urls="https://ex.com/a.png"), (INVALID, "media_urls: must be a list")),
    ("media_urls with a number", "sms", sms(media_urls=[1]), (INVALID, "media_urls[0]: must be a string")),
    ("send_at as number", "sms", sms(send_at=1700000000), (INVALID, "send_at: must be a string")),
    ("unknown field", "sms", sms(boddy="x"), (INVALID, "boddy: unknown field")),
    ("call field on the SMS queue", "sms", sms(say="hi"), (INVALID, "say: unknown field")),
    ("unknown field with a newline in its name", "sms", sms(**{"x\ninjected": 1}), (INVALID, "'x\\ninjected'")),
    # ---- null is absent
    ("id null takes the queue message id", "sms", sms(id=None), "sent"),
    ("from null takes the default sender", "sms", sms(**{"from": None}), "sent"),
    ("media_urls null", "sms", sms(media_urls=None), "sent"),
    ("send_at null", "sms", sms(send_at=None), "sent"),
    ("voice and language null", "call", call(voice=None, language=None, timeout=None), "sent"),
    ("to null is missing", "sms", sms(to=None), (INVALID, "to: required")),
    # ---- ids Azure Tables cannot store, and the id alphabet
    ("id with slash", "sms", sms(id="a/b"), (INVALID, "id: must be 1-128 of [A-Za-z0-9._:-]")),
    ("id with backslash", "sms", sms(id="a\\b"), (INVALID, "id: must be 1-128")),
    ("id with hash", "sms", sms(id="a#b"), (INVALID, "id: must be 1-128")),
    ("id with question mark", "sms", sms(id="a?b"), (INVALID, "id: must be 1-128")),
    ("id with NUL", "sms", sms(id="a\x00b"), (INVALID, "id: must be 1-128")),
    ("id with U+001F", "sms", sms(id="a\x1fb"), (INVALID, "id: must be 1-128")),
    ("id with DEL", "sms", sms(id="a\x7fb"), (INVALID, "id: must be 1-128")),
    ("id with U+0085", "sms", sms(id="a\x85b"), (INVALID, "id: must be 1-128")),
    ("id with U+009F", "sms", sms(id="a\x9fb"), (INVALID, "id: must be 1-128")),
    ("id with a space", "sms", sms(id="a b"), (INVALID, "id: must be 1-128")),
    ("id empty", "sms", sms(id=""), (INVALID, "id: must be 1-128")),
    ("id of 129 chars", "sms", sms(id="i" * 129), (INVALID, "id: must be 1-128")),
    ("id of 128 chars", "sms", sms(id="i" * 127 + "Z"), "sent"),
    ("id with every allowed punctuation", "sms", sms(id="a.b_c:d-e"), "sent"),
    # ---- body size, counted as Twilio counts (UTF-16 units)
    ("body of 1600 ASCII", "sms", sms(body="a" * 1600), "sent"),
    ("body of 1601 ASCII", "sms", sms(body="a" * 1601), (INVALID, "body: 1601 UTF-16 units > 1600")),
    ("body of 800 emoji", "sms", sms(body=EMOJI * 800), "sent"),
    ("body of 801 emoji", "sms", sms(body=EMOJI * 801), (INVALID, "body: 1602 UTF-16 units > 1600")),
    ("body of 1600 emoji (1600 code points)", "sms", sms(body=EMOJI * 1600), (INVALID, "body: 3200 UTF-16 units")),
    ("body with lone surrogate", "sms", '{"to":"+14155550100","body":"a\\ud800b"}',
     (INVALID, "body: contains a lone surrogate U+D800")),
    ("body with bidi overrides and zero-width chars", "sms", sms(body="\u202eabc\u202c\u200d\u2066x\u2069"), "sent"),
    ("body with control characters", "sms", sms(body="tab\tnl\ncr\r bell\x07"), "sent"),
    ("body empty and no media", "sms", sms(body=""), (INVALID, "body: body or media_urls is required")),
    # ---- media URLs
    ("10 media URLs", "sms", sms(media_urls=[f"https://ex.com/{i}.png" for i in range(10)]), "sent"),
    ("11 media URLs", "sms", sms(media_urls=[f"https://ex.com/{i}.png" for i in range(11)]),
     (INVALID, "media_urls: 11 URLs > 10")),
    ("media over http", "sms", sms(media_urls=["http://ex.com/a.png"]), (INVALID, "media_urls[0]: not an https URL")),
    ("media javascript URL", "sms", sms(media_urls=["javascript:alert(1)"]), (INVALID, "media_urls[0]: not an https")),
    ("media with space", "sms", sms(media_urls=["https://ex.com/a b.png"]), (INVALID, "media_urls[0]: not an https")),
    ("media with newline", "sms", sms(media_urls=["https://ex.com/a.png\n"]), (INVALID, "media_urls[0]: not an https")),
    ("media without host", "sms", sms(media_urls=["https:///a.png"]), (INVALID, "media_urls[0]: not an https URL")),
    ("media scheme-relative", "sms", sms(media_urls=["//ex.com/a.png"]), (INVALID, "media_urls[0]: not an https")),
    ("media with userinfo is still https", "sms", sms(media_urls=["https://user:pw@ex.com/a.png"]), "sent"),
    ("media IDN host", "sms", sms(media_urls=["https://bücher.example/a.png"]), "sent"),
    ("media URL of 2049 chars", "sms", sms(media_urls=["https://ex.com/" + "a" * 2034]), (INVALID, "URL of 2049")),
    # ---- control characters anywhere in a URL (issue 27, 7): refused, never sent to Twilio
    ("media with NUL", "sms", sms(media_urls=["https://ex.com/a\x00.png"]),
     (INVALID, "media_urls[0]: not an https URL: contains control character U+0000")),
    ("media with NUL in the host", "sms", sms(media_urls=["https://ex.com\x00.evil/a.png"]),
     (INVALID, "media_urls[0]: not an https URL: contains control character U+0000")),
    ("media with BEL", "sms", sms(media_urls=["https://ex.com/a.png?\x07"]), (INVALID, "control character U+0007")),
    ("media with ESC", "sms", sms(media_urls=["https://ex.com/\x1b[2J.png"]), (INVALID, "control character U+001B")),
    ("media with DEL", "sms", sms(media_urls=["https://ex.com/a\x7f.png"]), (INVALID, "control character U+007F")),
    ("media with C1 CSI", "sms", sms(media_urls=["https://ex.com/a\x9b.png"]), (INVALID, "control character U+009B")),
    ("second media with NUL", "sms", sms(media_urls=["https://ex.com/a.png", "https://ex.com/b\x00.png"]),
     (INVALID, "media_urls[1]: not an https URL: contains control character U+0000")),
    # ---- calls: say / twiml / url
    ("say with XML markup is escaped, not injected", "call", call(say='</Say><Dial>+19005550100</Dial><Say>'), "sent"),
    ("say with NUL", "call", call(say="a\x00b"), (INVALID, "say: contains U+0000, a character XML 1.0")),
    ("say with BEL", "call", call(say="ring\x07"), (INVALID, "say: contains U+0007")),
    ("say with vertical tab", "call", call(say="a\x0bb"), (INVALID, "say: contains U+000B")),
    ("say with U+FFFE", "call", call(say="a\ufffeb"), (INVALID, "say: contains U+FFFE")),
    ("say with U+FFFF", "call", call(say="a\uffffb"), (INVALID, "say: contains U+FFFF")),
    ("say with lone surrogate", "call", '{"to":"+14155550100","say":"a\\udc00"}', (INVALID, "say: contains a lone")),
    ("say with tab and newline", "call", call(say="line one\n\tline two"), "sent"),
    ("say with bidi override", "call", call(say="\u202eolleh"), "sent"),
    ("say only whitespace", "call", call(say=" \n "), (INVALID, "say: must be 1-4000")),
    ("say of 4001 chars", "call", call(say="a" * 4001), (INVALID, "say: must be 1-4000")),
    ("say whose TwiML exceeds 4000", "call", call(say="&" * 3900), (INVALID, "say: TwiML built from it is over 4000")),
    ("twiml valid", "call", {"to": TO, "twiml": "<Response><Say>hi</Say></Response>"}, "sent"),
    ("twiml with DOCTYPE", "call",
     {"to": TO, "twiml": '<!DOCTYPE r [<!ENTITY a "aaaa">]><Response><Say>&a;</Say></Response>'},
     (INVALID, "twiml: must not declare a DOCTYPE")),
    ("twiml with lowercase doctype", "call", {"to": TO, "twiml": "<!doctype Response><Response/>"},
     (INVALID, "twiml: must not declare a DOCTYPE")),
    ("twiml with undefined entity", "call", {"to": TO, "twiml": "<Response><Say>&xxe;</Say></Response>"},
     (INVALID, "twiml: not well-formed XML")),
    ("twiml with NUL", "call", {"to": TO, "twiml": "<Response><Say>a\x00</Say></Response>"},
     (INVALID, "twiml: contains U+0000")),
    ("twiml with char ref to NUL", "call", {"to": TO, "twiml": "<Response><Say>&#0;</Say></Response>"},
     (INVALID, "twiml: not well-formed XML")),
    ("twiml with char ref to BEL", "call", {"to": TO, "twiml": "<Response><Say>&#x7;</Say></Response>"},
     (INVALID, "twiml: not well-formed XML")),
    ("twiml declaring UTF-16", "call",
     {"to": TO, "twiml": '<?xml version="1.0" encoding="UTF-16"?><Response/>'}, (INVALID, "twiml: not well-formed")),
    ("twiml root not Response", "call", {"to": TO, "twiml": "<Dial>+19005550100</Dial>"},
     (INVALID, "twiml: root element must be <Response>")),
    ("twiml namespaced Response", "call", {"to": TO, "twiml": '<Response xmlns="urn:x"/>'},
     (INVALID, "twiml: root element must be <Response>")),
    ("twiml two roots", "call", {"to": TO, "twiml": "<Response/><Response/>"}, (INVALID, "twiml: not well-formed")),
    ("twiml of 4001 chars", "call", {"to": TO, "twiml": "<Response>" + "a" * 3980 + "</Response>"},
     (INVALID, "twiml: 4001 chars > 4000")),
    ("twiml of 4000 chars", "call", {"to": TO, "twiml": "<Response>" + "a" * 3979 + "</Response>"}, "sent"),
    ("url over http", "call", {"to": TO, "url": "http://ex.com/t"}, (INVALID, "url: not an https URL")),
    ("url file scheme", "call", {"to": TO, "url": "file:///etc/passwd"}, (INVALID, "url: not an https URL")),
    ("url with tab", "call", {"to": TO, "url": "https://ex.com/\tt"}, (INVALID, "url: not an https URL")),
    ("url with NUL", "call", {"to": TO, "url": "https://ex.com/t\x00"},
     (INVALID, "url: not an https URL: contains control character U+0000")),
    ("url with C1 control", "call", {"to": TO, "url": "https://ex.com/t\x90"}, (INVALID, "control character U+0090")),
    ("url with userinfo", "call", {"to": TO, "url": "https://a:b@ex.com/t"}, "sent"),
    ("url with IDN host", "call", {"to": TO, "url": "https://例え.jp/t"}, "sent"),
    ("say and url both", "call", {"to": TO, "say": "x", "url": "https://ex.com/t"}, (INVALID, "exactly one of")),
    ("no content", "call", {"to": TO}, (INVALID, "say: exactly one of say, twiml, url (got none)")),
    ("voice with markup", "call", call(voice='alice" foo="bar'), (INVALID, "voice:")),
    ("language with markup", "call", call(language="en<x>"), (INVALID, "language:")),
    ("voice with NUL", "call", call(voice="alice\x00"), (INVALID, "voice:")),
    ("voice without say", "call", {"to": TO, "url": "https://ex.com/t", "voice": "alice"},
     (INVALID, "voice: only applies with say")),
    ("timeout 4", "call", call(timeout=4), (INVALID, "timeout: 4 s is outside 5-600 s")),
    ("timeout 601", "call", call(timeout=601), (INVALID, "timeout: 601 s is outside")),
    ("timeout 5 and 600 are fine", "call", call(timeout=600), "sent"),
    ("timeout huge integer", "call", call(timeout=10 ** 30), (INVALID, "timeout:")),
    # ---- send_at
    ("send_at not UTC", "sms", sms(send_at="2020-01-01T00:00:00+02:00"), (INVALID, "send_at: must be UTC")),
    ("send_at naive", "sms", sms(send_at="2020-01-01T00:00:00"), (INVALID, "send_at: must be UTC")),
    ("send_at garbage", "sms", sms(send_at="tomorrow"), (INVALID, "send_at: not an ISO-8601 time")),
    ("send_at in the past is sent now", "sms", sms(send_at="2020-01-01T00:00:00Z"), "sent"),
    # ---- WhatsApp addresses and Content templates
    ("whatsapp to and from", "sms", sms(to="whatsapp:" + TO, **{"from": "whatsapp:" + FROM}), "sent"),
    ("whatsapp to, default from", "sms", sms(to="whatsapp:" + TO), "sent"),
    ("whatsapp to with trailing newline", "sms", sms(to="whatsapp:" + TO + "\n"),
     (INVALID, "to: not a whatsapp:+E.164 address")),
    ("whatsapp to with space after colon", "sms", sms(to="whatsapp: " + TO), (INVALID, "to: not a whatsapp:")),
    ("whatsapp to twice prefixed", "sms", sms(to="whatsapp:whatsapp:" + TO), (INVALID, "to: not a whatsapp:")),
    ("whatsapp to, phone from", "sms", sms(to="whatsapp:" + TO, **{"from": FROM}),
     (INVALID, "from: to and from must both be whatsapp: addresses or both phone numbers")),
    ("other channel prefix", "sms", sms(to="messenger:" + TO), (INVALID, "to: not an E.164 number")),
    ("template with variables", "sms", {"to": "whatsapp:" + TO, "content_sid": "HX" + "0a" * 16,
                                        "content_variables": {"1": "Ann", "date": "12/1"}}, "sent"),
    ("template without variables", "sms", {"to": TO, "content_sid": "HX" + "0a" * 16}, "sent"),
    ("template variables null", "sms", {"to": TO, "content_sid": "HX" + "0a" * 16, "content_variables": None},
     "sent"),
    ("template with body", "sms", sms(content_sid="HX" + "0a" * 16),
     (INVALID, "body: a template (content_sid) replaces body and media_urls")),
    ("template sid lowercase hx", "sms", {"to": TO, "content_sid": "hx" + "0a" * 16},
     (INVALID, "content_sid: must be HX followed by 32 hex digits")),
    ("template sid not a string", "sms", {"to": TO, "content_sid": 12}, (INVALID, "content_sid: must be a string")),
    ("template variables a string of JSON", "sms", {"to": TO, "content_sid": "HX" + "0a" * 16,
                                                    "content_variables": '{"1": "a"}'},
     (INVALID, "content_variables: must be a JSON object of strings, not str")),
    ("template variable null", "sms", {"to": TO, "content_sid": "HX" + "0a" * 16, "content_variables": {"1": None}},
     (INVALID, "content_variables.1: must be a string, not null")),
    ("template 101 variables", "sms", {"to": TO, "content_sid": "HX" + "0a" * 16,
                                       "content_variables": {f"v{i}": "x" for i in range(101)}},
     (INVALID, "content_variables: 101 variables > 100")),
    ("template variable name with newline", "sms", {"to": TO, "content_sid": "HX" + "0a" * 16,
                                                    "content_variables": {"1\n": "x"}},
     (INVALID, "content_variables: variable name '1\\n' must be")),
    ("template variable of 1601 units", "sms", {"to": TO, "content_sid": "HX" + "0a" * 16,
                                                "content_variables": {"1": "a" * 1601}},
     (INVALID, "content_variables.1: 1601 UTF-16 units > 1600")),
    ("variables without a template", "sms", sms(content_variables={"1": "a"}),
     (INVALID, "content_variables: only applies with content_sid")),
    ("call to whatsapp", "call", call(to="whatsapp:" + TO),
     (INVALID, "to: calls cannot be placed to or from a whatsapp: address")),
    ("call with AMD and voicemail", "call", call(machine_detection=True, voicemail="Please call us back."), "sent"),
    ("call machine_detection null", "call", call(machine_detection=None), "sent"),
    ("voicemail without AMD", "call", call(voicemail="x"),
     (INVALID, "voicemail: only applies with machine_detection: true")),
    ("voicemail with markup is text", "call", call(machine_detection=True, voicemail="</Say><Dial>+1900</Dial>"),
     "sent"),
    ("voicemail with U+FFFE", "call", call(machine_detection=True, voicemail="a\ufffe"),
     (INVALID, "voicemail: contains U+FFFE")),
    ("voicemail a number", "call", call(machine_detection=True, voicemail=5), (INVALID, "voicemail: must be a string")),
]


def uid(prefix: str) -> str:
    """Ids unique in the session: every test shares one ``sends`` table in Azurite."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _body(value: Any) -> str | bytes:
    return _raw(value) if isinstance(value, dict) else value


@pytest.mark.parametrize(("kind", "body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_queue_attack_is_sent_once_only_when_valid_else_dead_lettered_at_once(outbound_env: Any, kind: str,
                                                                              body: Any, expected: Any) -> None:
    queue_message_id = "q-" + uuid.uuid4().hex
    outcome = sender.process(kind, _body(body), queue_message_id, 1)
    dead = poison(sms_queue() if kind == "sms" else call_queue())
    if expected == "sent":
        assert outcome.result == "sent", outcome
        assert len(outbound_env.created(kind)) == 1 and dead == []
        stored = row(kind, outcome.id)
        assert stored is not None and stored.status == "sent" and stored.content_hash
        again = sender.process(kind, _body(body), queue_message_id, 2)  # redelivery: acknowledged, not resent
        assert again.result == "duplicate" and len(outbound_env.created(kind)) == 1
    else:
        code, fragment = expected
        assert outcome.result == "dead_lettered" and outcome.code == code, outcome
        assert fragment in outcome.reason, outcome.reason
        assert outbound_env.created(kind) == []
        [letter] = dead
        assert letter["error"]["code"] == code and fragment in letter["error"]["reason"]
        assert letter["error"]["dequeue_count"] == 1  # on the first try, not after retries


def test_twiml_we_send_for_say_always_parses(outbound_env: Any) -> None:
    import xml.etree.ElementTree as ET

    text = '</Say><Dial>+19005550100</Dial><Say> & <!-- --> ]]> \u202e ' + EMOJI
    sender.process_call(_raw(call(say=text, voice="Polly.Joanna", language="en-US")), "q", 1)
    [request] = outbound_env.created("call")
    root = ET.fromstring(request.first("Twiml").encode("utf-8"))
    assert [child.tag for child in root] == ["Say"] and root[0].text == text


def test_opted_out_number_with_trailing_newline_is_not_texted(outbound_env: Any) -> None:
    optouts.record_optout("+14155553333", "STOP")
    outcome = sender.process_sms(_raw({"to": "+14155553333\n", "body": "hi"}), "q", 1)
    assert outcome.code == "invalid_message" and outcome.reason == "to: not an E.164 number"
    outcome = sender.process_sms(_raw({"to": "+14155553333", "body": "hi"}), "q2", 1)
    assert outcome.code == "opted_out"
    assert outbound_env.created() == []


def test_opt_out_key_is_the_canonical_number(azurite: Any) -> None:
    number = f"+1415{uuid.uuid4().int % 10 ** 7:07d}"
    optouts.record_optout(f" {number}\n", "STOP")  # however the sender arrived, one key
    assert optouts.is_opted_out(number)
    with pytest.raises(optouts.InvalidAddressError):
        optouts.is_opted_out(number + "\n")


def test_id_null_uses_the_queue_message_id(outbound_env: Any) -> None:
    outcome = sender.process_sms(_raw(sms(id=None)), "queue-msg-7", 1)
    assert outcome.result == "sent" and outcome.id == "queue-msg-7"


def test_same_id_other_recipient_is_dead_lettered_as_id_conflict_and_the_original_row_kept(outbound_env: Any) -> None:
    reuse_1 = uid("reuse")
    first = sender.process_sms(_raw(sms(id=reuse_1)), "q1", 1)
    original = row("sms", reuse_1)
    outcome = sender.process_sms(_raw(sms(id=reuse_1, to="+14155550199")), "q2", 1)
    assert outcome.result == "dead_lettered" and outcome.code == "id_conflict"
    [letter] = poison(sms_queue())
    error = letter["error"]
    assert error["recorded_content_hash"] == original.content_hash
    assert error["content_hash"] != original.content_hash and len(error["content_hash"]) == 64
    after = row("sms", reuse_1)
    assert (after.status, after.sid, after.etag) == (original.status, first.sid, original.etag)
    assert len(outbound_env.created()) == 1


@pytest.mark.parametrize("change", [{"body": "other"}, {"media_urls": ["https://ex.com/x.png"]},
                                    {"from": FROM}, {"messaging_service_sid": "MG" + "b" * 32},
                                    {"to": "whatsapp:" + TO},
                                    {"body": None, "content_sid": "HX" + "c" * 32},
                                    {"body": None, "content_sid": "HX" + "c" * 32, "content_variables": {"1": "a"}}])
def test_same_id_other_sms_content_is_an_id_conflict(outbound_env: Any, change: dict[str, Any]) -> None:
    reuse_2 = uid("reuse")
    sender.process_sms(_raw(sms(id=reuse_2)), "q1", 1)
    assert sender.process_sms(_raw({**sms(id=reuse_2), **change}), "q2", 1).code == "id_conflict"
    assert len(outbound_env.created()) == 1


@pytest.mark.parametrize("change", [{"say": "other"}, {"voice": "man"}, {"language": "en-GB"}, {"timeout": 30},
                                    {"machine_detection": True},
                                    {"machine_detection": True, "voicemail": "call us back"}])
def test_same_id_other_call_content_is_an_id_conflict(outbound_env: Any, change: dict[str, Any]) -> None:
    reuse_3 = uid("reuse")
    sender.process_call(_raw(call(id=reuse_3)), "q1", 1)
    assert sender.process_call(_raw({**call(id=reuse_3), **change}), "q2", 1).code == "id_conflict"
    assert len(outbound_env.created()) == 1


def test_same_content_with_other_send_at_is_a_duplicate_not_a_conflict(outbound_env: Any) -> None:
    reuse_4 = uid("reuse")
    sender.process_sms(_raw(sms(id=reuse_4)), "q1", 1)
    again = sender.process_sms(_raw(sms(id=reuse_4, send_at="2020-01-01T00:00:00Z")), "q2", 1)
    assert again.result == "duplicate" and poison(sms_queue()) == []


def test_a_row_written_before_content_hashes_counts_as_matching(outbound_env: Any) -> None:
    legacy_1 = uid("legacy")
    from shared import storage

    storage.table(ledger.TABLE).create_entity({"PartitionKey": "sms", "RowKey": legacy_1, "status": "sent",
                                               "sid": "SM" + "c" * 32, "twilio_status": "queued", "attempts": 1})
    outcome = sender.process_sms(_raw(sms(id=legacy_1, body="anything")), "q", 1)
    assert outcome.result == "duplicate" and outbound_env.created() == []


def test_id_conflict_on_a_dead_lettered_id_is_not_acknowledged_silently(outbound_env: Any) -> None:
    reuse_5 = uid("reuse")
    outbound_env.fail_next("21211")
    assert sender.process_sms(_raw(sms(id=reuse_5)), "q1", 1).code == "twilio_rejected"
    poison(sms_queue())
    assert sender.process_sms(_raw(sms(id=reuse_5, to="+14155550199")), "q2", 1).code == "id_conflict"


def test_a_resendable_id_may_be_reused_with_corrected_content(outbound_env: Any) -> None:
    fix_1 = uid("fix")
    assert sender.process_sms(_raw(sms(id=fix_1, to="+1415555010\n")), "q1", 1).code == "invalid_message"
    outcome = sender.process_sms(_raw(sms(id=fix_1)), "q2", 1)
    assert outcome.result == "sent" and row("sms", fix_1).content_hash


def _race(bodies: list[str]) -> tuple[list[Any], list[BaseException]]:
    barrier = threading.Barrier(len(bodies))
    outcomes: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def deliver(i: int) -> None:
        barrier.wait()
        try:
            result = sender.process_sms(bodies[i], f"q{i}", 1)
            with lock:
                outcomes.append(result)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes, errors


def test_same_id_delivered_by_8_threads_at_once_is_sent_once(outbound_env: Any) -> None:
    race_1 = uid("race")
    outcomes, errors = _race([_raw(sms(id=race_1))] * 8)
    assert len(outbound_env.created()) == 1
    assert all(isinstance(e, RetryLaterError) for e in errors)
    assert [o.result for o in outcomes].count("sent") == 1
    assert {o.result for o in outcomes} <= {"sent", "duplicate"}
    # the copies told to retry come back later and are acknowledged as duplicates
    for i in range(len(errors)):
        assert sender.process_sms(_raw(sms(id=race_1)), f"again{i}", 2).result == "duplicate"
    assert len(outbound_env.created()) == 1 and poison(sms_queue()) == []


def test_8_different_messages_racing_for_one_id_send_one_and_dead_letter_the_rest(outbound_env: Any) -> None:
    race_2 = uid("race")
    outcomes, errors = _race([_raw(sms(id=race_2, body=f"body {i}")) for i in range(8)])
    assert errors == [] and len(outbound_env.created()) == 1
    assert sorted(o.result for o in outcomes) == ["dead_lettered"] * 7 + ["sent"]
    letters = poison(sms_queue())
    assert len(letters) == 7 and {x["error"]["code"] for x in letters} == {"id_conflict"}
    assert row("sms", race_2).status == "sent"


def test_validation_uses_full_matches_only() -> None:
    """One mechanism: no module validates with ``re.match``/``.match(`` (it accepts a trailing newline)."""
    from pathlib import Path

    root = Path(outbound.__file__).resolve().parent
    offenders = [f"{p.name}:{n}" for p in sorted(root.glob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if ".match(" in line and not line.lstrip().startswith("#")]
    assert offenders == []


def test_a_queue_text_holding_a_lone_surrogate_is_dead_lettered_not_raised(outbound_env: Any) -> None:
    outcome = sender.process_sms('{"to":"+14155550100","body":"a\ud800"}', "q", 1)
    assert outcome.code == "invalid_message" and outcome.reason.startswith("message: not valid UTF-8")
    [letter] = poison(sms_queue())
    assert letter["message_base64"] is True and outbound_env.created() == []
