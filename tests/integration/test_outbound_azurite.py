"""Outbound sends against real local peers: Azurite (queues + tables) and the Twilio fake.

Each test proves one outcome of DESIGN's list: sent once, duplicate acknowledged, dead-lettered with a reason,
retried, deferred.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from shared import ledger, optouts, sender
from shared.sender import RetryLaterError
from tests.conftest import TEST_ACCOUNT_SID, TEST_FROM
from tests.outbound_helpers import call_queue, drain, fresh_number, poison, row, sms_queue, twilio_unreachable
from tests.peers.ports import wait_until
from tests.twilio_signing import PUBLIC_BASE_URL

TO = "+14155550100"  # replaced per test by a fresh recipient (see the fixture below)


@pytest.fixture(autouse=True)
def fresh_recipient(monkeypatch: pytest.MonkeyPatch) -> str:
    number = fresh_number()
    monkeypatch.setattr(sys.modules[__name__], "TO", number)
    return number


def sms(ident: str, **extra: Any) -> str:
    return json.dumps({"id": ident, "to": TO, "body": "hello", **extra})


def test_sms_is_sent_with_status_callback_and_recorded_as_sent(outbound_env: Any) -> None:
    outcome = sender.process_sms(sms("order-1", media_urls=["https://ex.com/a.png", "https://ex.com/b.png"]),
                                 "qid-1", 1)
    assert outcome.result == "sent" and outcome.sid.startswith("MM")
    [request] = outbound_env.created("sms")
    assert request.first("To") == TO and request.first("From") == TEST_FROM and request.first("Body") == "hello"
    assert request.form["MediaUrl"] == ["https://ex.com/a.png", "https://ex.com/b.png"]
    assert request.first("StatusCallback") == f"{PUBLIC_BASE_URL}/api/status/message?id=order-1"
    assert request.account_sid == TEST_ACCOUNT_SID
    stored = row("sms", "order-1")
    assert stored is not None and stored.status == "sent" and stored.sid == outcome.sid and stored.attempts == 1


def test_call_with_say_sends_twiml_timeout_amd_and_callback_events(outbound_env: Any) -> None:
    body = json.dumps({"id": "call:1.x", "to": TO, "say": "Your code is 1 2 3", "voice": "alice",
                       "language": "en-GB", "timeout": 20, "machine_detection": True})
    outcome = sender.process_call(body, "qid", 1)
    assert outcome.result == "sent" and outcome.sid.startswith("CA")
    [request] = outbound_env.created("call")
    assert request.first("Twiml") == ('<Response><Say language="en-GB" voice="alice">Your code is 1 2 3</Say>'
                                      '</Response>')
    assert request.first("Timeout") == "20" and request.first("MachineDetection") == "Enable"
    assert request.form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert request.first("StatusCallback") == f"{PUBLIC_BASE_URL}/api/status/call?id=call%3A1.x"


def test_call_by_url_passes_the_url(outbound_env: Any) -> None:
    sender.process_call(json.dumps({"id": "c2", "to": TO, "url": "https://ex.com/twiml"}), "q", 1)
    [request] = outbound_env.created("call")
    assert request.first("Url") == "https://ex.com/twiml" and "Twiml" not in request.form


def test_messaging_service_used_when_no_from_number(outbound_env: Any, set_env: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("TWILIO_FROM_NUMBER")
    set_env(TWILIO_MESSAGING_SERVICE_SID="MG" + "a" * 32)
    sender.process_sms(sms("ms-1"), "q", 1)
    [request] = outbound_env.created("sms")
    assert request.first("MessagingServiceSid") == "MG" + "a" * 32 and "From" not in request.form


def test_no_sender_at_all_is_an_invalid_message(outbound_env: Any, monkeypatch: Any, set_env: Any) -> None:
    monkeypatch.delenv("TWILIO_FROM_NUMBER")
    set_env()
    outcome = sender.process_sms(sms("nofrom"), "q", 1)
    assert outcome.result == "dead_lettered" and outcome.reason.startswith("from: no sender")
    assert not outbound_env.requests


def test_id_defaults_to_the_queue_message_id(outbound_env: Any) -> None:
    outcome = sender.process_sms(json.dumps({"to": TO, "body": "x"}), "5f1c-queue-id", 1)
    assert outcome.id == "5f1c-queue-id" and row("sms", "5f1c-queue-id").status == "sent"


def test_base64_encoded_message_is_accepted(outbound_env: Any) -> None:
    text = base64.b64encode(sms("b64").encode()).decode()
    assert sender.process_sms(text, "q", 1).result == "sent"


def test_duplicate_delivery_of_a_sent_id_is_acknowledged_not_resent(outbound_env: Any) -> None:
    assert sender.process_sms(sms("dup"), "q1", 1).result == "sent"
    again = sender.process_sms(sms("dup"), "q2", 1)
    assert again.result == "duplicate"
    assert len(outbound_env.requests) == 1
    assert poison(sms_queue()) == []


def test_invalid_message_is_dead_lettered_with_field_and_rule(outbound_env: Any) -> None:
    text = json.dumps({"id": "bad-1", "to": "555-0100", "body": "x"})
    outcome = sender.process_sms(text, "q", 1)
    assert outcome.result == "dead_lettered"
    [letter] = poison(sms_queue())
    assert letter["error"]["code"] == "invalid_message"
    assert letter["error"]["reason"] == "to: not an E.164 number" and letter["error"]["field"] == "to"
    assert letter["message"] == text
    assert row("sms", "bad-1").status == "rejected"
    assert not outbound_env.requests


def test_non_utf8_message_is_kept_in_poison_as_base64(outbound_env: Any) -> None:
    raw = b'{"to": "\xff\xfe"}'
    sender.process_sms(raw, "q-raw", 1)
    [letter] = poison(sms_queue())
    assert letter["message_base64"] is True and base64.b64decode(letter["message"]) == raw
    assert letter["error"]["reason"].startswith("message: not valid UTF-8")


def test_opted_out_recipient_is_not_sent_and_dead_lettered(outbound_env: Any) -> None:
    opted = "+14155550199"  # its own number: the optouts table outlives this test
    optouts.record_optout(opted, "STOP")
    try:
        outcome = sender.process_sms(json.dumps({"id": "opt-1", "to": opted, "body": "x"}), "q", 1)
    finally:
        optouts.clear_optout(opted)
    assert outcome.result == "dead_lettered" and outcome.code == "opted_out"
    assert not outbound_env.requests
    [letter] = poison(sms_queue())
    assert letter["error"]["code"] == "opted_out"
    assert row("sms", "opt-1").status == "rejected"


@pytest.mark.parametrize("fault,code", [("21211", 21211), ("21610", 21610)])
def test_permanent_twilio_error_is_dead_lettered_not_retried(outbound_env: Any, fault: str, code: int) -> None:
    outbound_env.fail_next(fault)
    outcome = sender.process_sms(sms(f"perm-{fault}"), "q", 1)
    assert outcome.result == "dead_lettered" and outcome.code == "twilio_rejected"
    [letter] = poison(sms_queue())
    assert letter["error"]["twilio_code"] == code and letter["error"]["http_status"] == 400
    stored = row("sms", f"perm-{fault}")
    assert stored.status == "failed" and stored.fields["error_code"] == str(code)
    # A redelivery does not try again.
    assert sender.process_sms(sms(f"perm-{fault}"), "q", 2).result == "duplicate"
    assert len(outbound_env.requests) == 1


def test_refused_connection_raises_then_the_retry_sends(outbound_env: Any) -> None:
    with twilio_unreachable(), pytest.raises(RetryLaterError):
        sender.process_sms(sms("tr-refused"), "q", 1)
    assert row("sms", "tr-refused").status == "retrying"
    outcome = sender.process_sms(sms("tr-refused"), "q", 2)
    assert outcome.result == "sent"
    assert len(outbound_env.created()) == 1
    stored = row("sms", "tr-refused")
    assert stored.status == "sent" and stored.attempts == 2


@pytest.mark.parametrize("try_number", [1, 5])
def test_twilio_429_backs_off_on_the_queue_and_is_no_failed_try_even_on_the_last(outbound_env: Any,
                                                                                 try_number: int) -> None:
    outbound_env.fail_next("429")
    ident = f"busy-{try_number}"
    outcome = sender.process_sms(sms(ident), "q", try_number)
    assert outcome.result == "deferred" and outcome.code == sender.RATE_LIMITED
    assert row("sms", ident).status == "retrying" and poison(sms_queue()) == []
    copies: list[str] = []
    wait_until(lambda: copies.extend(drain(sms_queue())) or copies, 15, "the backed-off copy to come back")
    assert json.loads(copies[0])["id"] == ident
    assert sender.process_sms(copies[0], "q2", 1).result == "sent" and len(outbound_env.created()) == 1


@pytest.mark.parametrize("status", ["500", "503"])
def test_5xx_answer_after_twilio_created_the_message_is_found_not_sent_twice(outbound_env: Any,
                                                                              status: str) -> None:
    outbound_env.fail_next(f"{status}-created")  # Twilio's edge failed after the create went through
    with pytest.raises(RetryLaterError, match="may have accepted it"):
        sender.process_sms(sms(f"edge-{status}"), "q", 1)
    assert row("sms", f"edge-{status}").status == "unknown"
    outcome = sender.process_sms(sms(f"edge-{status}"), "q", 2)
    [created] = outbound_env.created("sms")
    assert outcome.result == "duplicate" and outcome.sid == created.sid
    assert len(outbound_env.requests) == 1
    assert row("sms", f"edge-{status}").fields["resolution"] == "found"


def test_5xx_answer_with_nothing_created_is_resent_only_after_the_settle_window(outbound_env: Any,
                                                                               set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="30")
    outbound_env.fail_next("500")
    with pytest.raises(RetryLaterError):
        sender.process_sms(sms("edge-none"), "q", 1)
    waiting = sender.process_sms(sms("edge-none"), "q", 2)
    assert waiting.result == "deferred" and outbound_env.created("sms") == []
    _backdate_claim("edge-none", 2 + 30 + 1)
    assert sender.process_sms(sms("edge-none"), "q", 1).result == "sent"
    assert len(outbound_env.created("sms")) == 1 and row("sms", "edge-none").fields["resolution"] == "resent"


def test_transient_error_on_the_last_try_is_dead_lettered_with_reason(outbound_env: Any) -> None:
    max_tries = sender.queue_settings().max_dequeue_count
    with twilio_unreachable():
        outcome = sender.process_sms(sms("last"), "q", max_tries)
    assert outcome.result == "dead_lettered" and outcome.code == "retries_exhausted"
    [letter] = poison(sms_queue())
    assert "cannot connect" in letter["error"]["reason"]
    assert row("sms", "last").status == "failed"


def _backdate_claim(ident: str, seconds: float) -> None:
    stored = row("sms", ident)
    assert stored is not None
    ledger.update(stored, claimed_at=datetime.now(timezone.utc) - timedelta(seconds=seconds))


def test_timed_out_send_that_twilio_created_is_found_and_not_resent(outbound_env: Any) -> None:
    outbound_env.fail_next("slow")  # created at once, answered after 2.5 s; the client gives up after 2 s
    with pytest.raises(RetryLaterError):
        sender.process_sms(sms("slow-1"), "q", 1)
    assert row("sms", "slow-1").status == "unknown"
    outcome = sender.process_sms(sms("slow-1"), "q", 2)
    [created] = outbound_env.created("sms")
    assert outcome.result == "duplicate" and outcome.sid == created.sid
    assert len(outbound_env.requests) == 1  # read back, not sent again
    stored = row("sms", "slow-1")
    assert stored.status == "sent" and stored.sid == created.sid and stored.fields["resolution"] == "found"
    assert poison(sms_queue()) == []


def test_connection_reset_send_is_resent_once_after_the_settle_window(outbound_env: Any, set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="30")
    outbound_env.fail_next("reset")  # nothing created, but the client cannot know that
    with pytest.raises(RetryLaterError):
        sender.process_sms(sms("rst"), "q", 1)
    assert row("sms", "rst").status == "unknown"
    waiting = sender.process_sms(sms("rst"), "q", 2)  # not a failed try: back on the queue until it settles
    assert waiting.result == "deferred" and "requeued for 3" in waiting.reason  # until the window is over
    assert outbound_env.created("sms") == []
    _backdate_claim("rst", 2 + 30 + 1)
    outcome = sender.process_sms(sms("rst"), "q", 3)
    [created] = outbound_env.created("sms")
    assert outcome.result == "sent" and outcome.sid == created.sid
    stored = row("sms", "rst")
    assert stored.status == "sent" and stored.fields["resolution"] == "resent" and stored.attempts == 2


def test_stale_claim_whose_send_reached_twilio_is_found(outbound_env: Any) -> None:
    from shared import twilio_api
    from shared.outbound import validate

    claimed, _ = ledger.try_claim("sms", "crashed-sent")
    twilio_api.send_sms(validate("sms", json.loads(sms("crashed-sent"))), from_=TEST_FROM,  # type: ignore[arg-type]
                        messaging_service_sid=None)  # the host died before recording it
    _backdate_claim("crashed-sent", 3600)
    outcome = sender.process_sms(sms("crashed-sent"), "q", 2)
    assert outcome.result == "duplicate" and len(outbound_env.created("sms")) == 1
    assert row("sms", "crashed-sent").fields["resolution"] == "found"


def test_stale_claim_whose_send_never_left_is_sent_once(outbound_env: Any) -> None:
    ledger.try_claim("sms", "crashed")
    _backdate_claim("crashed", 3600)
    outcome = sender.process_sms(sms("crashed"), "q", 2)
    assert outcome.result == "sent" and len(outbound_env.created("sms")) == 1
    assert row("sms", "crashed").status == "sent" and row("sms", "crashed").fields["resolution"] == "resent"


def test_send_in_doubt_with_twilio_unreadable_comes_back_and_is_ambiguous_only_after_five_failed_reads_in_a_row(
        outbound_env: Any) -> None:
    outbound_env.fail_next("reset")
    with pytest.raises(RetryLaterError):
        sender.process_sms(sms("dark"), "q", 1)
    last = sender.queue_settings().max_dequeue_count
    outbound_env.fail_lists_next("500", "429")
    with pytest.raises(RetryLaterError, match="cannot read Twilio's Messages list"):
        sender.process_sms(sms("dark"), "q", 2)
    # One failed read on the last try is not "unreadable on all tries": the message comes back later.
    outcome = sender.process_sms(sms("dark"), "q", last)
    assert outcome.result == "deferred" and poison(sms_queue()) == []
    assert row("sms", "dark").fields["read_errors"] == 2
    outbound_env.fail_lists_next("500", "500", "500")
    for _ in range(2):
        assert sender.process_sms(sms("dark"), "q", last).result == "deferred"
    outcome = sender.process_sms(sms("dark"), "q", last)
    assert outcome.result == "dead_lettered" and outcome.code == "ambiguous"
    [letter] = poison(sms_queue())
    assert "unreadable on 5 reads in a row" in letter["error"]["reason"] and "HTTP 500" in letter["error"]["reason"]
    stored = row("sms", "dark")
    assert stored.status == "failed" and stored.fields["resolution"] == "ambiguous"
    assert outbound_env.created("sms") == []  # never sent blindly


def test_a_good_read_resets_the_unreadable_streak(outbound_env: Any, set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="30")
    outbound_env.fail_next("reset")
    with pytest.raises(RetryLaterError):
        sender.process_sms(sms("flaky"), "q", 1)
    outbound_env.fail_lists_next("500")
    with pytest.raises(RetryLaterError):
        sender.process_sms(sms("flaky"), "q", 2)
    assert row("sms", "flaky").fields["read_errors"] == 1
    assert sender.process_sms(sms("flaky"), "q", 3).result == "deferred"  # read fine, not settled yet
    assert row("sms", "flaky").fields["read_errors"] == 0


def test_two_matching_sends_in_twilio_leave_the_send_ambiguous(outbound_env: Any) -> None:
    from shared import twilio_api
    from shared.outbound import validate

    ledger.try_claim("sms", "twice-seen")
    message = validate("sms", json.loads(sms("twice-seen")))
    for _ in range(2):  # e.g. an operator resent it by hand
        twilio_api.send_sms(message, from_=TEST_FROM, messaging_service_sid=None)  # type: ignore[arg-type]
    _backdate_claim("twice-seen", 3600)
    outcome = sender.process_sms(sms("twice-seen"), "q", 1)
    assert outcome.result == "dead_lettered" and outcome.code == "ambiguous"
    assert "2 unclaimed sends in Twilio's list match" in outcome.reason and "no callback settled it" in outcome.reason
    assert len(outbound_env.created("sms")) == 2


def test_status_callback_settles_a_send_in_doubt_without_reading_twilio(outbound_env: Any) -> None:
    outbound_env.fail_next("slow")
    with pytest.raises(RetryLaterError):
        sender.process_sms(sms("cb-first"), "q", 1)
    [created] = outbound_env.created("sms")
    ledger.apply_callback("sms", "cb-first", "delivered", sid=created.sid)
    outcome = sender.process_sms(sms("cb-first"), "q", 2)
    assert outcome.result == "duplicate" and outbound_env.list_reads == []


def test_timeout_on_the_last_try_comes_back_later_instead_of_dead_lettering(outbound_env: Any, set_env: Any) -> None:
    from tests.peers.ports import wait_until

    set_env(RECONCILE_SETTLE_SECONDS="0")
    last = sender.queue_settings().max_dequeue_count
    outbound_env.fail_next("slow")
    outcome = sender.process_sms(sms("late-last"), "q", last)
    assert outcome.result == "deferred" and poison(sms_queue()) == []
    copies: list[str] = []
    wait_until(lambda: copies.extend(drain(sms_queue())) or copies, 15, "the copy to come back")  # type: ignore
    [copy] = copies
    assert json.loads(copy)["id"] == "late-last"
    assert sender.process_sms(copy, "q2", 1).result == "duplicate"
    assert len(outbound_env.created("sms")) == 1


def test_fresh_claim_of_another_delivery_is_retried_later(outbound_env: Any) -> None:
    ledger.try_claim("sms", "inflight")
    with pytest.raises(RetryLaterError, match="sending it now"):
        sender.process_sms(sms("inflight"), "q", 1)
    assert not outbound_env.requests


def test_401_refreshes_the_secret_and_retries_once(outbound_env: Any, monkeypatch: Any) -> None:
    from shared import secrets

    refreshed: list[str] = []
    real = secrets.refresh_secret
    monkeypatch.setattr(secrets, "refresh_secret",
                        lambda name, **kw: refreshed.append(name) or real(name, **kw))
    outbound_env.fail_next("401")
    outcome = sender.process_sms(sms("auth-1"), "q", 1)
    assert outcome.result == "sent" and refreshed == [secrets.AUTH_TOKEN]
    assert [r.answered for r in outbound_env.requests] == [401, 201]


def test_401_after_refresh_is_permanent(outbound_env: Any) -> None:
    outbound_env.fail_next("401", "401")
    outcome = sender.process_sms(sms("auth-2"), "q", 1)
    assert outcome.result == "dead_lettered" and outcome.code == "twilio_rejected"
    assert len(outbound_env.requests) == 2


def test_401_while_a_refresh_is_rate_limited_is_retried_later_not_dead_lettered(outbound_env: Any) -> None:
    from shared import secrets

    # A failed webhook signature refreshed the token a moment ago (the limit is shared per secret).
    assert secrets.refresh_secret(secrets.AUTH_TOKEN)
    outbound_env.fail_next("401")
    with pytest.raises(RetryLaterError, match="rate-limited"):
        sender.process_sms(sms("auth-3"), "q", 1)
    assert poison(sms_queue()) == []
    assert row("sms", "auth-3").status == "retrying"


def test_rotated_token_is_used_without_restart(outbound_env: Any, monkeypatch: Any) -> None:
    assert sender.process_sms(sms("rot-1"), "q", 1).result == "sent"
    outbound_env.credentials[TEST_ACCOUNT_SID] = "rotated-token-value-000000000000"
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "rotated-token-value-000000000000")
    from shared import secrets

    secrets.reset_secrets()
    assert sender.process_sms(sms("rot-2"), "q", 1).result == "sent"


def test_api_key_credentials_when_api_key_sid_is_set(outbound_env: Any, set_env: Any) -> None:
    key_sid = "SK" + "b" * 32
    outbound_env.credentials = {key_sid: "api-key-secret-value-0000"}
    set_env(TWILIO_API_KEY_SID=key_sid, TWILIO_API_KEY_SECRET="api-key-secret-value-0000")
    assert sender.process_sms(sms("key-1"), "q", 1).result == "sent"
    [request] = outbound_env.requests
    assert request.username == key_sid and request.account_sid == TEST_ACCOUNT_SID


def test_unreadable_secret_is_transient_and_claims_nothing(outbound_env: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    from shared import secrets

    secrets.reset_secrets()
    with pytest.raises(RetryLaterError, match="not configured"):
        sender.process_sms(sms("nosecret"), "q", 1)
    assert row("sms", "nosecret") is None


def test_send_at_in_the_future_is_requeued_invisible_with_the_id(outbound_env: Any) -> None:
    when = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    outcome = sender.process_sms(json.dumps({"to": TO, "body": "later", "send_at": when}), "qid-later", 1)
    assert outcome.result == "deferred"
    assert not outbound_env.requests
    from shared import storage

    props = storage.queue(sms_queue()).get_queue_properties()
    assert props.approximate_message_count == 1
    assert drain(sms_queue()) == []  # invisible for ~2 h
    peeked = storage.queue(sms_queue()).peek_messages()
    assert peeked == []


def test_send_at_in_the_past_is_sent_now(outbound_env: Any) -> None:
    when = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    assert sender.process_sms(sms("past", send_at=when), "q", 1).result == "sent"


@pytest.mark.parametrize("given_id", [{}, {"id": None}], ids=["absent", "null"])
def test_send_at_requeue_becomes_visible_and_keeps_the_id(outbound_env: Any, given_id: dict[str, Any]) -> None:
    """The copy gets a new queue message id; the ledger key must stay the original one (``null`` = absent)."""
    import uuid

    from shared import storage
    from tests.peers.ports import wait_until

    original = f"orig-qid-{uuid.uuid4().hex[:8]}"
    when = (datetime.now(timezone.utc) + timedelta(seconds=1.5)).isoformat()
    body = json.dumps({**given_id, "to": TO, "body": "soon", "send_at": when})
    assert sender.process_sms(body, original, 1).result == "deferred"
    client = storage.queue(sms_queue())
    wait_until(lambda: bool(client.peek_messages()), 10, "the deferred message to become visible")
    [message] = client.receive_messages()
    assert json.loads(message.content)["id"] == original
    assert sender.process_sms(message.content, message.id, 1).result == "sent"
    assert row("sms", original).status == "sent"


def test_call_queue_poison_is_separate(outbound_env: Any) -> None:
    sender.process_call(json.dumps({"id": "c-bad", "to": TO, "say": "x", "url": "https://e.com"}), "q", 1)
    [letter] = poison(call_queue())
    assert letter["error"]["reason"] == "say: exactly one of say, twiml, url (got say, url)"
    assert poison(sms_queue()) == []


def test_corrected_message_with_the_id_of_an_invalid_one_is_sent(outbound_env: Any) -> None:
    assert sender.process_sms(json.dumps({"id": "fixme", "to": "555", "body": "x"}), "q", 1).result == \
        "dead_lettered"
    assert sender.process_sms(sms("fixme"), "q", 1).result == "sent"
    assert row("sms", "fixme").status == "sent"


def test_resubmitting_after_retries_exhausted_sends_and_after_a_timeout_is_found(outbound_env: Any) -> None:
    last = sender.queue_settings().max_dequeue_count
    with twilio_unreachable():
        assert sender.process_sms(sms("exhausted"), "q", last).code == "retries_exhausted"
    assert sender.process_sms(sms("exhausted"), "q2", 1).result == "sent"
    outbound_env.fail_next("slow")
    assert sender.process_sms(sms("maybe"), "q", last).result == "deferred"
    assert sender.process_sms(sms("maybe"), "q2", 1).result == "duplicate"
    assert [r.send_id for r in outbound_env.requests].count("maybe") == 1
