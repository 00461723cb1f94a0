"""Attack suite, webhook half: what a forger or a broken client can send to the HTTP functions.

Built from the contract (DESIGN: every Twilio webhook carries a valid signature over PUBLIC_BASE_URL + path +
query; bad or missing signature → 403 without TwiML; malformed body → 400; never a 500). Every case asserts a
4xx, or TwiML that parses; forged cases assert 403. Signatures for valid cases come from twilio's
RequestValidator (tests/twilio_signing.py).
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote, urlencode

import pytest

from shared import optouts
from shared.webhooks import Params
from tests.conftest import http_request, signed_form_request
from tests.twilio_signing import PUBLIC_BASE_URL, TEST_AUTH_TOKEN, TEST_SHARED_KEY, form_body, sign_form, sign_json
from tests.webhook_checks import assert_refused_or_valid_twiml

CALL = {"CallSid": "CA" + "c" * 32, "From": "+14155552345", "To": "+15005550006", "ApiVersion": "2010-04-01"}
SMS = {"MessageSid": "SM" + "d" * 32, "From": "+14155552345", "To": "+15005550006", "Body": "hello"}
FORM = "application/x-www-form-urlencoded"
ROUTES = {"voice": ("/api/voice", CALL), "voice_menu": ("/api/voice/menu", {**CALL, "Digits": "1"}),
          "voice_recorded": ("/api/voice/recorded", {**CALL, "RecordingUrl": "https://api.twilio.com/r/RE1"}),
          "twiml_say": ("/api/twiml/say", {"Message": "hi"}), "sms": ("/api/sms", SMS),
          "status_message": ("/api/status/message", {"MessageStatus": "delivered"}),
          "status_call": ("/api/status/call", {"CallStatus": "completed"}),
          "status_amd": ("/api/status/amd", {"CallSid": CALL["CallSid"], "AnsweredBy": "machine_end_beep"}),
          "status_recording": ("/api/status/recording", {"CallSid": CALL["CallSid"], "RecordingStatus": "completed",
                                                         "RecordingSid": "RE" + "e" * 32})}


def post(path: str, params: dict, headers: dict, query: str = "", body: bytes | None = None):
    return http_request("POST", path, body=form_body(params) if body is None else body, query=query,
                        headers={"Content-Type": FORM, **headers})


# ---------------------------------------------------------------- forged and odd signatures → 403

def _forgeries(path: str, params: dict) -> dict[str, dict]:
    url = PUBLIC_BASE_URL + path
    good = sign_form(url, params)
    return {
        "no header": {},
        "empty": {"X-Twilio-Signature": ""},
        "one char": {"X-Twilio-Signature": "x"},
        "base64 garbage of sha1 length": {"X-Twilio-Signature": "A" * 27 + "="},
        "not base64": {"X-Twilio-Signature": "!" * 27 + "="},
        "10 KB": {"X-Twilio-Signature": "A" * 10_000},
        "non-ascii": {"X-Twilio-Signature": "ＡＢＣ" * 9 + "="},
        "padded with spaces": {"X-Twilio-Signature": f" {good} "},
        "duplicated header joined": {"X-Twilio-Signature": f"{good}, {good}"},
        "other token": {"X-Twilio-Signature": sign_form(url, params, token="another-token-000000")},
        "internal host url": {"X-Twilio-Signature": sign_form("http://localhost:7071" + path, params)},
        "another path": {"X-Twilio-Signature": sign_form(PUBLIC_BASE_URL + "/api/other", params)},
        "another query": {"X-Twilio-Signature": sign_form(url + "?code=abc", params)},
        "http not https": {"X-Twilio-Signature": sign_form(url.replace("https:", "http:"), params)},
        "other params": {"X-Twilio-Signature": sign_form(url, {**params, "Extra": "1"})},
        "sha256 with auth token, sha1 claimed": {"X-Twilio-Signature": sign_form(url, params, algorithm="HMAC_SHA256")},
        "settings header, auth token signature": {
            "X-Twilio-Signature": sign_form(url, params, algorithm="HMAC_SHA256"),
            "X-Twilio-Webhooks-Signature-Settings": "key=k,algorithm=HMAC_SHA256"},
        "settings header, unknown algorithm": {
            "X-Twilio-Signature": sign_form(url, params, TEST_SHARED_KEY, "HMAC_SHA256"),
            "X-Twilio-Webhooks-Signature-Settings": "key=k,algorithm=HMAC_SHA512"},
        "settings header, lower-case algorithm": {
            "X-Twilio-Signature": "A" * 43 + "=", "X-Twilio-Webhooks-Signature-Settings": "algorithm=hmac_sha256"},
        "settings header, none algorithm": {
            "X-Twilio-Signature": good, "X-Twilio-Webhooks-Signature-Settings": "key=k,algorithm=none"},
        "settings header garbage": {"X-Twilio-Signature": good, "X-Twilio-Webhooks-Signature-Settings": "\x00,=,=="},
        "wrong algorithm, right token": {"X-Twilio-Signature": sign_form(url, params, TEST_AUTH_TOKEN, "HMAC_SHA256"),
                                         "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_SHA1"},
    }


FORGERY_NAMES = list(_forgeries("/api/sms", SMS))


@pytest.mark.parametrize("route", ["sms", "twiml_say", "status_message", "status_amd", "status_recording"])
@pytest.mark.parametrize("forgery", FORGERY_NAMES)
def test_forged_or_odd_signature_is_403_without_twiml(call_function, route, forgery):
    path, params = ROUTES[route]
    response, inbound = call_function(route, post(path, params, _forgeries(path, params)[forgery]))
    assert response.status_code == 403, response.get_body()
    assert b"<Response" not in response.get_body() and inbound.get() is None


def test_shared_key_settings_header_without_a_configured_key_is_403_and_logs_once(call_function, monkeypatch,
                                                                                   set_env, caplog):
    monkeypatch.delenv("TWILIO_WEBHOOK_SHARED_KEY")
    set_env()
    for _ in range(25):
        req = signed_form_request("/api/voice", CALL, shared_key=True, algorithm="HMAC_SHA256")
        assert call_function("voice", req)[0].status_code == 403
    assert len([r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]) == 1


def test_a_flood_of_forged_signatures_logs_one_line(call_function, caplog):
    for i in range(50):
        call_function("sms", post("/api/sms", {**SMS, "Body": str(i)}, {"X-Twilio-Signature": "B" * 27 + "="}))
    assert len([r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]) == 1


# ---------------------------------------------------------------- valid signatures, odd shapes → accepted

@pytest.mark.parametrize("header_name", ["X-Twilio-Signature", "x-twilio-signature", "X-TWILIO-SIGNATURE"])
def test_signature_header_name_case_does_not_matter(call_function, header_name):
    sig = sign_form(PUBLIC_BASE_URL + "/api/voice", CALL)
    response, _ = call_function("voice", post("/api/voice", CALL, {header_name: sig}))
    assert response.status_code == 200 and assert_refused_or_valid_twiml(response) is not None


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_a_replay_with_reordered_parameters_carries_the_same_signature(call_function, order):
    sig = sign_form(PUBLIC_BASE_URL + "/api/voice", CALL)
    items = sorted(CALL.items(), reverse=order == "reversed")
    response, _ = call_function("voice", post("/api/voice", {}, {"X-Twilio-Signature": sig},
                                              body=urlencode(items).encode()))
    assert response.status_code == 200


def test_a_replay_with_one_parameter_repeated_is_403(call_function):
    sig = sign_form(PUBLIC_BASE_URL + "/api/voice", CALL)
    body = (urlencode(CALL) + "&Digits=9").encode()
    assert call_function("voice", post("/api/voice", {}, {"X-Twilio-Signature": sig}, body=body))[0].status_code == 403


# ---------------------------------------------------------------- JSON bodies (bodySHA256)

UNSIGNED_JSON = {
    "deep list": "[" * 20_000 + "]" * 20_000,
    "deep object": '{"a":' * 20_000 + "1" + "}" * 20_000,
    "unclosed": "[" * 50_000,
    "huge number": '{"a": ' + "9" * 100_000 + "}",
    "lone surrogate": '{"Body": "\\ud800"}',
    "not json": "<xml/>",
    "empty": "",
}
JSON_QUERIES = ["", "xbodySHA256=1", "bodySHA256=", "bodySHA256", "bodySHA256=" + "0" * 64,
                "bodySHA256=" + "0" * 64 + "&bodySHA256=" + "1" * 64, "bodySHA256=%00"]


@pytest.mark.parametrize("query", JSON_QUERIES)
@pytest.mark.parametrize("body", list(UNSIGNED_JSON))
def test_unsigned_json_body_is_403_whatever_its_shape(call_function, query, body):
    req = http_request("POST", "/api/sms", body=UNSIGNED_JSON[body].encode(), query=query,
                       headers={"Content-Type": "application/json", "X-Twilio-Signature": "C" * 27 + "="})
    response, inbound = call_function("sms", req)
    assert response.status_code == 403 and inbound.get() is None


@pytest.mark.parametrize("body, status", [
    (json.dumps({"Message": "</Say><Dial>+19005550000</Dial>"}), 200),
    (json.dumps({"Message": "a\x00b\x07c\ufffe"}), 200),
    (json.dumps({"Message": "x", "Voice": {"nested": [1, 2]}}), 400),
    ('{"Message": "\\udc00"}', 400),
    ("[" * 5_000 + "]" * 5_000, 400),
    ('{"Message[²]": "x"}', 400),
])
def test_signed_json_body_gives_parseable_twiml_or_400(call_function, body, status):
    url, sig = sign_json(PUBLIC_BASE_URL + "/api/twiml/say", body)
    req = http_request("POST", "/api/twiml/say", body=body.encode(), query=url.split("?", 1)[1],
                       headers={"Content-Type": "application/json; charset=utf-8", "X-Twilio-Signature": sig})
    response, _ = call_function("twiml_say", req)
    assert response.status_code == status, response.get_body()
    root = assert_refused_or_valid_twiml(response)
    if root is not None:
        assert {child.tag for child in root} == {"Say"}


# ---------------------------------------------------------------- encodings, content types, sizes, methods

@pytest.mark.parametrize("content_type, body, status", [
    (FORM + "; charset=utf-8", None, 200),
    (FORM + "; charset=ISO-8859-1", None, 200),
    ("Application/X-WWW-Form-Urlencoded", None, 200),
    (FORM, "Message=caf%C3%A9".encode(), None),
    (FORM, "Message=%FF%FE%C0%AE".encode(), None),
    (FORM, "Message=%00%01%1F%7F".encode(), None),
    (FORM, "Message=%25252541".encode(), None),
    (FORM, "Message=" .encode() + "é".encode("latin-1"), 400),
    (FORM, "Message=hi".encode("utf-16"), 400),
    ("text/xml", b"<Response/>", 400),
    ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--", 400),
    ("a/b/c", b"Message=hi", 400),
    (FORM, b"&" * 100_000, None),
    (FORM, b"a=1&" * 2_000, 400),
    (FORM, b"Message=" + b"a" * 300_000, 400),
])
def test_encodings_and_content_types_with_a_valid_signature(call_function, content_type, body, status):
    """The signature is valid for whatever the body parses to; the answer is a 4xx or TwiML that parses."""
    from urllib.parse import parse_qs

    body = form_body({"Message": "hi"}) if body is None else body
    try:
        params = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        params = {}
    sig = sign_form(PUBLIC_BASE_URL + "/api/twiml/say", Params(params))
    req = http_request("POST", "/api/twiml/say", body=body, headers={"Content-Type": content_type,
                                                                      "X-Twilio-Signature": sig})
    response, _ = call_function("twiml_say", req)
    assert_refused_or_valid_twiml(response)
    if status is not None:
        assert response.status_code == status, response.get_body()


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "TRACE"])
def test_any_method_on_twiml_say_is_4xx_or_twiml(call_function, method):
    query = "Message=hello"
    sig = sign_form(PUBLIC_BASE_URL + "/api/twiml/say?" + query, {})
    req = http_request(method, "/api/twiml/say", query=query, headers={"X-Twilio-Signature": sig})
    assert_refused_or_valid_twiml(call_function("twiml_say", req)[0])


@pytest.mark.parametrize("index", ["²", "٣", "१", "-1", "+1", " 1", "1 ", "", "0x1", "1" * 50, "1.0", "𝟙"])
def test_message_index_that_is_not_ascii_digits_is_400(call_function, index):
    req = signed_form_request("/api/twiml/say", {f"Message[{index}]": "hi"})
    assert call_function("twiml_say", req)[0].status_code == 400


# ---------------------------------------------------------------- control, bidi and injection in echoed parameters

HOSTILE = {
    "nul": "a\x00b", "bel": "ring\x07", "esc": "\x1b[31mred", "vertical tab": "a\x0bb", "form feed": "a\x0cb",
    "del": "a\x7fb", "c1": "a\x85b\x9f", "u+fffe": "a\ufffeb", "u+ffff": "\uffff", "bidi override": "\u202eevil",
    "zero width": "a\u200bb\u2060", "bom": "\ufeffhi", "crlf": "a\r\nb", "astral": "🎉𝟘",
    "close say, open dial": "</Say><Dial>+19005550000</Dial><Say>",
    "cdata end": "]]><Dial>+19005550000</Dial>", "doctype": '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    "entity": "&x; &amp; &#0; &#x1;", "attribute break": '" action="https://evil.example/', "comment": "<!-- -->",
    "processing instruction": "<?xml version='1.0'?>",
}


@pytest.mark.parametrize("hostile", list(HOSTILE))
@pytest.mark.parametrize("field", ["Message", "Message[0]"])
def test_hostile_text_in_say_messages_gives_parseable_twiml_with_only_say_verbs(call_function, field, hostile):
    response, _ = call_function("twiml_say", signed_form_request("/api/twiml/say", {field: HOSTILE[hostile]}))
    root = assert_refused_or_valid_twiml(response)
    if root is not None:
        assert [child.tag for child in root] == ["Say"] and list(root[0]) == []


@pytest.mark.parametrize("hostile", list(HOSTILE))
@pytest.mark.parametrize("field", ["Voice", "Language"])
def test_hostile_voice_or_language_is_refused_400(call_function, field, hostile):
    response, _ = call_function("twiml_say", signed_form_request("/api/twiml/say",
                                                                  {"Message": "hi", field: HOSTILE[hostile]}))
    assert response.status_code == 400 and b"<Response" not in response.get_body()


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_hostile_api_version_is_spoken_harmlessly(call_function, hostile):
    params = {**CALL, "Digits": "1", "ApiVersion": HOSTILE[hostile]}
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", params))
    root = assert_refused_or_valid_twiml(response)
    assert root is not None and [child.tag for child in root] == ["Say", "Pause", "Say", "Hangup"]


@pytest.mark.parametrize("hostile", ["nul", "bidi override", "close say, open dial", "u+fffe", "entity"])
@pytest.mark.parametrize("field", ["Body", "To", "MessageSid", "NumMedia"])
def test_hostile_sms_fields_give_4xx_or_parseable_twiml(call_function, field, hostile):
    response, inbound = call_function("sms", signed_form_request("/api/sms", {**SMS, field: HOSTILE[hostile]}))
    assert_refused_or_valid_twiml(response)
    if response.status_code == 200:
        json.loads(inbound.get())  # the inbound event is valid JSON


@pytest.mark.parametrize("sender", ["+1415\x00", "a/b", "#1", "?x", "\\", "+1" * 40, "\u202e+14155552345",
                                    "+1415\u200b5552345", "+1415\x855552345"])
def test_sender_that_cannot_be_a_table_key_is_400(call_function, sender):
    response, inbound = call_function("sms", signed_form_request("/api/sms", {**SMS, "From": sender, "Body": "STOP"}))
    assert response.status_code == 400 and inbound.get() is None


@pytest.mark.parametrize("query", ["code=" + quote("a b"), "code=%00", "code=%ZZ", "a=1&a=2", "x=" + "y" * 4000,
                                   "Message=%3C%2FSay%3E", "%", "&&&", "bodySHA256=" + "f" * 64])
def test_signed_query_strings_are_part_of_the_url_and_never_break_the_answer(call_function, query):
    response, _ = call_function("twiml_say", signed_form_request("/api/twiml/say", {"Message": "hi"}, query=query))
    assert response.status_code == 200 and assert_refused_or_valid_twiml(response) is not None


@pytest.mark.parametrize("ident", ["abc%0A", "abc%0D%0A", "%0Aabc", "a%00b", "a%2Fb", "a b", "x" * 129, "",
                                   "a%E2%80%AEb"])
@pytest.mark.parametrize("route", ["status_message", "status_call", "status_amd"])
def test_status_callback_with_an_id_that_is_not_a_full_match_is_400(call_function, route, ident):
    path, params = ROUTES[route]
    response, _ = call_function(route, signed_form_request(path, params, query=f"id={ident}"))
    assert response.status_code == 400, response.get_body()



@pytest.mark.parametrize("sid", ["SM/../x", "SM" + "d" * 31 + "'", "SM" + "d" * 32 + "\n", "SM#" + "d" * 31,
                                 "SM" + "d" * 33, "sm" + "d" * 32, "SM" + "\u0661" * 32])
@pytest.mark.parametrize("route,field", [("status_message", "MessageSid"), ("status_call", "CallSid")])
def test_status_callback_with_a_sid_that_cannot_be_one_is_400(call_function, route, field, sid):
    path, params = ROUTES[route]
    response, _ = call_function(route, signed_form_request(path, {**params, field: sid}, query="id=some-id"))
    assert response.status_code == 400, response.get_body()  # a SID becomes a table key: refused before storage


# ---------------------------------------------------------------- channels: WhatsApp, speech, AMD, recording status


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_hostile_speech_in_the_menu_repeats_the_menu_in_parseable_twiml(call_function, hostile):
    params = {**CALL, "SpeechResult": HOSTILE[hostile], "Confidence": "0.9"}
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", params))
    root = assert_refused_or_valid_twiml(response)
    assert root is not None and [child.tag for child in root] == ["Say", "Gather"]


@pytest.mark.parametrize("hostile", ["nul", "bidi override", "close say, open dial", "u+fffe", "entity"])
@pytest.mark.parametrize("field", ["Body", "ProfileName", "WaId"])
def test_hostile_whatsapp_fields_give_4xx_or_parseable_twiml(call_function, field, hostile):
    params = {**SMS, "From": "whatsapp:+14155552345", "To": "whatsapp:+15005550006", field: HOSTILE[hostile]}
    response, inbound = call_function("sms", signed_form_request("/api/sms", params))
    assert_refused_or_valid_twiml(response)
    if response.status_code == 200:
        assert json.loads(inbound.get())["channel"] == "whatsapp"


@pytest.mark.parametrize("answered_by", ["", "HUMAN ", "machine", "machine_end_beep\n", "robot", "x" * 5000,
                                         "machine_end_beep\x00"])
def test_amd_callback_with_an_unknown_answered_by_is_400(call_function, answered_by):
    params = {"CallSid": CALL["CallSid"], "AnsweredBy": answered_by}
    response, _ = call_function("status_amd", signed_form_request("/api/status/amd", params, query="id=a1"))
    assert response.status_code == 400, response.get_body()


@pytest.mark.parametrize("call_sid", ["", "CA123", "SM" + "c" * 32, "CA" + "c" * 32 + "\n", "CA" + "g" * 32])
def test_amd_callback_with_a_call_sid_that_is_not_one_is_400(call_function, call_sid):
    params = {"CallSid": call_sid, "AnsweredBy": "human"}
    response, _ = call_function("status_amd", signed_form_request("/api/status/amd", params, query="id=a1"))
    assert response.status_code == 400, response.get_body()


@pytest.mark.parametrize("status", ["", "done", "completed\n", "x" * 3000])
def test_recording_status_outside_twilios_values_is_400_and_queues_nothing(call_function, status):
    params = {"CallSid": CALL["CallSid"], "RecordingStatus": status}
    response, inbound = call_function("status_recording", signed_form_request("/api/status/recording", params))
    assert response.status_code == 400 and inbound.get() is None


# ---------------------------------------------------------------- issue 27: WhatsApp opt-outs (item 4)

def _new_number() -> str:
    return f"+1415{uuid.uuid4().int % 10 ** 7:07d}"  # Azurite's opt-out table is shared by the whole session


@pytest.mark.parametrize("body", ["STOP" + " " * 200, "\n" * 300 + "stop", "Stop!" + "\u200b" * 170 + " \t" * 50],
                         ids=["trailing spaces", "leading newlines", "zero-width and tabs"])
def test_a_whatsapp_stop_padded_past_160_characters_opts_the_address_out(azurite, call_function, body):
    address = "whatsapp:" + _new_number()
    params = {**SMS, "From": address, "To": "whatsapp:+15005550006", "Body": body}
    response, inbound = call_function("sms", signed_form_request("/api/sms", params))
    assert response.status_code == 200
    assert optouts.is_opted_out(address)
    assert b"no more WhatsApp messages" in response.get_body()
    assert json.loads(inbound.get())["keyword"] == "STOP"


def test_a_stop_from_a_capitalised_whatsapp_prefix_stops_whatsapp_sends_to_that_number(outbound_env, call_function):
    from shared import sender

    number = _new_number()
    params = {**SMS, "From": "WhatsApp:" + number, "To": "whatsapp:+15005550006", "Body": "STOP"}
    assert call_function("sms", signed_form_request("/api/sms", params))[0].status_code == 200
    assert optouts.is_opted_out("whatsapp:" + number)
    outcome = sender.process("sms", json.dumps({"to": "whatsapp:" + number, "body": "hi"}), "q-" + uuid.uuid4().hex, 1)
    assert outcome.code == "opted_out" and outbound_env.created() == []


# ---------------------------------------------------------------- issue 27: what an event or a table row can hold (5)

EMOJI = "\U0001F600"
AMPERSAND_URL = "https://api.twilio.com/m?" + "&" * 2000  # 2025 chars; each & is 5 bytes once XML-escaped
TOO_LARGE = {
    "sms body of 20000 emoji": ("sms", "/api/sms", {**SMS, "Body": EMOJI * 20_000}, "Body"),
    "sms body of 1601 units": ("sms", "/api/sms", {**SMS, "Body": "a" * 1601}, "Body of 1601 UTF-16 units"),
    "whatsapp body of 4097 units": ("sms", "/api/sms", {**SMS, "From": "whatsapp:+14155552345",
                                                         "Body": EMOJI * 2048 + "a"}, "Body of 4097"),
    "media url of 100000 chars": ("sms", "/api/sms", {**SMS, "NumMedia": "1",
                                                      "MediaUrl0": "https://api.twilio.com/" + "a" * 100_000},
                                  "MediaUrl0"),
    "ten media urls of ampersands": ("sms", "/api/sms", {**SMS, "NumMedia": "10",
                                                         **{f"MediaUrl{i}": AMPERSAND_URL for i in range(10)}},
                                     "queue limit"),
    "profile name of 40000 chars": ("sms", "/api/sms", {**SMS, "From": "whatsapp:+14155552345",
                                                        "ProfileName": "n" * 40_000}, "ProfileName"),
    "recording url of 100000 chars": ("status_recording", "/api/status/recording",
                                      {"CallSid": CALL["CallSid"], "RecordingStatus": "completed",
                                       "RecordingUrl": "https://api.twilio.com/" + "a" * 100_000}, "RecordingUrl"),
    "voicemail recording url of 100000 chars": ("voice_recorded", "/api/voice/recorded",
                                                {**CALL, "RecordingUrl": "https://api.twilio.com/" + "a" * 100_000},
                                                "RecordingUrl"),
}


@pytest.mark.parametrize("case", list(TOO_LARGE))
def test_a_signed_request_whose_event_cannot_fit_a_queue_message_is_refused_413_and_queues_nothing(call_function,
                                                                                                  case):
    route, path, params, named = TOO_LARGE[case]
    response, inbound = call_function(route, signed_form_request(path, params))
    assert response.status_code == 413, response.get_body()
    assert named.encode() in response.get_body() and inbound.get() is None


@pytest.mark.parametrize("params", [{**SMS, "Body": EMOJI * 800},
                                    {**SMS, "From": "whatsapp:+14155552345", "Body": EMOJI * 2048},
                                    {**SMS, "NumMedia": "10", **{f"MediaUrl{i}": "https://api.twilio.com/" + "m" * 2000
                                                                 for i in range(10)}}],
                         ids=["sms of 1600 units of emoji", "whatsapp of 4096 units of emoji", "ten 2 KB media urls"])
def test_the_largest_messages_twilio_delivers_are_queued_within_the_64_kib_limit(call_function, params):
    response, inbound = call_function("sms", signed_form_request("/api/sms", params))
    assert response.status_code == 200
    event = inbound.get()
    assert len(event.encode("utf-8")) <= 64 * 1024 and json.loads(event)["body"] == params["Body"]


def test_the_local_host_answers_413_not_500_for_an_sms_too_big_for_the_inbound_queue(standin_http):
    import requests

    params = {**SMS, "Body": EMOJI * 20_000}  # 80 KB of UTF-8, 240 KB once JSON-escaped
    headers = {"Content-Type": FORM, "X-Twilio-Signature": sign_form(PUBLIC_BASE_URL + "/api/sms", params)}
    response = requests.post(standin_http.base_url + "/api/sms", data=form_body(params), headers=headers, timeout=30)
    assert response.status_code == 413, response.text


def test_an_inbound_stop_whose_message_sid_cannot_be_stored_is_refused_413_and_records_nothing(azurite,
                                                                                              call_function):
    number = _new_number()
    params = {**SMS, "From": number, "Body": "STOP", "MessageSid": "SM" + "d" * 40_000}
    response, inbound = call_function("sms", signed_form_request("/api/sms", params))
    assert response.status_code == 413 and inbound.get() is None
    assert not optouts.is_opted_out(number)


@pytest.mark.parametrize("field, value", [("ErrorCode", "3" * 40_000), ("ErrorCode", "30003; drop"),
                                          ("ErrorCode", "abc"), ("MessageStatus", "d" * 40_000),
                                          ("MessageStatus", "delivered\x00")],
                         ids=["40000-digit error code", "error code with text", "letters", "40000-char status",
                              "status with NUL"])
def test_a_status_callback_value_that_cannot_be_stored_is_refused_400_and_the_row_kept(azurite, call_function,
                                                                                      field, value):
    from shared import ledger

    ident = f"cb-{uuid.uuid4().hex[:12]}"
    sid = "SM" + uuid.uuid4().hex  # this id's own message (a SID the index holds for another id is a 409)
    ledger.insert_if_absent("sms", ident, status="sent", attempts=1)
    params = {"MessageSid": sid, "MessageStatus": "undelivered", field: value}
    response, _ = call_function("status_message", signed_form_request("/api/status/message", params,
                                                                      query=f"id={ident}"))
    assert response.status_code == 400, response.get_body()
    assert field.encode() in response.get_body()
    row = ledger.get("sms", ident)
    assert row.status == "sent" and not row.fields.get("error_code")

    params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    response, _ = call_function("status_message", signed_form_request("/api/status/message", params,
                                                                      query=f"id={ident}"))
    assert response.status_code == 204
    assert ledger.get("sms", ident).fields["error_code"] == "30003"


# ---------------------------------------------------------------- the flow walk (/api/voice/node, issue 24)

FALLBACK_TAGS = ["Say", "Hangup"]


@pytest.mark.parametrize("forgery", FORGERY_NAMES)
def test_forged_or_odd_signature_on_the_flow_walk_is_403_without_twiml(call_function, forgery):
    params = {**CALL, "Digits": "1"}
    headers = _forgeries("/api/voice/node?gather=menu", params)[forgery]
    response, _ = call_function("voice_node", post("/api/voice/node", params, headers, query="gather=menu"))
    assert response.status_code == 403 and b"<Response" not in response.get_body()


HOSTILE_NODES = ["../../etc/passwd", quote("../flows.json"), "%2e%2e%2fflows", "menu%00", "menu%0D%0A", "menu%20",
                 quote("ｍｅｎｕ"), "MENU", "__proto__", "constructor", "con", "nul", "a" * 64, "a" * 65, "%",
                 "menu%26gather%3Dmenu", quote("menu\u202e"), "menu%ff", "menu;about", "menu/about", "-", "_"]


@pytest.mark.parametrize("key", ["node", "gather"])
@pytest.mark.parametrize("name", HOSTILE_NODES)
def test_a_hostile_node_name_in_a_signed_walk_is_400_or_the_safe_answer(call_function, key, name):
    query = f"{key}={name}"
    response, _ = call_function("voice_node", signed_form_request("/api/voice/node", {**CALL, "Digits": "1"},
                                                                   query=query))
    root = assert_refused_or_valid_twiml(response)
    if response.status_code != 400:
        assert root is not None and [child.tag for child in root] == FALLBACK_TAGS, response.get_body()


@pytest.mark.parametrize("hostile", list(HOSTILE))
@pytest.mark.parametrize("field", ["Digits", "SpeechResult"])
def test_hostile_input_to_a_walked_gather_gives_parseable_twiml_of_the_menu(call_function, field, hostile):
    params = {**CALL, field: HOSTILE[hostile]}
    response, _ = call_function("voice_node", signed_form_request("/api/voice/node", params, query="gather=menu"))
    root = assert_refused_or_valid_twiml(response)
    assert root is not None and [child.tag for child in root] in (["Say", "Gather"], ["Say", "Hangup"])


@pytest.mark.parametrize("query", ["node=welcome&code=" + quote("a b"), "node=welcome&code=%ZZ",
                                   "node=welcome&x=" + "y" * 4000, "code=abc&node=welcome", "node=welcome&&&"])
def test_signed_query_strings_around_a_node_name_never_break_the_walk(call_function, query):
    response, _ = call_function("voice_node", signed_form_request("/api/voice/node", CALL, query=query))
    root = assert_refused_or_valid_twiml(response)
    assert root is not None and [child.tag for child in root] == ["Say", "Pause", "Gather"]


ECHOED = ["ApiVersion", "From", "To", "Caller", "Called", "Digits", "SpeechResult", "FromCity", "FromState",
          "FromCountry"]


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_every_echoable_parameter_is_spoken_as_bounded_text_only(call_function, set_env, tmp_path, hostile):
    text = " ".join(f"{{param:{name}}}" for name in ECHOED)
    path = tmp_path / "flows.json"
    path.write_text(json.dumps({"version": 1, "voice": {"start": "echo", "nodes": {
        "echo": {"steps": [{"say": text}, {"hangup": True}]}}}}))
    set_env(FLOWS_FILE=str(path))
    value = HOSTILE[hostile] * 10
    params = {**CALL, **{name: value for name in ECHOED}}
    response, _ = call_function("voice_node", signed_form_request("/api/voice/node", params, query="node=echo"))
    root = assert_refused_or_valid_twiml(response)
    assert root is not None and [child.tag for child in root] == FALLBACK_TAGS
    assert list(root[0]) == [] and len(root[0].text or "") <= len(ECHOED) * 65
