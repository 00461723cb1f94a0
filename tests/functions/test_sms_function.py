"""/api/sms through the indexed function: replies and the inbound-queue event (no storage needed here)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import signed_form_request

SMS = {"MessageSid": "SM" + "a" * 32, "AccountSid": "AC" + "0" * 32, "From": "+14155552345",
       "To": "+15005550006", "Body": "Hello there", "NumMedia": "0"}


def message_texts(response) -> list[str]:
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.get_body())
    assert root.tag == "Response"
    return [m.text for m in root.findall("Message")]


def test_ordinary_sms_gets_an_empty_response_by_default(call_function):
    response, _ = call_function("sms", signed_form_request("/api/sms", SMS))
    assert message_texts(response) == []


def test_auto_reply_setting_answers_ordinary_sms(call_function, set_env):
    set_env(SMS_AUTO_REPLY="Thanks, we got it & will reply <soon>")
    response, _ = call_function("sms", signed_form_request("/api/sms", SMS))
    assert message_texts(response) == ["Thanks, we got it & will reply <soon>"]


@pytest.mark.parametrize("body", ["HELP", "help", " Info "])
def test_help_keyword_gets_the_help_text(call_function, body):
    response, inbound = call_function("sms", signed_form_request("/api/sms", {**SMS, "Body": body}))
    (text,) = message_texts(response)
    assert "STOP" in text and "START" in text
    assert json.loads(inbound.get())["keyword"] in ("HELP", "INFO")


def test_every_inbound_sms_becomes_an_event_with_its_media(call_function):
    params = {**SMS, "NumMedia": "2", "MediaUrl0": "https://api.twilio.com/m/0",
              "MediaContentType0": "image/jpeg", "MediaUrl1": "https://api.twilio.com/m/1",
              "MediaContentType1": "image/png"}
    _, inbound = call_function("sms", signed_form_request("/api/sms", params))
    event = json.loads(inbound.get())
    assert event["type"] == "sms"
    assert (event["from"], event["to"], event["body"], event["message_sid"]) == (
        SMS["From"], SMS["To"], SMS["Body"], SMS["MessageSid"])
    assert event["media"] == [{"url": "https://api.twilio.com/m/0", "content_type": "image/jpeg"},
                              {"url": "https://api.twilio.com/m/1", "content_type": "image/png"}]
    assert event["received_at"].endswith("Z")


def test_sms_without_from_is_a_400(call_function):
    params = {k: v for k, v in SMS.items() if k != "From"}
    response, inbound = call_function("sms", signed_form_request("/api/sms", params))
    assert response.status_code == 400 and b"From" in response.get_body()
    assert inbound.get() is None


def test_non_numeric_num_media_is_a_400(call_function):
    response, _ = call_function("sms", signed_form_request("/api/sms", {**SMS, "NumMedia": "lots"}))
    assert response.status_code == 400


def test_stop_with_storage_down_is_a_503_not_a_500(call_function):
    # conftest points AzureWebJobsStorage at a closed port unless a test asks for Azurite.
    response, inbound = call_function("sms", signed_form_request("/api/sms", {**SMS, "Body": "STOP"}))
    assert response.status_code == 503
    assert inbound.get() is None
