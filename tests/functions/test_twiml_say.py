"""/api/twiml/say: our own twimlets/message."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.conftest import http_request
from tests.twilio_signing import PUBLIC_BASE_URL, sign_form
from tests.conftest import signed_form_request


def signed_get(query: str):
    sig = sign_form(f"{PUBLIC_BASE_URL}/api/twiml/say?{query}", {})
    return http_request("GET", "/api/twiml/say", query=query, headers={"X-Twilio-Signature": sig})


def says(response) -> list[ET.Element]:
    assert response.status_code == 200, response.get_body()
    root = ET.fromstring(response.get_body())
    assert all(child.tag == "Say" for child in root)
    return list(root)


def test_one_say_per_message_parameter(call_function):
    response, _ = call_function("twiml_say", signed_get("Message=Hello&Message=World"))
    assert [s.text for s in says(response)] == ["Hello", "World"]


def test_indexed_messages_are_said_in_index_order_not_arrival_order(call_function):
    query = "Message%5B2%5D=third&Message%5B0%5D=first&Message%5B10%5D=eleventh&Message%5B1%5D=second"
    response, _ = call_function("twiml_say", signed_get(query))
    assert [s.text for s in says(response)] == ["first", "second", "third", "eleventh"]


def test_voice_and_language_apply_to_every_say(call_function):
    response, _ = call_function("twiml_say", signed_get("Message=Hola&Voice=Polly.Conchita&Language=es-ES"))
    (say,) = says(response)
    assert (say.get("voice"), say.get("language"), say.text) == ("Polly.Conchita", "es-ES", "Hola")


def test_xml_special_characters_in_messages_stay_text(call_function):
    text = '<Hangup/> & "quotes" </Say><Dial>+1900</Dial>'
    response, _ = call_function("twiml_say", signed_form_request("/api/twiml/say", {"Message": text}))
    (say,) = says(response)
    assert say.text == text
    assert ET.fromstring(response.get_body()).find("Dial") is None


def test_post_form_works_like_get(call_function):
    response, _ = call_function("twiml_say", signed_form_request("/api/twiml/say", {"Message[0]": "a", "Message[1]": "b"}))
    assert [s.text for s in says(response)] == ["a", "b"]


def test_no_message_is_a_400_naming_the_parameter(call_function):
    response, _ = call_function("twiml_say", signed_get("Voice=alice"))
    assert response.status_code == 400
    assert b"Message" in response.get_body()


def test_non_numeric_index_is_a_400(call_function):
    response, _ = call_function("twiml_say", signed_get("Message%5Bx%5D=hi"))
    assert response.status_code == 400


def test_unsigned_get_is_rejected_with_403(call_function):
    response, _ = call_function("twiml_say", http_request("GET", "/api/twiml/say", query="Message=hi"))
    assert response.status_code == 403
