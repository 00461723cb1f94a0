"""End to end: every outcome a producer cares about arrives on the outcomes queue (shared/outcomes.py), from the
queue functions (Storage SDK) and from Twilio's status callbacks (the Functions queue output binding), through
Azurite, the local host and the Twilio fake."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from shared import optouts, outcomes, pacing, storage
from tests.outbound_helpers import drain, fresh_number, row, sms_queue
from tests.peers.ports import wait_until
from tests.twilio_signing import TEST_AUTH_TOKEN

pytestmark = pytest.mark.e2e

E164 = re.compile(r"\+\d{8,15}")


class Events:
    """What the outcomes queue received, by message id."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def pull(self) -> list[dict[str, Any]]:
        self.seen += [json.loads(text) for text in drain(os.environ["OUTCOMES_QUEUE"])]
        return self.seen

    def of(self, ident: str) -> list[dict[str, Any]]:
        return sorted((e for e in self.pull() if e["id"] == ident), key=lambda e: e["sequence"])

    def wait_for(self, ident: str, event_type: str, status: str | None = None) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.of(ident) if e["type"] == event_type and
                         (status is None or e.get("status") == status)), None)

        wait_until(lambda: found() is not None, 30, f"a {event_type} {status or ''} event for {ident}")
        event = found()
        assert event is not None
        return event


def _enqueue(document: dict[str, Any], queue: str | None = None) -> None:
    storage.queue(queue or sms_queue()).send_message(json.dumps(document))


def test_every_outcome_type_reaches_the_outcomes_queue_once_per_change(outbound_env: Any, standin_http: Any,
                                                                       standin_queues: Any, set_env: Any) -> None:
    standin_queues(visibility_timeout=0)
    events = Events()
    delivered_to, failed_to, stopped_to = fresh_number(), fresh_number(), fresh_number()
    optouts.record_optout(stopped_to, "STOP")
    later = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
    _enqueue({"id": "oc-delivered", "to": delivered_to, "body": "your order shipped"})
    _enqueue({"id": "oc-failed", "to": failed_to, "body": "your order shipped"})
    _enqueue({"id": "oc-invalid", "to": "555-0100", "body": "not a number"})
    _enqueue({"id": "oc-stopped", "to": stopped_to, "body": "spring sale"})
    _enqueue({"id": "oc-later", "to": fresh_number(), "body": "later", "send_at": later})

    sent = events.wait_for("oc-delivered", "sent")
    assert sent["sid"] == row("sms", "oc-delivered").sid and sent["channel"] == "sms" and sent["kind"] == "sms"
    assert sent["to"] == delivered_to[:5] + "***" + delivered_to[-4:]
    assert sent["event_id"] == "sms:oc-delivered:sent" and sent["sequence"] == outcomes.SENT_SEQUENCE
    events.wait_for("oc-failed", "sent")

    by_id = {r.send_id: r for r in outbound_env.created()}
    for status in ("sent", "delivered"):
        assert outbound_env.post_status_callback(by_id["oc-delivered"], status, token=TEST_AUTH_TOKEN,
                                                 deliver_to=standin_http.base_url).status_code == 204
    delivered = events.wait_for("oc-delivered", "status", "delivered")
    assert delivered["sid"] == sent["sid"] and delivered["event_id"] == "sms:oc-delivered:status:delivered"
    assert outbound_env.post_status_callback(by_id["oc-failed"], "failed", token=TEST_AUTH_TOKEN, error_code="30003",
                                             deliver_to=standin_http.base_url).status_code == 204
    failed = events.wait_for("oc-failed", "status", "failed")
    assert failed["error"] == {"code": "30003", "meaning": "Unreachable destination handset"}
    # A late "sent" after "failed" would go backwards: the ledger refuses it, and nothing is emitted for it.
    assert outbound_env.post_status_callback(by_id["oc-failed"], "sent", token=TEST_AUTH_TOKEN,
                                             deliver_to=standin_http.base_url).status_code == 204

    dead = events.wait_for("oc-invalid", "dead_lettered")
    assert dead["reason"]["code"] == "invalid_message" and "to" in dead["reason"]["text"]
    stopped = events.wait_for("oc-stopped", "opted_out")
    assert stopped["reason"]["code"] == "opted_out" and stopped["sequence"] == outcomes.FINAL_SEQUENCE
    deferred = events.wait_for("oc-later", "deferred")
    assert deferred["reason"]["code"] == "send_at" and deferred["sequence"] < outcomes.SENT_SEQUENCE
    events.wait_for("oc-later", "sent")

    # The same message delivered again (a producer's retry): acknowledged as a duplicate, no second event.
    _enqueue({"id": "oc-delivered", "to": delivered_to, "body": "your order shipped"})
    wait_until(lambda: storage.queue(sms_queue()).get_queue_properties().approximate_message_count == 0, 30,
               "the duplicate to be consumed")
    assert len(outbound_env.created()) == 3
    assert [e["type"] for e in events.of("oc-delivered")] == ["sent", "status", "status"]
    assert [e.get("status") for e in events.of("oc-failed")] == [None, "failed"]
    for event in events.seen:  # masked numbers only, and no secret, in every event
        assert not E164.search(json.dumps(event)), event
        assert TEST_AUTH_TOKEN not in json.dumps(event)


def test_a_completed_call_reports_its_duration_and_who_answered(outbound_env: Any, standin_http: Any,
                                                                standin_queues: Any) -> None:
    standin_queues(visibility_timeout=0)
    events = Events()
    _enqueue({"id": "oc-call", "to": fresh_number(), "say": "your table is ready"}, os.environ["CALL_QUEUE"])
    events.wait_for("oc-call", "sent")
    [request] = outbound_env.created("call")
    for status, extra in (("ringing", {}), ("completed", {"CallDuration": "42", "AnsweredBy": "human"})):
        assert outbound_env.post_status_callback(request, status, token=TEST_AUTH_TOKEN, extra=extra,
                                                 deliver_to=standin_http.base_url).status_code == 204
    completed = events.wait_for("oc-call", "status", "completed")
    assert completed["channel"] == "call" and completed["duration_seconds"] == 42
    assert completed["answered_by"] == "human"
    ringing = events.wait_for("oc-call", "status", "ringing")
    assert ringing["sequence"] < completed["sequence"]


def test_a_cancelled_campaign_and_a_paced_wait_are_reported(outbound_env: Any, standin_queues: Any,
                                                            set_env: Any) -> None:
    sender_number = fresh_number()
    set_env(PACING="on", SENDER_RATES=f"{sender_number}=1", PACING_LEAD_SECONDS="1")
    pacing.cancel_campaign("oc-cancelled", by="test")
    _enqueue({"id": "oc-cxl", "to": fresh_number(), "from": sender_number, "body": "sale", "campaign": "oc-cancelled"})
    for i in range(3):
        _enqueue({"id": f"oc-paced-{i}", "to": fresh_number(), "from": sender_number, "body": "sale"})
    standin_queues(visibility_timeout=0)
    events = Events()
    cancelled = events.wait_for("oc-cxl", "cancelled")
    assert "oc-cancelled" in cancelled["reason"]["text"]
    wait_until(lambda: any(e["type"] == "deferred" and e["reason"]["code"] == "paced" for e in events.pull()), 30,
               "a paced deferral to be reported")
    for i in range(3):
        events.wait_for(f"oc-paced-{i}", "sent")
    paced = [e for e in events.seen if e["type"] == "deferred"]
    assert len({e["event_id"] for e in paced}) == len(paced)  # one word per waiting message, not one per hop


def test_no_events_are_written_when_outcomes_are_off(outbound_env: Any, set_env: Any) -> None:
    from shared import sender

    set_env(OUTCOMES_QUEUE="off")
    assert outcomes.queue_name() == ""
    assert sender.process_sms(json.dumps({"id": "oc-off", "to": fresh_number(), "body": "x"}), "q", 1).result == "sent"
    assert outcomes.output_queue_binding_name() == outcomes.DEFAULT_QUEUE
    assert outcomes.for_binding({"event_id": "x"}) is None
