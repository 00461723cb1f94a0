"""The app's metrics recorded by the real send path and webhooks (Azurite, the Twilio fake), read through an
in-memory OpenTelemetry reader: names, units and attributes, and never a phone number, SID or secret in one."""

from __future__ import annotations

import json
import re
from typing import Any

from shared import optouts, sender, telemetry
from tests.conftest import TEST_AUTH_TOKEN, http_request, signed_form_request
from tests.outbound_helpers import fresh_number, twilio_unreachable

NUMBER_OR_SECRET = re.compile(r"\d{6,}|\+\d|[0-9a-f]{32}", re.I)


def _counts(points: Any, name: str) -> dict[tuple[tuple[str, Any], ...], int]:
    return {tuple(sorted(a.items())): p.value for a, p in points(name)}


def test_a_send_counts_one_sent_sms_and_times_the_create_with_its_status(outbound_env: Any,
                                                                         metric_points: Any) -> None:
    assert sender.process_sms(json.dumps({"id": "m-sent", "to": fresh_number(), "body": "hi"}), "q", 1).result == \
        "sent"
    assert _counts(metric_points, telemetry.SENDS) == {(("channel", "sms"), ("outcome", "sent")): 1}
    [(attributes, point)] = metric_points(telemetry.TWILIO_DURATION)
    assert attributes == {"operation": "messages.create", "http.response.status_code": 201}
    assert point.count == 1 and 0 < point.sum < 10


def test_dead_letters_count_by_reason_and_an_opted_out_recipient_is_one_of_them(outbound_env: Any,
                                                                                metric_points: Any) -> None:
    stopped = fresh_number()
    optouts.record_optout(stopped, "STOP")
    sender.process_sms(json.dumps({"id": "m-bad", "to": "555", "body": "x"}), "q", 1)
    sender.process_sms(json.dumps({"id": "m-stop", "to": stopped, "body": "x"}), "q", 1)
    assert _counts(metric_points, telemetry.DEAD_LETTERS) == {
        (("channel", "sms"), ("reason", "invalid_message")): 1, (("channel", "sms"), ("reason", "opted_out")): 1}
    assert _counts(metric_points, telemetry.SENDS) == {(("channel", "sms"), ("outcome", "dead_lettered")): 2}


def test_twilio_unreachable_is_timed_with_the_error_type_not_a_status(outbound_env: Any, metric_points: Any) -> None:
    with twilio_unreachable():
        try:
            sender.process_sms(json.dumps({"id": "m-down", "to": fresh_number(), "body": "x"}), "q", 1)
        except sender.RetryLaterError:
            pass
    [(attributes, point)] = metric_points(telemetry.TWILIO_DURATION)
    assert attributes["operation"] == "messages.create" and "http.response.status_code" not in attributes
    assert attributes["error.type"] == "connectionerror" and point.count == 1


def test_a_forged_webhook_counts_a_bad_signature_rejection_on_its_route(call_function: Any,
                                                                        metric_points: Any) -> None:
    forged = signed_form_request("/api/sms", {"From": "+14155550100", "Body": "hi"}, token="not-the-token")
    assert call_function("sms", forged)[0].status_code == 403
    unsigned = http_request("POST", "/api/status/message", body=b"MessageStatus=sent", query="id=x")
    assert call_function("status_message", unsigned)[0].status_code == 403
    assert _counts(metric_points, telemetry.WEBHOOK_REJECTIONS) == {
        (("reason", "bad_signature"), ("route", "sms")): 1,
        (("reason", "bad_signature"), ("route", "status/message")): 1}


def test_a_paced_wait_counts_a_deferral_by_priority(outbound_env: Any, set_env: Any, metric_points: Any) -> None:
    sender_number = fresh_number()
    set_env(PACING="on", SENDER_RATES=f"{sender_number}=1", PACING_LEAD_SECONDS="1")
    for i in range(4):
        sender.process_sms(json.dumps({"id": f"m-paced-{i}", "to": fresh_number(), "from": sender_number,
                                       "body": "sale"}), "q", 1)
    counts = _counts(metric_points, telemetry.PACING_DEFERRALS)
    assert counts and set(counts) == {(("priority", "normal"), ("reason", "turn"))} and sum(counts.values()) >= 2


def test_no_metric_attribute_carries_a_number_sid_or_secret(outbound_env: Any, metric_points: Any,
                                                            call_function: Any) -> None:
    to = fresh_number()
    sender.process_sms(json.dumps({"id": "m-scan", "to": to, "body": "hi"}), "q", 1)
    sender.process_sms(json.dumps({"id": "m-scan-bad", "to": "whatsapp:+1415", "body": "x"}), "q", 1)
    call_function("sms", signed_form_request("/api/sms", {"From": to}, token="forged"))
    seen = [attributes for name in (telemetry.SENDS, telemetry.DEAD_LETTERS, telemetry.TWILIO_DURATION,
                                    telemetry.WEBHOOK_REJECTIONS) for attributes, _ in metric_points(name)]
    assert seen
    for attributes in seen:
        text = json.dumps({k: v for k, v in attributes.items() if k != "http.response.status_code"})
        assert not NUMBER_OR_SECRET.search(text), attributes
        assert TEST_AUTH_TOKEN not in text
