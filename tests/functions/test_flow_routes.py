"""A team's own flow file served by the signed voice routes and the SMS route (the README's clinic example).

What a caller hears is asserted verb by verb; a broken file, an unknown node and a hostile node name must each
give the caller a safe answer or a 4xx, never a 500, and a broken file is logged once, not per call.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import pytest

from shared import inbound, twiml
from tests.conftest import ROOT, TEST_FROM, http_request, signed_form_request
from tests.twilio_signing import sign_form

CALL = {"CallSid": "CA" + "5" * 32, "From": "+14155552345", "To": "+15005550006", "ApiVersion": "2010-04-01"}
SMS = {"MessageSid": "SM" + "6" * 32, "From": "+14155552345", "To": "+15005550006", "NumMedia": "0"}
RECEPTION = "+14155550123"
HOURS = "We are open Monday to Friday, 8 am to 6 pm, and Saturday 9 am to noon."


def clinic() -> dict[str, Any]:
    section = (ROOT / "README.md").read_text().split("\n## Phone menus and keywords\n", 1)[1]
    return json.loads(section.split("```json\n", 1)[1].split("\n```", 1)[0])


@pytest.fixture
def use_flow(tmp_path: Path, set_env: Callable[..., None]) -> Callable[[Any], Path]:
    """Point FLOWS_FILE at a file holding ``document`` (a dict, or raw text)."""

    def apply(document: Any, **env: str) -> Path:
        path = tmp_path / "flows.json"
        path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
        set_env(FLOWS_FILE=str(path), **env)
        return path

    return apply


def verbs(response) -> list[ET.Element]:
    assert response.status_code == 200, response.get_body()
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.get_body())
    assert root.tag == "Response"
    return list(root)


def walk(call_function, query: str, **params: str):
    return call_function("voice_node", signed_form_request("/api/voice/node", {**CALL, **params}, query=query))


def said(elements: list[ET.Element]) -> list[str]:
    return [e.text or "" for e in elements if e.tag == "Say"]


# ---------------------------------------------------------------- the clinic, call by call


def test_the_call_enters_the_files_start_node_and_asks_its_question(call_function, use_flow):
    use_flow(clinic())
    say, gather = verbs(call_function("voice", signed_form_request("/api/voice", CALL))[0])
    assert (say.text, say.get("voice")) == ("Thank you for calling Riverside Clinic.", "Polly.Joanna")
    assert gather.get("action") == "/api/voice/node?gather=main"
    assert gather.get("input") == "dtmf speech" and gather.get("numDigits") == "1"
    assert gather.get("actionOnEmptyResult") == "true"
    assert gather.get("hints") == "hours, opening hours, open, message, voicemail, reception, someone, person"
    assert gather.find("Say").text.startswith("For our opening hours, press 1")


@pytest.mark.parametrize("answer", [{"Digits": "1"}, {"SpeechResult": "Opening hours, please."},
                                    {"SpeechResult": "HOURS"}, {"Digits": "1", "SpeechResult": "reception"}])
def test_pressing_1_or_asking_for_the_hours_says_them_and_asks_again(call_function, use_flow, answer):
    use_flow(clinic())
    elements = verbs(walk(call_function, "gather=main", **answer)[0])
    assert [e.tag for e in elements] == ["Say", "Pause", "Gather"]
    assert elements[0].text == HOURS
    assert elements[2].get("action") == "/api/voice/node?gather=main"


def test_2_records_a_voicemail_that_goes_to_the_inbound_queue(call_function, use_flow):
    use_flow(clinic())
    elements = verbs(walk(call_function, "gather=main", Digits="2")[0])
    assert [e.tag for e in elements] == ["Say", "Record", "Say", "Hangup"]
    record = elements[1]
    assert (record.get("action"), record.get("maxLength"), record.get("finishOnKey")) == (
        "/api/voice/recorded", "180", "#")
    assert record.get("recordingStatusCallback") == "https://switchboard.example.net/api/status/recording"


def test_0_dials_reception_from_its_setting_with_caller_id_and_timeout_then_offers_a_message(call_function,
                                                                                           use_flow):
    use_flow(clinic(), FLOW_RECEPTION_NUMBER=RECEPTION)
    elements = verbs(walk(call_function, "gather=main", Digits="0")[0])
    assert [e.tag for e in elements] == ["Say", "Dial", "Say", "Redirect"]
    dial = elements[1]
    assert (dial.text, dial.get("callerId"), dial.get("timeout")) == (RECEPTION, TEST_FROM, "25")
    assert (elements[3].text, elements[3].get("method")) == ("/api/voice/node?node=message", "POST")


def test_0_while_reception_has_no_number_goes_straight_to_the_message(call_function, use_flow):
    use_flow(clinic())
    elements = verbs(walk(call_function, "gather=main", Digits="0")[0])
    assert said(elements)[:2] == ["Reception is closed right now.",
                                  "Please leave your name, your date of birth and a short message after the beep."]
    assert "Dial" not in [e.tag for e in elements] and elements[-1].tag == "Hangup"


def test_the_redirect_into_a_node_plays_that_node(call_function, use_flow):
    use_flow(clinic())
    elements = verbs(walk(call_function, "node=message")[0])
    assert [e.tag for e in elements] == ["Say", "Record", "Say", "Hangup"]


@pytest.mark.parametrize("answer", [{"Digits": "7"}, {"Digits": "#"}, {"SpeechResult": "hours or reception"},
                                    {"SpeechResult": "bananas"}])
def test_anything_else_is_sorry_and_the_question_again(call_function, use_flow, answer):
    use_flow(clinic())
    elements = verbs(walk(call_function, "gather=main", **answer)[0])
    assert said(elements) == ["Sorry, I did not catch that."] and elements[-1].tag == "Gather"


@pytest.mark.parametrize("answer", [{}, {"Digits": ""}, {"SpeechResult": "  "}])
def test_silence_says_goodbye_with_the_apps_name_and_hangs_up(call_function, use_flow, answer):
    use_flow(clinic())
    say, hangup = verbs(walk(call_function, "gather=main", **answer)[0])
    assert say.text == "Thank you for calling switchboard. Goodbye." and hangup.tag == "Hangup"


def test_a_gather_without_default_or_no_input_repeats_its_node_and_hangs_up_on_silence(call_function, use_flow):
    use_flow({"version": 1, "voice": {"start": "ask", "nodes": {
        "ask": {"steps": [{"say": "Hello."}, {"gather": {"prompt": [{"say": "Press 5."}],
                                                          "branches": [{"digits": "5", "goto": "end"}]}}]},
        "end": {"steps": [{"say": "Bye."}, {"hangup": True}]}}}})
    again = verbs(walk(call_function, "gather=ask", Digits="4")[0])
    assert [e.tag for e in again] == ["Say", "Gather"] and again[0].text == "Hello."
    assert [e.tag for e in verbs(walk(call_function, "gather=ask")[0])] == ["Hangup"]


def test_play_pause_enqueue_and_speech_only_gathers_are_served(call_function, use_flow):
    use_flow({"version": 1, "voice": {"start": "ask", "nodes": {
        "ask": {"steps": [{"play": {"url": "https://example.com/chime.mp3", "loop": 2}}, {"pause": 2},
                          {"gather": {"input": "speech", "language": "es-ES", "speech_timeout": 3,
                                      "hints": ["cola", "adiós"],
                                      "prompt": [{"say": {"text": "¿Cola o adiós?", "language": "es-ES"}}],
                                      "branches": [{"words": ["cola"], "goto": "line"},
                                                   {"words": ["adiós", "sí, adiós"], "goto": "end"}]}}]},
        "line": {"steps": [{"enqueue": {"name": "reception", "wait_url": "https://example.com/hold"}}]},
        "end": {"steps": [{"hangup": True}]}}}})
    play, pause, gather = verbs(call_function("voice", signed_form_request("/api/voice", CALL))[0])
    assert (play.text, play.get("loop"), pause.get("length")) == ("https://example.com/chime.mp3", "2", "2")
    assert (gather.get("input"), gather.get("speechTimeout"), gather.get("hints")) == ("speech", "3", "cola, adiós")
    assert gather.get("numDigits") is None and gather.find("Say").get("language") == "es-ES"
    enqueue, = verbs(walk(call_function, "gather=ask", SpeechResult="La cola, por favor")[0])
    assert (enqueue.tag, enqueue.text, enqueue.get("waitUrl")) == ("Enqueue", "reception", "https://example.com/hold")
    assert [e.tag for e in verbs(walk(call_function, "gather=ask", SpeechResult="ADIÓS")[0])] == ["Hangup"]
    # a speech-only gather hears no keys: a key press is "anything else", the node again
    assert verbs(walk(call_function, "gather=ask", Digits="1")[0])[0].tag == "Play"


def test_placeholder_values_are_spoken_as_text_never_as_markup_or_placeholders(call_function, use_flow):
    use_flow({"version": 1, "voice": {"start": "hi", "nodes": {"hi": {"steps": [
        {"say": "{setting:FLOW_GREETING|Hi} {param:FromCity|somewhere}. {{not a placeholder}}"},
        {"hangup": True}]}}}}, FLOW_GREETING="<Dial>+19005550000</Dial> {param:From}")
    params = {**CALL, "FromCity": "</Say><Redirect>https://evil.example</Redirect>&amp;" + "x" * 100}
    say, hangup = verbs(call_function("voice", signed_form_request("/api/voice", params))[0])
    assert say.text == ("<Dial>+19005550000</Dial> {param:From} </Say><Redirect>https://evil.example</Redirect>"
                        "&amp;" + "x" * (64 - 52) + ". {not a placeholder}")
    assert hangup.tag == "Hangup"


def test_the_menu_route_answers_the_node_named_menu_of_any_file(call_function, use_flow):
    use_flow({"version": 1, "voice": {"start": "menu", "nodes": {
        "menu": {"steps": [{"gather": {"branches": [{"digits": "3", "goto": "three"}]}}]},
        "three": {"steps": [{"say": "Three."}, {"hangup": True}]}}}})
    gather, = verbs(call_function("voice", signed_form_request("/api/voice", CALL))[0])
    assert gather.get("action") == "/api/voice/menu"
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": "3"}))
    assert said(verbs(response)) == ["Three."]


# ---------------------------------------------------------------- safe answers


def assert_fallback(response) -> None:
    say, hangup = verbs(response)
    assert (say.text, hangup.tag) == (twiml.UNAVAILABLE, "Hangup")


def test_a_broken_file_is_refused_with_one_log_line_and_every_call_gets_sorry_and_goodbye(call_function, use_flow,
                                                                                       caplog):
    document = clinic()
    document["voice"]["nodes"]["main"]["steps"][0]["gather"]["branches"][0]["goto"] = "hours2"
    path = use_flow(document)
    caplog.set_level(logging.INFO, logger="switchboard.flows")
    assert_fallback(call_function("voice", signed_form_request("/api/voice", CALL))[0])
    assert_fallback(walk(call_function, "gather=main", Digits="1")[0])
    assert_fallback(call_function("voice_menu", signed_form_request("/api/voice/menu", CALL))[0])
    lines = [r.getMessage() for r in caplog.records if r.name == "switchboard.flows" or r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines  # one line for the file, none per call
    assert str(path) in lines[0] and "unknown node 'hours2'" in lines[0] and "refused" in lines[0]


def test_a_missing_file_gives_every_call_the_safe_answer(call_function, set_env, tmp_path):
    set_env(FLOWS_FILE=str(tmp_path / "not-deployed.json"))
    assert_fallback(call_function("voice", signed_form_request("/api/voice", CALL))[0])


def test_a_node_the_file_does_not_have_gets_the_safe_answer(call_function, use_flow):
    use_flow(clinic())
    assert_fallback(walk(call_function, "node=renamed_in_the_last_deploy")[0])
    assert_fallback(walk(call_function, "gather=hours")[0])  # a node without a gather has nothing to answer
    assert_fallback(call_function("voice_menu", signed_form_request("/api/voice/menu", {**CALL, "Digits": "1"}))[0])


@pytest.mark.parametrize("query", ["", "node=", "gather=", "node=a&gather=a", "node=main&node=hours", "node=..%2Fx",
                                   "node=" + "a" * 65, "node=main%0A", "node=ma%20in", "nodes=main", "gather=%00",
                                   "node=%EF%BD%8D%EF%BD%81%EF%BD%89%EF%BD%8E"])
def test_a_query_that_does_not_name_one_node_is_400_without_twiml(call_function, use_flow, query):
    use_flow(clinic())
    response, _ = walk(call_function, query)
    assert response.status_code == 400 and b"<Response" not in response.get_body()


def test_the_signature_covers_the_node_so_a_signed_request_cannot_be_steered_to_another(call_function, use_flow):
    use_flow(clinic())
    req = signed_form_request("/api/voice/node", CALL, query="node=hours")
    assert walk(call_function, "node=hours")[0].status_code == 200
    moved = http_request("POST", "/api/voice/node", body=req.get_body(), query="node=message",
                         headers=dict(req.headers))
    response, _ = call_function("voice_node", moved)
    assert response.status_code == 403 and b"<Response" not in response.get_body()


def test_an_unsigned_walk_is_403(call_function, use_flow):
    use_flow(clinic())
    req = http_request("POST", "/api/voice/node", query="node=hours", body=b"Digits=1",
                       headers={"Content-Type": "application/x-www-form-urlencoded",
                                "X-Twilio-Signature": sign_form("https://switchboard.example.net/api/voice/node",
                                                                {"Digits": "1"})})
    assert call_function("voice_node", req)[0].status_code == 403


# ---------------------------------------------------------------- SMS keywords


def reply_to(call_function, body: str) -> str | None:
    response, box = call_function("sms", signed_form_request("/api/sms", {**SMS, "Body": body}))
    assert response.status_code == 200
    assert json.loads(box.get())["body"] == body  # every message still reaches the inbound queue
    message = ET.fromstring(response.get_body()).find("Message")
    return None if message is None else message.text


@pytest.mark.parametrize("body", ["HOURS", "hours", " Hours? ", "ＨＯＵＲＳ", "\u200bhours\u200d", "«hours»"])
def test_a_keyword_gets_its_reply_whatever_its_case_width_or_punctuation(call_function, use_flow, body):
    use_flow(clinic(), SMS_AUTO_REPLY="Thanks, we will reply soon.")
    assert reply_to(call_function, body) == "Riverside Clinic: Mon-Fri 8am-6pm, Sat 9am-noon."


@pytest.mark.parametrize("body", ["what are your hours", "hours please", "HOURSS", ""])
def test_any_other_message_gets_the_auto_reply(call_function, use_flow, body):
    use_flow(clinic(), SMS_AUTO_REPLY="Thanks, we will reply soon.")
    assert reply_to(call_function, body) == "Thanks, we will reply soon."


def test_help_stays_the_compliant_help_text_with_a_flow_file(call_function, use_flow):
    use_flow(clinic(), SMS_AUTO_REPLY="Thanks")
    assert reply_to(call_function, "help") == inbound.HELP_TEXT


def test_a_keyword_reply_can_carry_a_setting(call_function, use_flow):
    use_flow({"version": 1, "voice": {"start": "a", "nodes": {"a": {"steps": [{"hangup": True}]}}},
              "sms": {"keywords": {"CALL": "Call us on {setting:TWILIO_FROM_NUMBER} ({app:name})."}}})
    assert reply_to(call_function, "call") == f"Call us on {TEST_FROM} (switchboard)."


def test_sms_still_gets_the_auto_reply_when_the_flow_file_is_refused(call_function, use_flow):
    use_flow("{not json", SMS_AUTO_REPLY="Thanks")
    assert reply_to(call_function, "hours") == "Thanks"
