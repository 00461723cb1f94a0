"""WhatsApp, Content templates and answering-machine detection end to end: the real sender and webhooks against
Azurite (ledger, opt-outs, queues) and the Twilio fake (which checks the channel parameters as the spec does)."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from shared import ledger, optouts, sender
from tests.conftest import TEST_FROM, signed_form_request
from tests.outbound_helpers import call_queue, poison, row, sms_queue
from tests.twilio_signing import TEST_AUTH_TOKEN

TO = "+14155550100"
WA_TO = "whatsapp:" + TO
TEMPLATE = "HX" + "0123456789abcdef" * 2


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _send_call(fake: Any, **fields: Any) -> tuple[str, Any]:
    ident = uid("amd")
    outcome = sender.process_call(json.dumps({"id": ident, "to": TO, "say": "Your table is ready.", **fields}),
                                  "q", 1)
    assert outcome.result == "sent", outcome
    [request] = [r for r in fake.created("call") if r.send_id == ident]
    return ident, request


def _amd(call_function: Any, request: Any, answered_by: str, call_sid: str | None = None) -> Any:
    """Twilio's AMD callback for ``request``'s call, signed for the URL the app gave Twilio."""
    url = request.first("AsyncAmdStatusCallback")
    path, _, query = url.partition("/api/")[2].partition("?")
    params = {"AccountSid": request.account_sid, "CallSid": call_sid or request.sid, "AnsweredBy": answered_by,
              "MachineDetectionDuration": "2400"}
    response, _ = call_function("status_amd", signed_form_request("/api/" + path, params, query=query))
    return response


# ---------------------------------------------------------------- WhatsApp and templates out


def test_whatsapp_template_goes_out_with_content_sid_and_variables_from_the_whatsapp_sender(outbound_env: Any):
    ident = uid("wa")
    doc = {"id": ident, "to": WA_TO, "content_sid": TEMPLATE, "content_variables": {"2": "3pm", "1": "Ann"}}
    assert sender.process_sms(json.dumps(doc), "q", 1).result == "sent"
    [request] = outbound_env.created("sms")
    assert request.first("To") == WA_TO and request.first("From") == "whatsapp:" + TEST_FROM
    assert request.first("ContentSid") == TEMPLATE
    assert json.loads(request.first("ContentVariables")) == {"1": "Ann", "2": "3pm"}
    assert "Body" not in request.form and "MediaUrl" not in request.form
    assert row("sms", ident).sid == request.sid


def test_whatsapp_free_text_with_media_goes_out_as_body_and_media(outbound_env: Any):
    doc = {"to": WA_TO, "from": "whatsapp:+14155550111", "body": "hi", "media_urls": ["https://e.com/a.png"]}
    assert sender.process_sms(json.dumps(doc), uid("q"), 1).result == "sent"
    [request] = outbound_env.created("sms")
    assert request.first("From") == "whatsapp:+14155550111" and request.first("Body") == "hi"
    assert request.form["MediaUrl"] == ["https://e.com/a.png"] and "ContentSid" not in request.form


def test_a_whatsapp_stop_blocks_whatsapp_sends_but_not_sms_to_the_same_number(outbound_env: Any, call_function):
    number = "+1415555" + str(uuid.uuid4().int)[:4]
    stop = {"MessageSid": "SM" + "1" * 32, "From": "whatsapp:" + number, "To": "whatsapp:" + TEST_FROM,
            "Body": "STOP", "ProfileName": "Ann", "WaId": number[1:]}
    response, inbound = call_function("sms", signed_form_request("/api/sms", stop))
    assert response.status_code == 200 and b"START" in response.get_body()  # we confirm on WhatsApp
    event = json.loads(inbound.get())
    assert (event["channel"], event["keyword"], event["profile_name"]) == ("whatsapp", "STOP", "Ann")
    assert optouts.is_opted_out("whatsapp:" + number) and not optouts.is_opted_out(number)

    blocked = sender.process_sms(json.dumps({"to": "whatsapp:" + number, "body": "x"}), uid("q"), 1)
    assert blocked.code == "opted_out"
    [letter] = poison(sms_queue())
    assert letter["error"]["code"] == "opted_out"
    assert sender.process_sms(json.dumps({"to": number, "body": "x"}), uid("q"), 1).result == "sent"
    assert [r.first("To") for r in outbound_env.created("sms")] == [number]

    start = {**stop, "Body": "START", "MessageSid": "SM" + "2" * 32}
    call_function("sms", signed_form_request("/api/sms", start))
    assert not optouts.is_opted_out("whatsapp:" + number)


def test_a_template_send_in_doubt_is_found_by_recipient_sender_and_time_not_body(outbound_env: Any):
    ident = uid("doubt")
    doc = json.dumps({"id": ident, "to": WA_TO, "content_sid": TEMPLATE})
    outbound_env.fail_next("slow")  # Twilio creates it; we never hear back
    with pytest.raises(sender.RetryLaterError):
        sender.process_sms(doc, "q", 1)
    # Twilio's list shows the rendered template, never our (absent) body.
    [created] = outbound_env.created("sms")
    outbound_env.resources[created.sid]["body"] = "Hello Ann, your table is ready."
    assert row("sms", ident).status == "unknown"
    outcome = sender.process_sms(doc, "q", 2)
    assert (outcome.result, outcome.sid) == ("duplicate", created.sid)
    assert row("sms", ident).fields["resolution"] == "found" and len(outbound_env.created("sms")) == 1


# ---------------------------------------------------------------- calls: asynchronous AMD and the voicemail drop


def test_a_call_with_machine_detection_asks_for_async_amd_with_a_signed_callback(outbound_env: Any):
    ident, request = _send_call(outbound_env, machine_detection=True)
    assert request.first("MachineDetection") == "Enable" and request.first("AsyncAmd") == "true"
    assert request.first("AsyncAmdStatusCallback").endswith(f"/api/status/amd?id={ident}")
    assert request.first("AsyncAmdStatusCallbackMethod") == "POST"


def test_a_person_answering_is_recorded_and_hears_the_call_unchanged(outbound_env: Any, call_function):
    ident, request = _send_call(outbound_env, machine_detection=True, voicemail="Please call us back.")
    assert request.first("MachineDetection") == "DetectMessageEnd"
    response = _amd(call_function, request, "human")
    assert response.status_code == 204
    stored = row("call", ident)
    assert stored.fields["answered_by"] == "human" and not stored.fields.get("voicemail_status")
    assert outbound_env.call_updates() == []


def test_a_machine_gets_the_voicemail_after_the_beep_once(outbound_env: Any, call_function):
    ident, request = _send_call(outbound_env, machine_detection=True, voicemail="Please call us back.",
                                voice="Polly.Joanna")
    assert _amd(call_function, request, "machine_end_beep").status_code == 204
    [update] = outbound_env.call_updates(request.sid)
    root = ET.fromstring(update.first("Twiml"))
    assert [(c.tag, c.text, c.get("voice")) for c in root] == [("Say", "Please call us back.", "Polly.Joanna"),
                                                               ("Hangup", None, None)]
    stored = row("call", ident)
    assert (stored.fields["answered_by"], stored.fields["voicemail_status"]) == ("machine_end_beep", "dropped")
    assert _amd(call_function, request, "machine_end_beep").status_code == 204  # Twilio repeats itself
    assert len(outbound_env.call_updates(request.sid)) == 1


def test_a_machine_without_a_voicemail_is_only_recorded(outbound_env: Any, call_function):
    ident, request = _send_call(outbound_env, machine_detection=True)
    assert _amd(call_function, request, "machine_start").status_code == 204
    assert row("call", ident).fields["answered_by"] == "machine_start" and outbound_env.call_updates() == []


def test_a_call_that_ended_before_the_beep_records_why_the_voicemail_was_not_left(outbound_env: Any, call_function):
    ident, request = _send_call(outbound_env, machine_detection=True, voicemail="Please call us back.")
    outbound_env.end_call(request.sid)
    assert _amd(call_function, request, "machine_end_silence").status_code == 204
    stored = row("call", ident)
    assert stored.fields["voicemail_status"] == "failed" and "21220" in stored.fields["voicemail_error"]


def test_twilio_down_during_the_drop_is_503_and_a_retry_drops_it(outbound_env: Any, call_function):
    ident, request = _send_call(outbound_env, machine_detection=True, voicemail="Please call us back.")
    outbound_env.fail_next("500")
    assert _amd(call_function, request, "machine_end_beep").status_code == 503
    assert not row("call", ident).fields.get("voicemail_status")
    assert _amd(call_function, request, "machine_end_beep").status_code == 204
    assert row("call", ident).fields["voicemail_status"] == "dropped"


def test_amd_result_for_another_call_sid_is_409_and_changes_nothing(outbound_env: Any, call_function):
    ident, request = _send_call(outbound_env, machine_detection=True, voicemail="Please call us back.")
    before = row("call", ident)
    assert _amd(call_function, request, "machine_end_beep", call_sid="CA" + "9" * 32).status_code == 409
    assert row("call", ident).etag == before.etag and outbound_env.call_updates() == []


def test_amd_result_for_an_unknown_id_is_404(outbound_env: Any, call_function):
    params = {"CallSid": "CA" + "9" * 32, "AnsweredBy": "human"}
    response, _ = call_function("status_amd", signed_form_request("/api/status/amd", params,
                                                                  query="id=" + uid("nobody")))
    assert response.status_code == 404


def test_forged_amd_callback_is_403_and_drops_nothing(outbound_env: Any, call_function):
    ident, request = _send_call(outbound_env, machine_detection=True, voicemail="Please call us back.")
    url = request.first("AsyncAmdStatusCallback")
    query = url.partition("?")[2]
    params = {"CallSid": request.sid, "AnsweredBy": "machine_end_beep"}
    forged = signed_form_request("/api/status/amd", params, query=query, token="not-the-auth-token-00000")
    response, _ = call_function("status_amd", forged)
    assert response.status_code == 403 and outbound_env.call_updates() == []
    assert "answered_by" not in row("call", ident).fields


def test_the_fake_posts_a_signed_amd_callback_the_app_accepts(outbound_env: Any, standin_http: Any):
    ident, request = _send_call(outbound_env, machine_detection=True, voicemail="Please call us back.")
    response = outbound_env.post_amd_callback(request, "machine_end_other", token=TEST_AUTH_TOKEN,
                                              deliver_to=standin_http.base_url)
    assert response.status_code == 204
    assert row("call", ident).fields["voicemail_status"] == "dropped"


def test_a_voicemail_call_reused_without_a_voicemail_forgets_the_old_one(outbound_env: Any, call_function):
    ident = uid("reuse")
    invalid = {"id": ident, "to": TO, "say": "x", "machine_detection": True, "voicemail": "old", "timeout": 1}
    assert sender.process_call(json.dumps(invalid), "q", 1).code == "invalid_message"
    assert sender.process_call(json.dumps({"id": ident, "to": TO, "say": "x", "machine_detection": True}),
                               "q2", 1).result == "sent"
    assert not row("call", ident).fields.get("voicemail_twiml")
    assert poison(call_queue())[0]["error"]["code"] == "invalid_message"
    assert ledger.get("call", ident).status == "sent"
