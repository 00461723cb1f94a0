"""Exactly once under faults: 500 SMS, 10 % transient Twilio faults (429, 500, and connection resets that leave
the send in doubt), 5 % duplicated queue messages, through the stand-in host. Every id is sent at most once and
none is lost; sends in doubt are reconciled with Twilio's list, so none is left ambiguous.

Prints the figures:  .venv/bin/python -m pytest tests/e2e/test_outbound_exactly_once.py -s -q
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from typing import Any

import pytest

from shared import sender
from tests.outbound_helpers import poison, put, sms_queue
from tests.peers.ports import wait_until
from tests.peers.twilio_fake import TRANSIENT_FAULTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MESSAGES, FAULT_RATE, DUPLICATE_RATE = 500, 0.10, 0.05


def test_500_sms_with_faults_and_duplicates_are_each_sent_at_most_once_and_none_lost(
        outbound_env: Any, standin_queues: Any, monkeypatch: pytest.MonkeyPatch, set_env: Any) -> None:
    set_env(RECONCILE_SETTLE_SECONDS="1")  # 60 s in production; the fake's list has no lag here
    outcomes: list[sender.Outcome] = []
    lock = threading.Lock()
    real_process = sender.process

    def recording(*args: Any, **kwargs: Any) -> sender.Outcome:
        outcome = real_process(*args, **kwargs)
        with lock:
            outcomes.append(outcome)
        return outcome

    monkeypatch.setattr(sender, "process", recording)
    rng = random.Random(7)
    ids = [f"eo-{i:04d}" for i in range(MESSAGES)]
    copies = ids + rng.sample(ids, int(MESSAGES * DUPLICATE_RATE))
    rng.shuffle(copies)
    for ident in copies:
        put(sms_queue(), {"id": ident, "to": f"+1415555{int(ident[3:]):04d}", "body": f"message {ident}"})
    outbound_env.fault_rate, outbound_env.fault_choices = FAULT_RATE, TRANSIENT_FAULTS

    started = time.monotonic()
    host = standin_queues(visibility_timeout=1)
    wait_until(lambda: host.stats.succeeded >= len(copies) and host.wait_idle(), 90, "every message to settle")
    elapsed = time.monotonic() - started

    created = collections.Counter(r.send_id for r in outbound_env.created())
    letters = {e["error"]["id"]: e["error"] for e in poison(sms_queue())}
    twice = {i: n for i, n in created.items() if n > 1}
    lost = [i for i in ids if i not in created and i not in letters]
    assert twice == {}, f"sent more than once: {twice}"
    assert lost == [], f"neither sent nor dead-lettered: {lost[:10]}"
    assert all(letters[i]["reason"] for i in letters)
    assert [i for i, e in letters.items() if e["code"] == "ambiguous"] == []
    sent_and_poisoned = set(created) & set(letters)
    results = collections.Counter(o.result for o in outcomes)
    dead_codes = collections.Counter(e["code"] for e in letters.values())
    assert host.stats.moved_to_poison == 0  # the app always dead-letters with a reason first
    assert results["sent"] == len(created)
    faults = collections.Counter(r.fault for r in outbound_env.requests if r.fault)
    print(json.dumps({
        "queue_messages": len(copies), "ids": MESSAGES, "sent_once": len(created), "sent_twice": len(twice),
        "dead_lettered": len(letters), "dead_letter_codes": dict(dead_codes),
        "sent_and_dead_lettered": len(sent_and_poisoned),
        "duplicates_suppressed": results["duplicate"], "retries": host.stats.failed,
        "faults_injected": dict(faults), "twilio_requests": len(outbound_env.requests),
        "seconds": round(elapsed, 2), "sends_per_second": round(len(created) / elapsed, 1),
    }, indent=1))
    assert elapsed < 90
