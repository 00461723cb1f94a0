"""Guardrails against Azurite and the Twilio fake: every refusal a runaway producer or a fraud attempt meets
(README, Guardrails): a region outside ALLOWED_DESTINATIONS, a number that cannot exist, the per-recipient cap,
the hourly budget (deferred, then sent when the window has room) and the races at both limits."""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
import uuid
from typing import Any, Callable

import pytest

from shared import enqueue, guardrails, ledger, sender, storage
from shared.sender import Outcome, RetryLaterError
from tests.outbound_helpers import call_queue, drain, poison, row, sms_queue


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fresh_number() -> str:
    """A US number of its own: the guardrails table outlives each test in the shared Azurite."""
    return f"+1312{random.randrange(2_000_000, 9_999_999)}"


def sms(to: str, ident: str | None = None, **extra: Any) -> str:
    return json.dumps({"id": ident or uid("g"), "to": to, "body": "hello", **extra})


def call(to: str, ident: str | None = None) -> str:
    return json.dumps({"id": ident or uid("c"), "to": to, "say": "hello"})


_WINDOWS = itertools.count(5_000_000, 1000)  # hours after 1970; each test gets later ones than the last


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """A settable clock for the guards, starting at the beginning of an hour later than any earlier test used,
    so the budget shards (shared by every test in this Azurite) start the test empty, as in a new hour."""
    now = [next(_WINDOWS) * 3600.0 + 0.5]
    monkeypatch.setattr(guardrails, "_now", lambda: now[0])
    guardrails.reset_caches()

    def advance(seconds: float) -> None:
        now[0] += seconds

    return advance


def race(bodies: list[tuple[str, str]]) -> tuple[list[Outcome], list[BaseException]]:
    """Process every (kind, body) on its own thread, all released at once."""
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(bodies))
    lock = threading.Lock()

    def run(kind: str, body: str, i: int) -> None:
        barrier.wait()
        try:
            result = sender.process(kind, body, f"race-{i}", 1)
            with lock:
                outcomes.append(result)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(kind, body, i)) for i, (kind, body) in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads)
    return outcomes, errors


# ---------------------------------------------------------------- destinations


@pytest.mark.parametrize(("to", "region"), [
    ("+14165550100", "region CA"),                        # +1 but Canada: the region is real, not the country code
    ("+18765550100", "region JM"),                        # +1 876: Jamaica
    ("whatsapp:+442071838750", "region GB"),              # a WhatsApp address is checked on its number
    ("+882345678901", "non-geographic (no region)"),      # satellite/international networks: never allowed
])
def test_a_send_outside_allowed_destinations_is_dead_lettered_naming_the_region(outbound_env: Any, set_env: Any,
                                                                                 to: str, region: str) -> None:
    set_env(ALLOWED_DESTINATIONS="US, pr")
    ident = uid("dest")
    outcome = sender.process_sms(sms(to, ident), "q", 1)
    assert outcome.result == "dead_lettered" and outcome.code == "destination_not_allowed"
    [letter] = poison(sms_queue())
    assert letter["error"]["code"] == "destination_not_allowed"
    assert letter["error"]["reason"] == f"to: {region} is not in ALLOWED_DESTINATIONS (US,PR)"
    assert outbound_env.created() == []
    stored = row("sms", ident)
    assert stored is not None and stored.status == "rejected" and stored.fields.get("resendable") is True


def test_calls_are_held_to_the_allowlist_too(outbound_env: Any, set_env: Any) -> None:
    set_env(ALLOWED_DESTINATIONS="US")
    outcome = sender.process_call(call("+447911123456"), "q", 1)
    assert outcome.code == "destination_not_allowed" and "region GG" in outcome.reason
    assert [x["error"]["code"] for x in poison(call_queue())] == ["destination_not_allowed"]
    assert outbound_env.created() == []


@pytest.mark.parametrize("to", ["+14155550100", "+15005550006", "+15005550009", "whatsapp:+13125550100",
                                "+17875550100"])
def test_allowed_regions_twilio_test_numbers_and_whatsapp_still_send(outbound_env: Any, set_env: Any,
                                                                      to: str) -> None:
    set_env(ALLOWED_DESTINATIONS="US,PR")
    outcome = sender.process_sms(sms(to), "q", 1)
    assert outcome.result == "sent", outcome
    assert len(outbound_env.created()) == 1 and poison(sms_queue()) == []


def test_a_deferred_send_outside_the_allowlist_is_refused_now_not_at_send_at(outbound_env: Any, set_env: Any) -> None:
    set_env(ALLOWED_DESTINATIONS="US")
    outcome = sender.process_sms(sms("+14165550100", send_at="2099-01-01T00:00:00Z"), "q", 1)
    assert outcome.code == "destination_not_allowed" and drain(sms_queue()) == []


@pytest.mark.parametrize(("to", "rule"), [
    ("+1415555", "to: not a possible phone number: 6 digits after +1 is too short for US"),
    ("+4479111", "to: not a possible phone number: 5 digits after +44 is a local-only number in GB"),
    ("+999123456789", "to: not a possible phone number: it starts with no country code"),
    ("whatsapp:+120255", "to: not a possible phone number: 5 digits after +1 is too short for US"),
])
def test_a_number_that_cannot_exist_is_an_invalid_message_with_the_reason(outbound_env: Any, to: str,
                                                                          rule: str) -> None:
    outcome = sender.process_sms(sms(to), "q", 1)
    assert outcome.code == "invalid_message" and outcome.reason.startswith(rule), outcome.reason
    [letter] = poison(sms_queue())
    assert letter["error"]["field"] == "to" and letter["error"]["reason"].startswith(rule)
    assert outbound_env.created() == []


def test_enqueue_cli_with_an_allowlist_enqueues_an_allowed_number(azurite: Any, unique_queues: Any, set_env: Any,
                                                                  capsys: Any) -> None:
    set_env(ALLOWED_DESTINATIONS="US")
    assert enqueue.main(["sms", "--to", "+14155550100", "--body", "hi"]) == 0
    [text] = drain(sms_queue())
    assert json.loads(text)["to"] == "+14155550100"
    assert enqueue.main(["sms", "--to", "+14165550100", "--body", "hi"]) == enqueue.EXIT_INVALID
    assert "to: region CA is not in ALLOWED_DESTINATIONS (US)" in capsys.readouterr().err
    assert drain(sms_queue()) == []


# ---------------------------------------------------------------- per-recipient cap


def test_over_the_recipient_cap_is_dead_lettered_with_the_count_and_the_window(outbound_env: Any,
                                                                               set_env: Any) -> None:
    set_env(MAX_SENDS_PER_RECIPIENT_PER_HOUR="3")
    to = fresh_number()
    # SMS, WhatsApp and a call to one number are one recipient
    assert sender.process_sms(sms(to), "q", 1).result == "sent"
    assert sender.process_sms(sms("whatsapp:" + to), "q", 1).result == "sent"
    assert sender.process_call(call(to), "q", 1).result == "sent"
    ident = uid("over")
    outcome = sender.process_sms(sms(to, ident), "q", 1)
    assert outcome.result == "dead_lettered" and outcome.code == "recipient_rate_limited"
    assert outcome.reason == "recipient got 3 sends in the last 3600 s (MAX_SENDS_PER_RECIPIENT_PER_HOUR = 3)"
    [letter] = poison(sms_queue())
    assert (letter["error"]["count"], letter["error"]["cap"], letter["error"]["window_seconds"]) == (3, 3, 3600)
    assert len(outbound_env.created()) == 3
    assert row("sms", ident).status == "rejected"
    # another number is not affected
    assert sender.process_sms(sms(fresh_number()), "q", 1).result == "sent"


def test_a_redelivered_id_is_not_counted_twice(outbound_env: Any, set_env: Any) -> None:
    set_env(MAX_SENDS_PER_RECIPIENT_PER_HOUR="2")
    to = fresh_number()
    first = uid("once")
    assert sender.process_sms(sms(to, first), "q1", 1).result == "sent"
    for attempt in (2, 3):  # queue redeliveries of the same id: acknowledged, not counted
        assert sender.process_sms(sms(to, first), f"q{attempt}", attempt).result == "duplicate"
    assert sender.process_sms(sms(to), "q4", 1).result == "sent"
    assert sender.process_sms(sms(to), "q5", 1).code == "recipient_rate_limited"
    assert len(outbound_env.created()) == 2


def test_a_sent_id_redelivered_after_the_cap_filled_is_a_duplicate_not_a_dead_letter(outbound_env: Any,
                                                                                     set_env: Any) -> None:
    to = fresh_number()
    ident = uid("before")
    assert sender.process_sms(sms(to, ident), "q", 1).result == "sent"  # sent before the cap was switched on
    set_env(MAX_SENDS_PER_RECIPIENT_PER_HOUR="1")
    assert sender.process_sms(sms(to), "q", 1).result == "sent"        # fills the cap
    assert sender.process_sms(sms(to, ident), "q", 2).result == "duplicate"
    assert poison(sms_queue()) == [] and len(outbound_env.created()) == 2


def test_16_concurrent_sends_to_one_recipient_at_the_cap_send_exactly_the_cap(outbound_env: Any,
                                                                             set_env: Any) -> None:
    set_env(MAX_SENDS_PER_RECIPIENT_PER_HOUR="5")
    to = fresh_number()
    outcomes, errors = race([("sms", sms(to)) for _ in range(16)])
    assert errors == []
    assert sorted(o.result for o in outcomes) == ["dead_lettered"] * 11 + ["sent"] * 5
    assert {o.code for o in outcomes if o.result == "dead_lettered"} == {"recipient_rate_limited"}
    assert len(outbound_env.created()) == 5
    entity = storage.table(guardrails.TABLE).get_entity(ledger.partition_key("recipient", to), to)
    assert entity["count"] == 5


def test_an_unusable_cap_setting_holds_sends_back_instead_of_sending_unguarded(outbound_env: Any,
                                                                              set_env: Any) -> None:
    set_env(MAX_SENDS_PER_RECIPIENT_PER_HOUR="ten")
    with pytest.raises(RetryLaterError, match="MAX_SENDS_PER_RECIPIENT_PER_HOUR must be a whole number"):
        sender.process_sms(sms(fresh_number()), "q", 1)
    assert outbound_env.created() == []


# ---------------------------------------------------------------- hourly budget


def wait_for_message(queue_name: str, seconds: float) -> Any:
    """Poll the queue until a message becomes visible (bounded)."""
    client = storage.queue(queue_name)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        [*batch] = client.receive_messages(messages_per_page=1, max_messages=1, visibility_timeout=30)
        if batch:
            client.delete_message(batch[0].id, batch[0].pop_receipt)
            return batch[0]
        time.sleep(0.2)
    raise AssertionError(f"no message on {queue_name} within {seconds} s")


def test_over_the_hourly_budget_a_send_is_deferred_then_sent_when_the_window_has_room(
        outbound_env: Any, set_env: Any, clock: Callable[[float], None], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.outbound")  # as the worker's root logger at INFO
    monkeypatch.setattr(guardrails, "WINDOW_SECONDS", 4.0)  # "an hour" of 4 s: the deferral is short
    clock(0)  # the fixture's hour seen as 4 s windows: still later than any window used before
    set_env(MAX_SENDS_PER_HOUR="2")
    assert [sender.process_sms(sms(fresh_number()), "q", 1).result for _ in range(2)] == ["sent", "sent"]
    late = uid("late")
    outcome = sender.process_sms(sms(fresh_number(), late), "q-late", 1)
    assert outcome.result == "deferred" and outcome.code == "budget_exhausted"
    assert len(outbound_env.created()) == 2 and poison(sms_queue()) == []
    line = [r.getMessage() for r in caplog.records if r.name == "switchboard.outbound" and late in r.getMessage()]
    assert line and " outcome=deferred budget_exhausted: 2 sends per 4 s spent" in line[-1]
    assert row("sms", late) is None  # never claimed: nothing to reconcile later
    # invisible until the next window, then back on the queue with its id
    message = wait_for_message(sms_queue(), 20)
    assert json.loads(message.content)["id"] == late
    clock(guardrails.WINDOW_SECONDS)
    again = sender.process_sms(message.content, message.id, 1)
    assert again.result == "sent" and again.id == late
    assert len(outbound_env.created()) == 3


def test_concurrent_sends_at_the_budget_edge_never_exceed_the_budget(outbound_env: Any, set_env: Any,
                                                                    clock: Callable[[float], None]) -> None:
    set_env(MAX_SENDS_PER_HOUR="20")  # 16 shards: four hold 2, twelve hold 1
    bodies = [("sms", sms(fresh_number())) for _ in range(28)]
    outcomes, errors = race(bodies)
    assert errors == []
    results = sorted(o.result for o in outcomes)
    assert results == ["deferred"] * 8 + ["sent"] * 20
    assert len(outbound_env.created()) == 20
    assert len(drain(sms_queue())) == 0  # deferred copies are invisible until the next window
    # Next window: room again.
    clock(guardrails.WINDOW_SECONDS)
    assert sender.process_sms(sms(fresh_number()), "q", 1).result == "sent"


def test_an_instance_that_saw_the_budget_spent_defers_without_reading_the_shards(
        outbound_env: Any, set_env: Any, clock: Callable[[float], None], monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(MAX_SENDS_PER_HOUR="1")
    assert sender.process_sms(sms(fresh_number()), "q", 1).result == "sent"
    assert sender.process_sms(sms(fresh_number()), "q", 1).result == "deferred"
    reads: list[str] = []
    real_get = guardrails._get
    monkeypatch.setattr(guardrails, "_get", lambda pk, rk: reads.append(rk) or real_get(pk, rk))
    assert sender.process_sms(sms(fresh_number()), "q", 1).result == "deferred"
    assert reads == []


def test_sixteen_threads_of_one_process_never_race_each_other_for_a_budget_shard_or_a_recipient(
        outbound_env: Any, clock: Callable[[float], None], monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    lost: list[str] = []
    real_write = guardrails._write
    monkeypatch.setattr(guardrails, "_write",
                        lambda existing, entity: real_write(existing, entity) or lost.append(entity["RowKey"]))
    number = fresh_number()
    budget = 16 * 12

    def sends(k: int) -> None:
        for i in range(12):
            guardrails.take_budget_unit(budget)
            guardrails.count_recipient_send(number, "sms", f"race-{k}-{i}", 1000)

    threads = [threading.Thread(target=sends, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert lost == [], f"{len(lost)} conditional writes lost to a thread of the same process"
    with pytest.raises(guardrails.BudgetExhaustedError):  # every unit was taken exactly once
        guardrails.take_budget_unit(budget)
    assert guardrails.count_recipient_send(number, "sms", "one-more", 1000) == 16 * 12 + 1
