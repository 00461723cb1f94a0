"""Reading Twilio back for a send in doubt: the Twilio fake's list endpoints, and reconcile's matching rules.

These go through the real twilio SDK (``client.messages.page`` / ``client.calls.page``) against the fake, and the
ledger on Azurite; the end-to-end outcomes through the queue function are in test_reconcile_sends.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
import uuid
from typing import Any

import pytest
import requests

from shared import ledger, reconcile, twilio_api
from shared.outbound import validate
from tests.conftest import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_FROM

TO = "+14155550177"
OTHER = "+14155550188"


def _sms(ident: str, body: str = "your code is 4242", **extra: Any) -> Any:
    return validate("sms", {"id": ident, "to": TO, "body": body, **extra})


def _send(message: Any) -> str:
    return twilio_api.send_sms(message, from_=TEST_FROM, messaging_service_sid=None).sid


def _fresh(ident: str) -> str:
    return f"{ident}-{uuid.uuid4().hex[:8]}"


def _claimed_row(ident: str, *, ago: float = 0.0, kind: str = "sms") -> ledger.Row:
    claimed, row = ledger.try_claim(kind, ident)
    assert claimed
    if ago:
        row = ledger.update(row, claimed_at=datetime.now(timezone.utc) - timedelta(seconds=ago))
    return row


def _verdict(message: Any, row: ledger.Row, *, settle: float = 0.0, sender: tuple = (TEST_FROM, None),
             now: datetime | None = None) -> Any:
    return reconcile.reconcile(message, sender, row, twilio_timeout=0.0, settle_seconds=settle, now=now)


# ---------------------------------------------------------------- the fake's list endpoints


def test_fake_lists_messages_newest_first_filtered_and_paged_like_twilio(twilio_fake: Any) -> None:
    for n in range(5):
        _send(_sms(f"list-{n}", body=f"n{n}"))
    twilio_api.send_sms(validate("sms", {"id": "x", "to": OTHER, "body": "other"}), from_=TEST_FROM,
                        messaging_service_sid=None)
    url = f"{twilio_fake.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    first = requests.get(url, params={"To": TO, "PageSize": 2}, auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN),
                         timeout=5).json()
    assert [m["body"] for m in first["messages"]] == ["n4", "n3"]
    assert first["page_size"] == 2 and first["next_page_uri"] and first["previous_page_uri"] is None
    second = requests.get(twilio_fake.base_url + first["next_page_uri"], auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN),
                          timeout=5).json()
    assert [m["body"] for m in second["messages"]] == ["n2", "n1"]
    # A message still queued has no DateSent, so a DateSent filter never finds it (why reconcile sends none).
    dated = requests.get(url, params={"To": TO, "DateSent>": "2000-01-01"}, auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN),
                         timeout=5).json()
    assert dated["messages"] == []


def test_fake_list_refuses_wrong_credentials(twilio_fake: Any) -> None:
    url = f"{twilio_fake.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls.json"
    response = requests.get(url, auth=(TEST_ACCOUNT_SID, "wrong"), timeout=5)
    assert response.status_code == 401 and response.json()["code"] == 20003


def test_list_recent_stops_at_resources_older_than_the_claim(twilio_fake: Any) -> None:
    for n in range(3):
        _send(_sms(f"old-{n}", body=f"old{n}"))
    read = twilio_api.list_recent("sms", to=TO, from_=TEST_FROM,
                                  created_after=datetime.now(timezone.utc) + timedelta(seconds=5))
    assert read.items == () and read.complete and read.pages == 1


def test_list_recent_bounded_in_pages_reports_an_incomplete_read(twilio_fake: Any) -> None:
    for n in range(7):
        _send(_sms(f"many-{n}", body=f"m{n}"))
    read = twilio_api.list_recent("sms", to=TO, from_=TEST_FROM, page_size=2, max_pages=2,
                                  created_after=datetime.now(timezone.utc) - timedelta(hours=1))
    assert len(read.items) == 4 and not read.complete and read.pages == 2
    assert len(twilio_fake.list_reads) == 2


@pytest.mark.parametrize("fault", ["500", "429", "slow"])
def test_unreadable_twilio_list_raises_a_read_error(twilio_fake: Any, fault: str) -> None:
    twilio_fake.fail_lists_next(fault)
    with pytest.raises(twilio_api.TwilioReadError) as info:
        twilio_api.list_recent("sms", to=TO, from_=TEST_FROM, created_after=datetime.now(timezone.utc))
    assert "cannot read Twilio's Messages list" in info.value.reason


# ---------------------------------------------------------------- reconcile's rules


def test_send_created_after_a_client_timeout_is_found(outbound_env: Any) -> None:
    ident = _fresh("late-1")
    message = _sms(ident)
    row = _claimed_row(ident)
    outbound_env.fail_next("slow")
    with pytest.raises(twilio_api.TransientTwilioError) as info:
        _send(message)
    assert info.value.maybe_sent
    verdict = _verdict(message, row)
    [created] = outbound_env.created("sms")
    assert verdict.outcome == "found" and verdict.sid == created.sid


def test_send_never_created_is_absent_only_after_the_settle_window(outbound_env: Any) -> None:
    ident = _fresh("gone-1")
    message = _sms(ident)
    row = _claimed_row(ident)
    assert _verdict(message, row, settle=30).outcome == "too_soon"
    old_row = ledger.update(row, claimed_at=datetime.now(timezone.utc) - timedelta(seconds=31))
    assert _verdict(message, old_row, settle=30).outcome == "absent"


def test_send_hidden_by_list_lag_is_not_declared_absent_before_settling(outbound_env: Any) -> None:
    outbound_env.list_lag = 60.0
    ident = _fresh("lag-1")
    message = _sms(ident)
    row = _claimed_row(ident)
    _send(message)
    assert _verdict(message, row, settle=30).outcome == "too_soon"


def test_sid_recorded_for_another_id_is_not_taken_for_this_one(outbound_env: Any) -> None:
    body = "same words, two ids"
    other_id, ident = _fresh("twin-a"), _fresh("twin-b")
    other = _sms(other_id, body=body)
    claimed, other_row = ledger.try_claim("sms", other_id)
    sid = _send(other)
    ledger.record_sent(other_row, sid, "queued")
    mine = _sms(ident, body=body)
    row = _claimed_row(ident, ago=5)
    verdict = _verdict(mine, row)
    assert verdict.outcome == "absent" and "belong to other ids" in verdict.detail


def test_two_unclaimed_matching_sends_are_contested_until_callbacks_tell_them_apart(outbound_env: Any) -> None:
    ident = _fresh("dup-1")
    message = _sms(ident)
    row = _claimed_row(ident)
    _send(message)
    _send(message)
    verdict = _verdict(message, row)
    assert verdict.outcome == "contested" and "2 unclaimed sends" in verdict.detail


@pytest.mark.parametrize("change", [
    {"body": "a different body"},
    {"to": OTHER},
    {"media_urls": ["https://e.com/a.png"]},
])
def test_a_send_differing_in_content_is_not_a_match(outbound_env: Any, change: dict[str, Any]) -> None:
    ident = _fresh("diff-1")
    message = _sms(ident)
    row = _claimed_row(ident, ago=1)
    _send(validate("sms", {"id": "diff-other", "to": TO, "body": "your code is 4242", **change}))
    assert _verdict(message, row).outcome == "absent"


def test_a_send_from_another_sender_is_not_a_match(outbound_env: Any) -> None:
    ident = _fresh("from-1")
    message = _sms(ident)
    row = _claimed_row(ident, ago=1)
    twilio_api.send_sms(message, from_="+15005550009", messaging_service_sid=None)
    assert _verdict(message, row).outcome == "absent"


def test_a_send_created_before_the_claim_is_not_a_match(outbound_env: Any) -> None:
    ident = _fresh("before")
    message = _sms(ident)
    _send(message)
    later = datetime.now(timezone.utc) + reconcile.CLOCK_SKEW + timedelta(seconds=5)
    row = ledger.update(_claimed_row(ident), claimed_at=later)
    assert _verdict(message, row, now=later + timedelta(seconds=1)).outcome == "absent"


def test_messaging_service_send_is_matched_on_its_service(outbound_env: Any) -> None:
    service = "MG" + "ab" * 16
    ident = _fresh("svc-1")
    message = _sms(ident)
    row = _claimed_row(ident)
    twilio_api.send_sms(message, from_=None, messaging_service_sid=service)
    assert _verdict(message, row, sender=(None, service)).outcome == "found"
    assert _verdict(message, row, sender=(None, "MG" + "cd" * 16)).outcome == "absent"


def test_call_in_doubt_is_found_by_recipient_sender_and_time(outbound_env: Any) -> None:
    ident = _fresh("call-late")
    message = validate("call", {"id": ident, "to": TO, "say": "hello"})
    row = _claimed_row(ident, kind="call")
    outbound_env.fail_next("slow")
    with pytest.raises(twilio_api.TransientTwilioError):
        twilio_api.place_call(message, from_=TEST_FROM)  # type: ignore[arg-type]
    verdict = _verdict(message, row)
    [created] = outbound_env.created("call")
    assert verdict.outcome == "found" and verdict.sid == created.sid and created.sid.startswith("CA")


# ---------------------------------------------------------------- Prism: the read requests follow Twilio's spec


def _prism_violations(prism_peer: str, set_env: Any, kind: str, **bounds: Any) -> list[dict[str, Any]]:
    """The SDK's list request sent to Prism (``--errors``); returns the violations Prism reports.

    Prism's generated list answers break the spec's own ``format: uri`` on ``uri`` / ``*_page_uri`` (the spec's
    examples are relative paths), so Prism answers 500 with *response* violations even for a valid request; a
    request that breaks the spec gets 422 with violations located in the request (``query``, ``path``…) instead.
    """
    import json

    set_env(TWILIO_API_BASE_URL=prism_peer, TWILIO_HTTP_TIMEOUT_SECONDS="10")
    try:
        twilio_api.list_recent(kind, to=TO, from_=TEST_FROM, max_pages=1,
                               created_after=datetime.now(timezone.utc) - timedelta(days=36500), **bounds)
        return []
    except twilio_api.TwilioReadError as exc:
        text = str(exc.__cause__)
        return json.loads(text[text.index("{"):text.rindex("}") + 1])["validation"]


@pytest.mark.parametrize("kind", ["sms", "call"])
def test_read_back_requests_are_accepted_by_prism(prism_peer: str, set_env: Any, kind: str) -> None:
    violations = _prism_violations(prism_peer, set_env, kind)
    assert violations and [v for v in violations if v["location"][0] != "response"] == []


def test_prism_flags_a_read_back_request_that_breaks_the_spec(prism_peer: str, set_env: Any) -> None:
    violations = _prism_violations(prism_peer, set_env, "sms", page_size=5000)  # PageSize maximum is 1000
    assert any(v["location"] == ["query", "pagesize"] for v in violations)
