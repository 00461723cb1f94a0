"""Exactly-once scenarios the random soak rarely draws: sends that could be taken for one another, 5xx answers
after a create, and a list that lags past the settle window. Part of the soak (``python -m bench.soak``, or
alone: ``python -m bench.soak_scenarios [--pairs 20]``).

Each scenario runs on its own queues and recipients, through the local host's queue half (devhost/queues.py,
host.json semantics) and HTTP half (status callbacks, signed as Twilio signs them), against Azurite and a Twilio
fake of its own. Counts come from the fake's record of creates, never from the ledger:

- double sends: ids created more than once;
- lost: ids neither created nor dead-lettered;
- ambiguous: ids dead-lettered as ``ambiguous``;
- flagged: ids whose ledger row lists more than one SID (each also logged as an ERROR ``double_send``).

Goal for every scenario: 0 double sends, 0 lost, 0 ambiguous, except ``list lag beyond settle``, whose doubles
are forced on purpose (the documented risk of a list that lags longer than timeout + settle): there every double
must be flagged.

- confusable SMS pairs: per recipient, A ("code N") whose create is reset unanswered (nothing created) and B
  ("Reminder: code N", ends with A's body) created but answered too late; callbacks come late.
- confusable call pairs: the same with two calls saying different things (Twilio's list shows no TwiML).
- identical, both late: two ids, same recipient and body, both created and answered too late, callbacks late.
- 5xx after create: each create goes through and is answered 500 or 503.
- list lag beyond settle: the create is answered too late and the list shows it only after the resend.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable

from bench._common import ROOT, indexed_functions, use_app_environment

ACCOUNT_SID = "AC" + "fedcba9876543210" * 2
AUTH_TOKEN = "scenario-auth-token-0123456789ab"
FROM = "+15005550006"
PUBLIC_BASE_URL = "https://switchboard.example.net"
TWILIO_TIMEOUT, SETTLE = 2.0, 2.0


@dataclass
class Result:
    name: str
    ids: int = 0
    double: int = 0
    lost: int = 0
    ambiguous: int = 0
    flagged: int = 0
    forced_doubles_expected: bool = False
    seconds: float = 0.0
    settled: bool = True
    outcomes: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        doubles_ok = self.double == self.flagged if self.forced_doubles_expected else self.double == 0
        return self.settled and doubles_ok and self.lost == 0 and self.ambiguous == 0

    def line(self) -> str:
        goal = "every double flagged" if self.forced_doubles_expected else "0 / 0 / 0"
        return (f"{self.name:<28} | ids {self.ids:>3} | double sends {self.double:>3} | lost {self.lost:>3} | "
                f"ambiguous {self.ambiguous:>3} | flagged {self.flagged:>3} | {self.seconds:5.1f} s | goal {goal}: "
                f"{'ok' if self.ok else 'MISS'}" + ("" if self.settled else " (did not settle in time)"))


@dataclass(frozen=True)
class Send:
    kind: str            # sms | call
    id: str
    document: dict[str, Any]
    fault: str           # the fake's answer to this id's first create ("" = normal)


@dataclass(frozen=True)
class Scenario:
    name: str
    sends: Callable[[int, str], list[Send]]
    callback_delay: float = 0.0        # 0 = no status callbacks
    list_lag: float = 0.0
    forced_doubles: bool = False


def _to(run: str, i: int, offset: int) -> str:
    return f"+1628{offset:03d}{(int(run, 16) + i) % 10000:04d}"


def confusable_sms(pairs: int, run: str) -> list[Send]:
    out = []
    for i in range(pairs):
        to = _to(run, i, 551)
        out.append(Send("sms", f"sms-a-{run}-{i}", {"to": to, "body": f"code {i}"}, "reset"))
        out.append(Send("sms", f"sms-b-{run}-{i}", {"to": to, "body": f"Reminder: code {i}"}, "slow"))
    return out


def confusable_calls(pairs: int, run: str) -> list[Send]:
    out = []
    for i in range(pairs):
        to = _to(run, i, 552)
        out.append(Send("call", f"call-a-{run}-{i}", {"to": to, "say": f"Appointment A {i}"}, "reset"))
        out.append(Send("call", f"call-b-{run}-{i}", {"to": to, "say": f"Appointment B {i}"}, "slow"))
    return out


def identical_late(pairs: int, run: str) -> list[Send]:
    out = []
    for i in range(pairs):
        to = _to(run, i, 553)
        for side in "ab":
            out.append(Send("sms", f"same-{side}-{run}-{i}", {"to": to, "body": "your table is ready"}, "slow"))
    return out


def edge_5xx(pairs: int, run: str) -> list[Send]:
    return [Send("sms", f"edge-{run}-{i}", {"to": _to(run, i, 554), "body": f"edge {i}"},
                 "500-created" if i % 2 else "503-created") for i in range(2 * pairs)]


def lagging_list(pairs: int, run: str) -> list[Send]:
    return [Send("sms", f"lag-{run}-{i}", {"to": _to(run, i, 555), "body": f"lag {i}"}, "slow")
            for i in range(max(2, pairs // 4))]


SCENARIOS = (
    Scenario("confusable SMS pairs", confusable_sms, callback_delay=3 * SETTLE),
    Scenario("confusable call pairs", confusable_calls, callback_delay=3 * SETTLE),
    Scenario("identical, both late", identical_late, callback_delay=3 * SETTLE),
    Scenario("5xx after create", edge_5xx),
    # The list shows a message 30 s late, well past timeout + settle (4 s); the callback comes after the resend.
    Scenario("list lag beyond settle", lagging_list, callback_delay=4 * (TWILIO_TIMEOUT + SETTLE), list_lag=30.0,
             forced_doubles=True),
)


def run_scenario(scenario: Scenario, pairs: int, azurite: Any, *, timeout: float = 180.0,
                 functions: list[Any] | None = None) -> Result:
    """Run one scenario on fresh queues and a Twilio fake of its own; ``functions``: the indexed app (default:
    index function_app here)."""
    from azure.core.exceptions import ResourceExistsError

    from devhost.http import HttpHost
    from devhost.queues import QueueHost
    from shared import ledger, storage
    from tests.conftest import reset_app_state
    from tests.peers.twilio_fake import start_twilio_fake

    run = uuid.uuid4().hex[:4]
    sends = scenario.sends(pairs, run)
    result = Result(scenario.name, ids=len(sends), forced_doubles_expected=scenario.forced_doubles)
    fake = start_twilio_fake(ACCOUNT_SID, {ACCOUNT_SID: AUTH_TOKEN}, slow_seconds=TWILIO_TIMEOUT + 0.5,
                             list_lag=scenario.list_lag)
    for send in sends:
        if send.fault:
            fake.fail_when(_for_id(send.id), send.fault)
    with ExitStack() as stack:
        stack.callback(fake.stop)
        use_app_environment(stack, {
            "AzureWebJobsStorage": azurite.connection_string, "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM, "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "TWILIO_API_BASE_URL": fake.base_url, "SMS_QUEUE": f"scn-sms-{run}", "CALL_QUEUE": f"scn-calls-{run}",
            "INBOUND_QUEUE": f"scn-inbound-{run}", "TWILIO_HTTP_TIMEOUT_SECONDS": str(TWILIO_TIMEOUT),
            "RECONCILE_SETTLE_SECONDS": str(SETTLE), "PYTHON_THREADPOOL_THREAD_COUNT": "16", "PACING": "off",
        }, unset=("KEY_VAULT_URL", "TWILIO_API_KEY_SID", "TWILIO_MESSAGING_SERVICE_SID", "SMS_AUTO_REPLY",
                  "ALLOWED_DESTINATIONS", "MAX_SENDS_PER_RECIPIENT_PER_HOUR", "MAX_SENDS_PER_HOUR"))
        reset_app_state()
        stack.callback(reset_app_state)
        functions = functions if functions is not None else indexed_functions()
        http = HttpHost(functions)
        http.start()
        stack.callback(http.stop)
        if scenario.callback_delay:
            fake.callback_status = "sent"
            fake.callback_delay, fake.callback_token, fake.callback_deliver_to = (scenario.callback_delay,
                                                                                  AUTH_TOKEN, http.base_url)
        queues = {"sms": f"scn-sms-{run}", "call": f"scn-calls-{run}"}
        for name in list(queues.values()) + [q + "-poison" for q in queues.values()]:
            try:
                storage.queue(name).create_queue()
            except ResourceExistsError:
                pass  # the app's queue client creates its queue on first use
        started = time.monotonic()
        for send in sends:
            storage.queue(queues[send.kind]).send_message(json.dumps({"id": send.id, **send.document}))
        host = QueueHost(functions, visibility_timeout=1.0)
        host.start()
        stack.callback(host.stop)
        deadline = started + timeout
        result.settled = False
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if all(_settled(ledger.get(s.kind, s.id)) for s in sends) and _queues_empty(storage, queues):
                result.settled = True
                break
        if scenario.callback_delay:  # the last callbacks (late by design) may still be on their way
            _wait_for_callbacks(fake, deadline)
        result.seconds = time.monotonic() - started
        host.stop()
        poisoned: dict[str, str] = {}
        for queue in queues.values():
            for text in _drain(storage.queue(queue + "-poison")):
                error = json.loads(text).get("error", {})
                poisoned[str(error.get("id", ""))] = str(error.get("code", ""))
        created = Counter(r.send_id for r in fake.created())
        for send in sends:
            n = created.get(send.id, 0)
            row = ledger.get(send.kind, send.id)
            result.outcomes[row.status if row else "no row"] += 1
            if n > 1:
                result.double += 1
            if n == 0 and send.id not in poisoned:
                result.lost += 1
            if poisoned.get(send.id) == "ambiguous":
                result.ambiguous += 1
            if row is not None and len(row.sids) > 1:
                result.flagged += 1
    return result


def _for_id(ident: str) -> Callable[[Any], bool]:
    return lambda record: record.send_id == ident


def _settled(row: Any) -> bool:
    return row is not None and (bool(row.sid) or row.status in ("failed", "rejected"))


def _queues_empty(storage: Any, queues: dict[str, str]) -> bool:
    return all(int(storage.queue(q).get_queue_properties().approximate_message_count or 0) == 0
               for q in queues.values())


def _wait_for_callbacks(fake: Any, deadline: float) -> None:
    while time.monotonic() < deadline:
        with fake._lock:  # noqa: SLF001 - a consistent count
            posted = len(fake.callbacks_posted)
        if posted >= len(fake.created()):
            return
        time.sleep(0.25)


def _drain(client: Any) -> list[str]:
    texts = []
    while True:
        batch = list(client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=600))
        if not batch:
            return texts
        texts += [m.content for m in batch]


def run_all(pairs: int, *, only: list[str] | None = None) -> list[Result]:
    sys.path.insert(0, str(ROOT))
    from tests.peers.azurite import start_azurite

    azurite = start_azurite()
    try:
        return [run_scenario(s, pairs, azurite) for s in SCENARIOS if not only or s.name in only]
    finally:
        azurite.stop()


def render(results: list[Result]) -> str:
    lines = ["exactly-once scenarios (counts from the Twilio fake's creates):"]
    lines += ["  " + r.line() for r in results]
    lines.append(f"scenarios: {'OK' if all(r.ok for r in results) else 'FAILED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="pairs (or ids) per scenario")
    args = parser.parse_args(argv)
    results = run_all(args.pairs)
    print(render(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
