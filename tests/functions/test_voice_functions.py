"""Voice routes through the indexed functions, TwiML checked verb by verb."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.conftest import http_request, signed_form_request

CALL = {"CallSid": "CA" + "1" * 32, "From": "+14155552345", "To": "+15005550006", "ApiVersion": "2010-04-01"}


def verbs(response) -> list[ET.Element]:
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.get_body())
    assert root.tag == "Response"
    return list(root)


def test_incoming_call_greets_pauses_and_gathers_one_digit_for_the_menu(call_function):
    response, _ = call_function("voice", signed_form_request("/api/voice", CALL))
    say, pause, gather = verbs(response)
    assert (say.tag, say.text) == ("Say", "Hello from Azure!")
    assert pause.tag == "Pause"
    assert gather.tag == "Gather"
    assert gather.get("numDigits") == "1"
    assert gather.get("action") == "/api/voice/menu"
    assert gather.get("method") == "POST"
    assert gather.get("actionOnEmptyResult") == "true"
    assert "Press 1" in gather.find("Say").text


def test_greeting_comes_from_the_voice_greeting_setting_and_stays_text(call_function, set_env):
    set_env(VOICE_GREETING="Hi <there> & welcome")
    response, _ = call_function("voice", signed_form_request("/api/voice", CALL))
    assert verbs(response)[0].text == "Hi <there> & welcome"


def test_menu_1_says_the_calls_api_version_and_the_app_name_then_hangs_up(call_function):
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": "1"}))
    tags = [v.tag for v in verbs(response)]
    assert tags == ["Say", "Pause", "Say", "Hangup"]
    first = verbs(response)[0].text
    assert "2010-04-01" in first and "switchboard" in first


def test_menu_2_records_a_voicemail_posting_to_recorded(call_function):
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": "2"}))
    record = next(v for v in verbs(response) if v.tag == "Record")
    assert record.get("action") == "/api/voice/recorded"
    assert record.get("method") == "POST"
    assert int(record.get("maxLength")) > 0


def test_menu_0_dials_the_forward_number_when_set(call_function, set_env):
    set_env(FORWARD_TO_NUMBER="+14155550100")
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": "0"}))
    dial = next(v for v in verbs(response) if v.tag == "Dial")
    assert dial.text == "+14155550100"


def test_menu_0_without_forward_number_repeats_the_menu(call_function):
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": "0"}))
    tags = [v.tag for v in verbs(response)]
    assert "Dial" not in tags and tags[-1] == "Gather"


@pytest.mark.parametrize("digits", ["7", "9", "#", "*"])
def test_any_other_digit_repeats_the_menu(call_function, digits):
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": digits}))
    say, gather = verbs(response)
    assert "not an option" in say.text
    assert gather.tag == "Gather" and gather.get("action") == "/api/voice/menu"


@pytest.mark.parametrize("params", [{**CALL, "Digits": ""}, CALL])
def test_no_input_says_goodbye_and_hangs_up(call_function, params):
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", params))
    say, hangup = verbs(response)
    assert "Goodbye" in say.text and hangup.tag == "Hangup"


def test_recorded_thanks_the_caller_hangs_up_and_hands_the_recording_on(call_function):
    params = {**CALL, "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
              "RecordingSid": "RE" + "2" * 32, "RecordingDuration": "7"}
    response, inbound = call_function("voice_recorded", signed_form_request("/api/voice/recorded", params))
    say, hangup = verbs(response)
    assert "Thank you" in say.text and hangup.tag == "Hangup"
    import json

    event = json.loads(inbound.get())
    assert event["type"] == "voicemail"
    assert event["recording_url"] == params["RecordingUrl"]
    assert event["call_sid"] == CALL["CallSid"]
    assert event["from"] == CALL["From"]


@pytest.mark.parametrize("name, path", [("voice", "/api/voice"), ("voice_menu", "/api/voice/menu"),
                                        ("voice_recorded", "/api/voice/recorded"), ("sms", "/api/sms")])
def test_unsigned_request_gets_403_and_no_twiml(call_function, name, path):
    req = http_request("POST", path, body=b"From=%2B14155552345&Digits=1",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    response, inbound = call_function(name, req)
    assert response.status_code == 403
    assert b"<Response" not in response.get_body()
    assert inbound.get() is None


def test_forged_signature_is_rejected_with_403(call_function):
    req = signed_form_request("/api/voice", CALL, token="not-the-real-token")
    response, _ = call_function("voice", req)
    assert response.status_code == 403
    assert b"<" not in response.get_body()


def test_tampered_parameter_is_rejected_with_403(call_function):
    req = signed_form_request("/api/voice/menu", {**CALL, "Digits": "1"})
    tampered = req.get_body().replace(b"Digits=1", b"Digits=0")
    from tests.conftest import http_request as build

    forged = build("POST", "/api/voice/menu", body=tampered, headers=dict(req.headers))
    response, _ = call_function("voice_menu", forged)
    assert response.status_code == 403


def test_signature_for_another_url_is_rejected_with_403(call_function):
    req = signed_form_request("/api/voice", CALL)
    moved = http_request("POST", "/api/voice/menu", body=req.get_body(), headers=dict(req.headers))
    response, _ = call_function("voice_menu", moved)
    assert response.status_code == 403


def test_dropping_the_function_key_from_the_query_breaks_the_signature(call_function):
    req = signed_form_request("/api/voice", CALL, query="code=secretkey")
    assert call_function("voice", req)[0].status_code == 200
    dropped = http_request("POST", "/api/voice", body=req.get_body(), headers=dict(req.headers))
    assert call_function("voice", dropped)[0].status_code == 403


def test_call_signed_with_a_webhook_rules_shared_key_and_sha256_is_answered(call_function):
    req = signed_form_request("/api/voice", CALL, algorithm="HMAC_SHA256", shared_key=True)
    response, _ = call_function("voice", req)
    assert verbs(response)[0].tag == "Say"


def test_no_auth_token_configured_answers_503_naming_nothing_secret(call_function, monkeypatch, set_env, caplog):
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    set_env()
    response, _ = call_function("voice", signed_form_request("/api/voice", CALL))
    assert response.status_code == 503
    assert "TWILIO_AUTH_TOKEN" in caplog.text
