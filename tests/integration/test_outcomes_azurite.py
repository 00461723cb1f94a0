"""Outcome events when the outcomes queue cannot be written (shared/outcomes.py, shared/sender.py): nothing is
sent twice, and every event is written once the queue is back (at least once)."""

from __future__ import annotations

import json
import os
from typing import Any

from shared import outcomes, sender
from tests.outbound_helpers import drain, fresh_number, poison, row, sms_queue


def _events() -> list[dict[str, Any]]:
    return [json.loads(text) for text in drain(os.environ["OUTCOMES_QUEUE"])]


def test_a_sent_event_that_cannot_be_written_is_written_on_the_next_delivery_and_nothing_is_sent_twice(
        outbound_env: Any, set_env: Any) -> None:
    good = os.environ["OUTCOMES_QUEUE"]
    document = json.dumps({"id": "oc-retry", "to": fresh_number(), "body": "your code is 1234"})
    set_env(OUTCOMES_QUEUE="Not_A_Queue_Name")  # Storage refuses the name: every write fails
    try:
        sender.process_sms(document, "q-1", 1)
        raise AssertionError("the try should fail while its sent event is not written")
    except sender.RetryLaterError as exc:
        assert "outcome event was not written" in str(exc)
    assert len(outbound_env.created()) == 1 and row("sms", "oc-retry").fields.get("sent_unreported") is True
    set_env(OUTCOMES_QUEUE=good)
    again = sender.process_sms(document, "q-1", 2)
    assert again.result == "duplicate" and len(outbound_env.created()) == 1
    [event] = _events()
    assert event["type"] == "sent" and event["sid"] == row("sms", "oc-retry").sid
    assert not row("sms", "oc-retry").fields.get("sent_unreported")
    assert sender.process_sms(document, "q-1", 3).result == "duplicate" and _events() == []  # not re-emitted


def test_a_dead_letter_waits_for_its_event_so_the_poison_entry_and_the_event_come_together(
        outbound_env: Any, set_env: Any) -> None:
    good = os.environ["OUTCOMES_QUEUE"]
    document = json.dumps({"id": "oc-bad", "to": "555", "body": "x"})
    set_env(OUTCOMES_QUEUE="Not_A_Queue_Name")
    try:
        sender.process_sms(document, "q-2", 1)
        raise AssertionError("the try should fail while its event is not written")
    except sender.RetryLaterError:
        pass
    assert poison(sms_queue()) == []  # not dead-lettered yet: the next delivery does both
    set_env(OUTCOMES_QUEUE=good)
    assert sender.process_sms(document, "q-2", 2).result == "dead_lettered"
    assert [e["type"] for e in _events()] == ["dead_lettered"]
    assert [e["error"]["code"] for e in poison(sms_queue())] == ["invalid_message"]


def test_on_the_last_try_a_missing_event_never_costs_the_dead_letter(outbound_env: Any, set_env: Any) -> None:
    set_env(OUTCOMES_QUEUE="Not_A_Queue_Name")
    outcome = sender.process_sms(json.dumps({"id": "oc-last", "to": "555", "body": "x"}), "q-3",
                                 sender.queue_settings().max_dequeue_count)
    assert outcome.result == "dead_lettered"
    assert [e["error"]["code"] for e in poison(sms_queue())] == ["invalid_message"]


def test_the_status_callbacks_binding_names_the_setting_only_when_it_names_a_queue() -> None:
    assert outcomes.output_queue_binding_name({"OUTCOMES_QUEUE": "my-outcomes"}) == "%OUTCOMES_QUEUE%"
    # The host cannot index a binding whose %SETTING% is unset or empty: the default name stands in (unused).
    assert outcomes.output_queue_binding_name({}) == "outbound-outcomes"
    assert outcomes.output_queue_binding_name({"OUTCOMES_QUEUE": ""}) == "outbound-outcomes"
    assert outcomes.queue_name({}) == "outbound-outcomes"
    assert outcomes.queue_name({"OUTCOMES_QUEUE": " off "}) == "" and outcomes.queue_name({"OUTCOMES_QUEUE": ""}) == ""


def test_status_events_order_by_the_lifecycle_and_name_the_error() -> None:
    from shared.ledger import status_rank

    ranks = [outcomes.status_event("sms", "x", "+14155550100", s, rank=status_rank("sms", s))["sequence"]
             for s in ("queued", "sent", "delivered", "read")]
    assert ranks == sorted(ranks) and ranks[0] > outcomes.SENT_SEQUENCE and ranks[-1] < outcomes.FINAL_SEQUENCE
    failed = outcomes.status_event("sms", "x", "whatsapp:+14155550100", "failed", rank=5, error_code="63016")
    assert failed["channel"] == "whatsapp" and failed["to"] == "whatsapp:+1415***0100"
    assert failed["error"]["meaning"] == "Outside the WhatsApp 24-hour window"
    other = outcomes.status_event("sms", "x", None, "undelivered", rank=5, error_code="12345")
    assert other["error"]["meaning"].endswith("/errors/12345") and "to" in other


class _Crash(BaseException):
    """The worker dies (SIGKILL): nothing after this point runs."""


def test_a_worker_killed_between_the_create_and_the_event_writes_the_event_when_the_send_is_reconciled(
        outbound_env: Any) -> None:
    from datetime import datetime, timedelta, timezone

    from shared import ledger

    to = fresh_number()
    document = json.dumps({"id": "oc-crash", "to": to, "body": "your code is 9876"})

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise _Crash()

    emit_sent, sender._emit_sent = sender._emit_sent, crash  # noqa: SLF001
    try:
        sender.process_sms(document, "q-4", 1)
        raise AssertionError("the worker should have died")
    except _Crash:
        pass
    finally:
        sender._emit_sent = emit_sent  # noqa: SLF001
    assert len(outbound_env.created()) == 1 and _events() == [] and row("sms", "oc-crash").status == "claimed"
    stored = row("sms", "oc-crash")  # long ago: the claim's lease and the settle window are over
    ledger.update(stored, claimed_at=datetime.now(timezone.utc) - timedelta(hours=1))
    outcome = sender.process_sms(document, "q-4", 2)
    assert outcome.result == "duplicate" and len(outbound_env.created()) == 1  # found in Twilio's list
    [event] = _events()
    assert event["type"] == "sent" and event["resolution"] == "found"
    assert event["sid"] == outbound_env.created()[0].sid
