"""Channel rules without peers: the schema's WhatsApp/template/voicemail fields and their content hash, the IVR's
speech mapping, and the TwiML and inbound events the new webhooks produce."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from shared import inbound, outbound, twiml
from shared.webhooks import Params
from tests.conftest import signed_form_request

TO = "+14155550100"
TEMPLATE = "HX" + "ab" * 16
CALL = {"CallSid": "CA" + "1" * 32, "From": "+14155552345", "To": "+15005550006", "ApiVersion": "2010-04-01"}


def test_hashes_of_messages_without_the_new_fields_are_what_earlier_versions_stored():
    # Values computed by the version before channels existed: rows claimed then must not turn into id conflicts.
    sms = outbound.validate("sms", {"id": "h1", "to": TO, "body": "hello", "media_urls": ["https://e.com/a.png"]})
    call = outbound.validate("call", {"id": "h2", "to": TO, "say": "hi", "machine_detection": True})
    assert outbound.content_hash(sms) == "59c9c425124ae14a9763b98b36340d42b9377d39c4558aaa51ad7e2f4984ee74"
    assert outbound.content_hash(call) == "2934bd83088767c203a8593a77c8f02067c7f640864e42b00383e042f169d0e3"


def test_content_hash_covers_template_variables_but_not_their_order():
    def digest(variables: dict[str, str] | None) -> str:
        doc = {"id": "t", "to": TO, "content_sid": TEMPLATE, "content_variables": variables}
        return outbound.content_hash(outbound.validate("sms", doc))

    assert digest({"1": "a", "2": "b"}) == digest({"2": "b", "1": "a"})
    assert len({digest(None), digest({"1": "a"}), digest({"1": "b"}), digest({"2": "a"})}) == 4


def test_content_hash_covers_the_voicemail():
    def digest(voicemail: str | None) -> str:
        doc = {"id": "v", "to": TO, "say": "hi", "machine_detection": True, "voicemail": voicemail}
        return outbound.content_hash(outbound.validate("call", doc))

    assert len({digest(None), digest("call us"), digest("call us back")}) == 3


def test_content_variables_go_to_twilio_as_a_json_object_of_strings():
    message = outbound.validate("sms", {"id": "t", "to": "whatsapp:" + TO, "content_sid": TEMPLATE,
                                        "content_variables": {"name": "Zoë \"Z\"", "1": "🎉"}})
    assert json.loads(message.content_variables_json()) == {"name": "Zoë \"Z\"", "1": "🎉"}
    assert message.is_whatsapp and message.body is None and message.media_urls == ()


def test_voice_and_language_apply_to_the_voicemail_too():
    message = outbound.validate("call", {"id": "v", "to": TO, "url": "https://e.com/t", "machine_detection": True,
                                         "voicemail": "Call us back & soon", "voice": "alice", "language": "en-GB"})
    root = ET.fromstring(outbound.voicemail_twiml(message))
    assert [(c.tag, c.text, c.get("voice"), c.get("language")) for c in root] == [
        ("Say", "Call us back & soon", "alice", "en-GB"), ("Hangup", None, None, None)]


@pytest.mark.parametrize(("speech", "digit"), [
    ("one", "1"), ("1", "1"), ("Information, please.", "1"), ("TWO!", "2"), ("I'd like to leave a message", "2"),
    ("voice mail", "2"), ("zero", "0"), ("Operator", "0"), ("can I talk to a person", "0"),
    ("one or two", twiml.NOT_AN_OPTION), ("banana", twiml.NOT_AN_OPTION), ("someone11", twiml.NOT_AN_OPTION),
    ("", twiml.NOT_AN_OPTION), ("ｔｗｏ", twiml.NOT_AN_OPTION), ("message " * 200 + "one", "2"),
])
def test_speech_is_mapped_to_the_one_digit_it_names(speech, digit):
    assert twiml.digit_for_speech(speech) == digit


def test_the_menu_gathers_digits_and_speech_with_hints():
    root = ET.fromstring(twiml.incoming_call("Hi"))
    gather = root.find("Gather")
    assert gather.get("input") == "dtmf speech" and gather.get("numDigits") == "1"
    hints = {h.strip() for h in gather.get("hints").split(",")}
    assert {"one", "two", "zero", "message", "operator"} <= hints


@pytest.mark.parametrize("speech", ["two please", "operator", "mumble"])
def test_speech_answers_the_menu_like_the_digit(call_function, speech):
    by_speech, _ = call_function("voice_menu", signed_form_request(
        "/api/voice/menu", {**CALL, "SpeechResult": speech, "Confidence": "0.8"}))
    digit = twiml.digit_for_speech(speech)
    by_digit, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": digit}))
    assert by_speech.status_code == 200 and by_speech.get_body() == by_digit.get_body()


def test_digits_win_over_speech_when_twilio_sends_both(call_function):
    response, _ = call_function("voice_menu", signed_form_request(
        "/api/voice/menu", {**CALL, "Digits": "1", "SpeechResult": "two"}))
    assert "API version" in ET.fromstring(response.get_body())[0].text


def test_the_voicemail_record_reports_its_recording_status_to_the_signed_route(call_function):
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": "2"}))
    record = ET.fromstring(response.get_body()).find("Record")
    assert record.get("recordingStatusCallback") == "https://switchboard.example.net/api/status/recording"
    assert record.get("recordingStatusCallbackEvent") == "completed absent"


def test_recording_status_goes_on_the_inbound_queue_as_an_event(call_function):
    params = {**CALL, "RecordingSid": "RE" + "2" * 32, "RecordingUrl": "https://api.twilio.com/r/RE2",
              "RecordingStatus": "completed", "RecordingDuration": "7"}
    response, box = call_function("status_recording", signed_form_request("/api/status/recording", params))
    assert response.status_code == 204
    event = json.loads(box.get())
    assert (event["type"], event["recording_status"], event["call_sid"]) == ("recording_status", "completed",
                                                                              CALL["CallSid"])


def test_inbound_whatsapp_gets_twiml_and_an_event_with_its_channel(call_function, set_env):
    set_env(SMS_AUTO_REPLY="Thanks!")
    params = {"MessageSid": "SM" + "3" * 32, "From": "whatsapp:+14155552345", "To": "whatsapp:+15005550006",
              "Body": "hello", "ProfileName": "Ann", "WaId": "14155552345", "NumMedia": "0"}
    response, box = call_function("sms", signed_form_request("/api/sms", params))
    message = ET.fromstring(response.get_body()).find("Message")
    assert message is not None and message.text == "Thanks!"
    event = json.loads(box.get())
    assert (event["channel"], event["from"], event["wa_id"]) == ("whatsapp", "whatsapp:+14155552345", "14155552345")


def test_inbound_sms_events_say_their_channel_is_sms():
    result = inbound.handle_sms(Params({"From": ["+14155552345"], "Body": ["hi"]}))
    event = json.loads(result.event)
    assert event["channel"] == "sms" and "wa_id" not in event
