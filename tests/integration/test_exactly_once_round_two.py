"""Exactly once, round two: sends that could be confused with one another, 5xx after a create, and double sends
that must be flagged. Against Azurite and the Twilio fake; status callbacks through the local host's HTTP half,
signed as Twilio signs them. Counts come from the fake's record of creates, not from the ledger.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest

from shared import ledger, ops, sender
from shared.sender import RetryLaterError
from tests.outbound_helpers import fresh_number, poison, row, sms_queue
from tests.peers.ports import wait_until
from tests.twilio_signing import TEST_AUTH_TOKEN


def _sms(ident: str, to: str, body: str) -> str:
    return json.dumps({"id": ident, "to": to, "body": body})


def _call(ident: str, to: str, say: str) -> str:
    return json.dumps({"id": ident, "to": to, "say": say})


def _to(to: str) -> Callable[[Any], bool]:
    return lambda record: record.first("To") == to


def _body(body: str) -> Callable[[Any], bool]:
    return lambda record: record.first("Body") == body


def _say(text: str) -> Callable[[Any], bool]:
    return lambda record: text in record.first("Twiml")


def _creates(fake: Any, ident: str) -> int:
    return sum(1 for r in fake.created() if r.send_id == ident)


def _backdate(kind: str, ident: str, seconds: float) -> None:
    stored = row(kind, ident)
    assert stored is not None
    ledger.update(stored, claimed_at=datetime.now(timezone.utc) - timedelta(seconds=seconds))


def _settle(kind: str, *idents: str, rounds: int = 12, ago: float = 60.0) -> dict[str, sender.Outcome]:
    """Deliver each id again (as the queue would, after its settle window) until none is deferred any more."""
    process = sender.process_sms if kind == "sms" else sender.process_call
    last: dict[str, sender.Outcome] = {}
    pending = list(idents)
    for _ in range(rounds):
        still = []
        for ident, body in pending:
            _backdate(kind, ident, ago)
            try:
                outcome = process(body, f"q-{ident}", 2)
            except RetryLaterError:
                still.append((ident, body))
                continue
            last[ident] = outcome
            if outcome.result == "deferred":
                still.append((ident, body))
        pending = still
        if not pending:
            break
    return last


# ---------------------------------------------------------------- 1. another id's message is never taken


@pytest.mark.parametrize("b_body", ["your code is 4243", "Reminder: your code is 4242"])
def test_a_send_in_doubt_never_takes_another_ids_message_to_the_same_recipient(outbound_env: Any, set_env: Any,
                                                                               b_body: str) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="1")
    to, a_body = fresh_number(), "your code is 4242"
    outbound_env.fail_when(_body(a_body), "reset")  # A never reached Twilio, but cannot know it
    outbound_env.fail_when(_body(b_body), "slow")   # B was created; its answer was lost
    a, b = _sms("pair-a-" + to[-4:], to, a_body), _sms("pair-b-" + to[-4:], to, b_body)
    for body in (a, b):
        with pytest.raises(RetryLaterError):
            sender.process_sms(body, "q", 1)
    outcomes = _settle("sms", ("pair-a-" + to[-4:], a))  # A reconciles first: B's message is not A's
    outcomes |= _settle("sms", ("pair-b-" + to[-4:], b))
    assert outcomes["pair-a-" + to[-4:]].result == "sent"
    assert outcomes["pair-b-" + to[-4:]].result == "duplicate"
    assert _creates(outbound_env, "pair-a-" + to[-4:]) == 1 and _creates(outbound_env, "pair-b-" + to[-4:]) == 1
    assert row("sms", "pair-a-" + to[-4:]).sid != row("sms", "pair-b-" + to[-4:]).sid
    assert poison(sms_queue()) == []


def test_two_ids_reconciling_one_message_at_once_never_both_record_it(outbound_env: Any, set_env: Any) -> None:
    """Both rows cannot end with the same SID: inserting the SID index row is the claim, and only one wins."""
    set_env(RECONCILE_SETTLE_SECONDS="1")
    to = fresh_number()
    winners: list[str] = []
    for attempt in range(8):
        a, b = f"race-a-{attempt}-{to[-4:]}", f"race-b-{attempt}-{to[-4:]}"
        ledger.try_claim("sms", a)
        ledger.try_claim("sms", b)
        [created] = [_create_unrecorded(to, f"same words {attempt}")]
        outcomes: dict[str, Any] = {}
        threads = [threading.Thread(target=_settle_into, args=(outcomes, i, _sms(i, to, f"same words {attempt}")))
                   for i in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        sids = [row("sms", i).sid for i in (a, b)]
        assert sids.count(created) <= 1, f"both ids recorded {created}: {outcomes}"
        winners.extend(i for i in (a, b) if row("sms", i).sid == created)
    assert winners  # and the message was tied to someone at least sometimes, not left to both


def _settle_into(outcomes: dict[str, Any], ident: str, body: str) -> None:
    _backdate("sms", ident, 3600)
    try:
        outcomes[ident] = sender.process_sms(body, "q", 1)
    except RetryLaterError as exc:
        outcomes[ident] = exc


def _create_unrecorded(to: str, body: str) -> str:
    """A message created in Twilio by a send that crashed before recording anything (no attempt row: legacy)."""
    from shared import twilio_api
    from shared.outbound import validate
    from tests.conftest import TEST_FROM

    return twilio_api.send_sms(validate("sms", {"id": "unrecorded", "to": to, "body": body}), from_=TEST_FROM,
                               messaging_service_sid=None).sid


def test_sms_body_that_merely_ends_with_ours_is_not_a_match(outbound_env: Any, set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="1")
    to = fresh_number()
    _create_unrecorded(to, "Reminder: see you at 3")
    ident = "suffix-" + to[-4:]
    ledger.try_claim("sms", ident)
    _backdate("sms", ident, 3600)
    assert sender.process_sms(_sms(ident, to, "see you at 3"), "q", 1).result == "sent"
    assert _creates(outbound_env, ident) == 1


def test_trial_account_prefix_exactly_is_still_a_match(outbound_env: Any, set_env: Any) -> None:
    from shared.reconcile import TRIAL_PREFIX

    set_env(RECONCILE_SETTLE_SECONDS="1")
    to = fresh_number()
    _create_unrecorded(to, TRIAL_PREFIX + "see you at 4")
    ident = "trial-" + to[-4:]
    ledger.try_claim("sms", ident)
    _backdate("sms", ident, 3600)
    assert sender.process_sms(_sms(ident, to, "see you at 4"), "q", 1).result == "duplicate"


# ---------------------------------------------------------------- contested matches wait for callbacks


@pytest.fixture
def callbacks(outbound_env: Any, standin_http: Any) -> Any:
    """The fake posts a signed ``sent`` / ``initiated`` status callback to the local host after each create."""
    outbound_env.callback_token = TEST_AUTH_TOKEN
    outbound_env.callback_deliver_to = standin_http.base_url
    return outbound_env


def test_calls_with_different_say_are_told_apart_by_their_callbacks_not_by_the_list(callbacks: Any,
                                                                                     set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="2")
    to = fresh_number()
    a, b = "call-a-" + to[-4:], "call-b-" + to[-4:]
    callbacks.fail_when(_say("Appointment A"), "reset")
    callbacks.fail_when(_say("Appointment B"), "slow")
    callbacks.callback_status, callbacks.callback_delay = "initiated", 6.0  # after A's first reconciliation
    for body in (_call(a, to, "Appointment A"), _call(b, to, "Appointment B")):
        with pytest.raises(RetryLaterError):
            sender.process_call(body, "q", 1)
    # A reconciles past its settle window (2 + 2 s), within the contest wait (5 x 2 s): B's call is in the list
    # and B is unresolved, so A must not take it.
    _backdate("call", a, 5)
    assert sender.process_call(_call(a, to, "Appointment A"), "q", 2).result == "deferred"
    wait_until(lambda: row("call", b).sid != "", 10, "B's initiated callback to record its SID")
    outcomes = _settle("call", (a, _call(a, to, "Appointment A")), (b, _call(b, to, "Appointment B")))
    assert _creates(callbacks, a) == 1 and _creates(callbacks, b) == 1
    assert row("call", a).sid and row("call", a).sid != row("call", b).sid
    assert all(o.result != "dead_lettered" for o in outcomes.values())


def test_identical_sends_both_late_are_not_ambiguous_once_their_callbacks_arrive(callbacks: Any,
                                                                                set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="2")
    to = fresh_number()
    ids = ["same-a-" + to[-4:], "same-b-" + to[-4:]]
    callbacks.fail_when(_to(to), "slow", "slow")
    callbacks.callback_status, callbacks.callback_delay = "sent", 8.0  # later than the first reconciliations
    for ident in ids:
        with pytest.raises(RetryLaterError):
            sender.process_sms(_sms(ident, to, "your table is ready"), "q", 1)
    for ident in ids:
        _backdate("sms", ident, 5)  # settled (2 + 2 s), within the contest wait
    first = [sender.process_sms(_sms(i, to, "your table is ready"), "q", 2) for i in ids]
    assert [o.result for o in first] == ["deferred", "deferred"]  # contested: neither takes either message
    wait_until(lambda: all(row("sms", i).sid for i in ids), 20, "both callbacks to record their SIDs")
    outcomes = _settle("sms", *[(i, _sms(i, to, "your table is ready")) for i in ids])
    assert {i: _creates(callbacks, i) for i in ids} == {ids[0]: 1, ids[1]: 1}
    assert {o.result for o in outcomes.values()} == {"duplicate"} and poison(sms_queue()) == []


def test_contested_match_with_no_callback_is_ambiguous_only_after_the_wait(outbound_env: Any,
                                                                           set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="1")
    to = fresh_number()
    ids = ["nocb-a-" + to[-4:], "nocb-b-" + to[-4:]]
    outbound_env.fail_when(_to(to), "slow", "slow")
    for ident in ids:
        with pytest.raises(RetryLaterError):
            sender.process_sms(_sms(ident, to, "same"), "q", 1)
    assert sender.process_sms(_sms(ids[0], to, "same"), "q", 2).result == "deferred"  # waits, not a try
    _backdate("sms", ids[0], 3600)  # long past the settle window + the contest wait
    outcome = sender.process_sms(_sms(ids[0], to, "same"), "q", 2)
    assert outcome.result == "dead_lettered" and outcome.code == "ambiguous"
    assert "could also be unresolved id(s)" in outcome.reason and ids[1] in outcome.reason
    assert _creates(outbound_env, ids[0]) == 1


# ---------------------------------------------------------------- 4. double sends are flagged


def test_a_list_lagging_past_the_settle_window_resends_and_the_late_callback_flags_the_double_send(
        callbacks: Any, set_env: Any, caplog: pytest.LogCaptureFixture, standin_http: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="1")
    to = fresh_number()
    ident = "lag-" + to[-4:]
    callbacks.list_lag = 30.0  # the list does not show the first message in time
    callbacks.fail_when(_to(to), "slow")
    with pytest.raises(RetryLaterError):
        sender.process_sms(_sms(ident, to, "lagging"), "q", 1)
    [first] = callbacks.created("sms")
    outcome = _settle("sms", (ident, _sms(ident, to, "lagging")))[ident]
    assert outcome.result == "sent" and _creates(callbacks, ident) == 2  # the documented risk, forced here
    with caplog.at_level("ERROR", logger="switchboard.ledger"):
        answer = callbacks.post_status_callback(first, "delivered", token=TEST_AUTH_TOKEN,
                                                deliver_to=standin_http.base_url)
    assert answer.status_code == 409
    stored = row("sms", ident)
    assert stored.sids == (outcome.sid, first.sid) and stored.status == "sent"  # the row did not move
    assert any("double_send" in r.getMessage() and ident in r.getMessage() for r in caplog.records)
    code, out = _ops("sends", "show", ident)
    assert code == 0 and first.sid in out and outcome.sid in out and "double send" in out


def test_status_callback_naming_another_ids_sid_is_409_and_changes_nothing(outbound_env: Any, standin_http: Any,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    to = fresh_number()
    mine, theirs = "cb-mine-" + to[-4:], "cb-theirs-" + to[-4:]
    assert sender.process_sms(_sms(mine, to, "one"), "q", 1).result == "sent"
    assert sender.process_sms(_sms(theirs, to, "two"), "q", 1).result == "sent"
    other = next(r for r in outbound_env.created("sms") if r.send_id == theirs)
    forged = type(other)(other.kind, other.account_sid, {**other.form, "StatusCallback": [
        other.first("StatusCallback").replace(theirs, mine)]}, other.username, 201, other.sid)
    with caplog.at_level("ERROR", logger="switchboard.ledger"):
        answer = outbound_env.post_status_callback(forged, "undelivered", token=TEST_AUTH_TOKEN,
                                                   deliver_to=standin_http.base_url, error_code="30003")
    assert answer.status_code == 409
    stored = row("sms", mine)
    assert stored.status == "sent" and stored.sids == (stored.sid,) and "error_code" not in stored.fields
    assert any("sid_mismatch" in r.getMessage() for r in caplog.records)


def _ops(*argv: str) -> tuple[int, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    code = ops.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


# ---------------------------------------------------------------- 5, 6. waits never spend the retry budget


def test_waiting_for_the_settle_window_is_not_a_failed_try(outbound_env: Any, set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="60")
    to = fresh_number()
    ident = "budget-" + to[-4:]
    outbound_env.fail_when(_to(to), "500", "reset")  # two real failures around one doubtful attempt
    last = sender.queue_settings().max_dequeue_count
    with pytest.raises(RetryLaterError):
        sender.process_sms(_sms(ident, to, "x"), "q", 1)
    for n in range(2, last + 1):  # every later delivery of this copy only waits: none is dead-lettered
        outcome = sender.process_sms(_sms(ident, to, "x"), "q", n)
        assert outcome.result == "deferred", outcome
    _backdate("sms", ident, 3600)
    with pytest.raises(RetryLaterError):  # the resend meets the second real failure (a reset): in doubt again
        sender.process_sms(_sms(ident, to, "x"), "q2", 1)
    _backdate("sms", ident, 3600)
    assert sender.process_sms(_sms(ident, to, "x"), "q2", last).result == "sent"  # even on a last try
    assert poison(sms_queue()) == [] and _creates(outbound_env, ident) == 1


def test_a_claim_left_with_a_live_lease_on_the_last_try_comes_back_instead_of_dead_lettering(
        outbound_env: Any) -> None:
    to = fresh_number()
    ident = "lease-" + to[-4:]
    ledger.try_claim("sms", ident)  # an attempt whose outcome update failed: claimed, lease still running
    last = sender.queue_settings().max_dequeue_count
    outcome = sender.process_sms(_sms(ident, to, "x"), "q", last)
    assert outcome.result == "deferred" and "claim in flight" in outcome.reason
    assert poison(sms_queue()) == [] and outbound_env.created() == []
