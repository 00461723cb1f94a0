"""The shipped flows.json is today's menu: every answer the routes give from it is, byte for byte, what the menu
in code (shared.twiml.incoming_call / menu_choice, served before the flow file) answers to the same call."""

from __future__ import annotations

import json

import pytest

from shared import flows, twiml
from tests.conftest import ROOT, signed_form_request
from tests.twilio_signing import PUBLIC_BASE_URL

CALL = {"CallSid": "CA" + "1" * 32, "From": "+14155552345", "To": "+15005550006", "ApiVersion": "2010-04-01"}
HOSTILE_VERSION = "</Say><Dial>+19005550000</Dial>\x00\ufffe" + "9" * 80


def code_menu_answer(params: dict[str, str], forward_to: str) -> str:
    """What /api/voice/menu answered before the flow file (the route's own digit/speech rule, then menu_choice)."""
    digits = params.get("Digits", "").strip()
    speech = params.get("SpeechResult", "").strip()
    if not digits and speech:
        digits = twiml.digit_for_speech(speech)
    return twiml.menu_choice(digits, params.get("ApiVersion", ""), forward_to, PUBLIC_BASE_URL)


@pytest.mark.parametrize("greeting", [None, "Welcome to the clinic", "Hi <there> & {param:From} {{x}}\x07"])
def test_incoming_call_from_the_shipped_file_is_the_code_menus_greeting_and_menu(call_function, set_env, greeting):
    if greeting is not None:
        set_env(VOICE_GREETING=greeting)
    response, _ = call_function("voice", signed_form_request("/api/voice", CALL))
    expected = twiml.incoming_call(greeting if greeting is not None else "Hello from Azure!")
    assert response.get_body().decode() == expected


ANSWERS = [{"Digits": d} for d in ("1", "2", "0", "", " ", "7", "9", "#", "*", "?", "12", "1 ")] + [
    {"SpeechResult": s} for s in ("one", "Two please", "operator", "one or two", "mumble", "ｔｗｏ", "voice mail",
                                  "message " * 100 + "one", "  ")] + [
    {"Digits": "1", "SpeechResult": "two"}, {}, {"Digits": "1", "ApiVersion": HOSTILE_VERSION},
    {"Digits": "1", "ApiVersion": ""}]


@pytest.mark.parametrize("forward_to", ["", "+14155550100"])
@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: json.dumps(a, ensure_ascii=True)[:60])
def test_every_menu_answer_from_the_shipped_file_is_the_code_menus(call_function, set_env, forward_to, answer):
    if forward_to:
        set_env(FORWARD_TO_NUMBER=forward_to)
    params = {**CALL, **answer}
    response, _ = call_function("voice_menu", signed_form_request("/api/voice/menu", params))
    assert response.status_code == 200
    assert response.get_body().decode() == code_menu_answer(params, forward_to)


def test_the_shipped_file_is_the_default_flows_file_and_valid_against_the_published_schema():
    import jsonschema

    assert flows.flows_path("") == ROOT / "flows.json"
    schema = json.loads((ROOT / "flows.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(json.loads((ROOT / "flows.json").read_text()))
