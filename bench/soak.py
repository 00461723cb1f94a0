"""Fault soak: queued SMS through the stand-in host under injected faults and host kills; nothing lost, nothing
sent twice.

``python -m bench.soak [--count 10000] [--fault-rate 0.10] [--dup-rate 0.05] [--kills 2] ...`` (``make soak``).

- Peers (127.0.0.1, free ports, stopped at the end): Azurite (queue + table, in memory), the Twilio fake
  (tests/peers/twilio_fake.py) answering ``--fault-rate`` of creates with 429/20429 or 500 (nothing created), and
  ``--timeout-rate`` of them accepted but answered only after the client's timeout (a real send in doubt); its
  lists show a new message only ``--list-lag`` seconds later, as Twilio's lists lag.
- The local Functions host (devhost/queues.py, host.json semantics) runs as a child process
  (bench/_soak_host.py) and is SIGKILLed ``--kills`` times, evenly spread over the run by progress, and restarted.
- ``--count`` distinct ids are enqueued as raw JSON (host.json ``messageEncoding: none``); ``--dup-rate`` of them a
  second time as a separate queue message (a producer retry / at-least-once delivery).
- Done when the SMS queue holds no message (visible or invisible) for a few polls, or at ``--timeout``.

Reconciliation per id, from what the Twilio fake *created* (201 answers; the StatusCallback URL carries the id),
the ``-poison`` queue (``error.code``) and the sender's outcome log:
sent once / double sends (> 1 create) / dead-lettered without a send, by reason / lost (no create, no dead letter).
A SIGKILL between the Twilio call and the ledger update, or an answer that never came, leaves the send in doubt; the
sender reconciles it by reading Twilio's list back (found → recorded; surely absent after the settle window → sent
again). The tally ends with ``double sends: N``, ``lost: N`` and ``ambiguous: N`` (dead-lettered as ambiguous).
Exit status 1 when anything is lost, sent twice, or left ambiguous.

Then the targeted exactly-once scenarios of ``bench/soak_scenarios.py`` (confusable SMS and call pairs, identical
sends both late, 5xx after a create, a list lagging past the settle window), ``--scenario-pairs`` each, print one
line each: double sends, lost, ambiguous, and double sends flagged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import ROOT, HostProcess

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "soak-auth-token-0123456789abcdef"
FROM = "+15005550006"
PUBLIC_BASE_URL = "https://switchboard.example.net"
_OUTCOME = re.compile(r"outbound sms id=(\S+) to=\S* outcome=(\w+)")


@dataclass
class Tally:
    enqueued_ids: int = 0
    queue_messages: int = 0
    duplicates_injected: int = 0
    sent_once: int = 0
    sent_once_but_dead_lettered: Counter = field(default_factory=Counter)
    dead_lettered: Counter = field(default_factory=Counter)
    double_sends: int = 0
    lost: int = 0
    ambiguous: int = 0
    duplicates_suppressed: int = 0
    twilio_requests: int = 0
    twilio_faults: Counter = field(default_factory=Counter)
    kills: int = 0
    killed_pids: list[int] = field(default_factory=list)
    elapsed: float = 0.0
    settled: bool = False
    lost_ids: list[str] = field(default_factory=list)
    double_ids: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    stray_creates: int = 0
    busy: float = 0.0
    stray_details: list[str] = field(default_factory=list)
    events: Counter = field(default_factory=Counter)   # outcome events by type (OUTCOMES_QUEUE)
    events_repeated: int = 0                           # copies of an event_id already seen (at least once)
    sent_without_event: list[str] = field(default_factory=list)
    dead_lettered_without_event: list[str] = field(default_factory=list)
    event_without_send: list[str] = field(default_factory=list)

    @property
    def events_ok(self) -> bool:
        return not (self.sent_without_event or self.dead_lettered_without_event or self.event_without_send)

    @property
    def ok(self) -> bool:
        return self.settled and self.lost == 0 and self.double_sends == 0 and self.ambiguous == 0 and self.events_ok

    def render(self, params: dict[str, Any]) -> str:
        sends = self.sent_once + sum(self.sent_once_but_dead_lettered.values())
        rows = [
            ("parameters", ", ".join(f"{k}={v}" for k, v in params.items())),
            ("enqueued ids", f"{self.enqueued_ids}"),
            ("queue messages", f"{self.queue_messages} ({self.duplicates_injected} duplicated ids)"),
            ("host kills (SIGKILL)", f"{self.kills} (pids {', '.join(map(str, self.killed_pids)) or '-'})"),
            ("Twilio requests", f"{self.twilio_requests} (" + ", ".join(
                f"{k or 'created'}: {v}" for k, v in sorted(self.twilio_faults.items())) + ")"),
            ("sent exactly once", f"{sends}"),
            ("  of which also dead-lettered", ", ".join(f"{k}: {v}" for k, v in
                                                       sorted(self.sent_once_but_dead_lettered.items())) or "0"),
            ("dead-lettered, not sent", f"{sum(self.dead_lettered.values())}" + (
                " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.dead_lettered.items())) + ")"
                if self.dead_lettered else "")),
            ("duplicates suppressed", f"{self.duplicates_suppressed} (sender outcome=duplicate; "
                                      f"{self.duplicates_injected} copies injected + redeliveries after kills)"),
            ("double sends", f"{self.double_sends}" + (f" {self.double_ids[:10]}" if self.double_ids else "")),
            ("lost", f"{self.lost}" + (f" {self.lost_ids[:10]}" if self.lost_ids else "")),
            ("creates for no known id", f"{self.stray_creates}" + (f" {self.stray_details}" if self.stray_details
                                                                  else "")),
            ("elapsed", f"{self.elapsed:.1f} s" + ("" if self.settled else " (TIMED OUT before the queue drained)")),
            ("sends/s", (f"{sends / self.elapsed:.0f} overall; {sends / self.busy:.0f} until the last send"
                         if self.elapsed and self.busy else "-")),
            ("sender outcomes (log)", ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items()))),
            ("outcome events", ", ".join(f"{k}: {v}" for k, v in sorted(self.events.items())) +
             f" ({self.events_repeated} repeated copies of an event_id)"),
            ("  sent, no sent event", f"{len(self.sent_without_event)} {self.sent_without_event[:5] or ''}"),
            ("  dead-lettered, no event", f"{len(self.dead_lettered_without_event)} "
                                          f"{self.dead_lettered_without_event[:5] or ''}"),
            ("  sent event, not sent", f"{len(self.event_without_send)} {self.event_without_send[:5] or ''}"),
            ("verdict", "OK: 0 lost, 0 double sends, 0 ambiguous, every outcome has its event" if self.ok
             else "FAILED"),
        ]
        width = max(len(k) for k, _ in rows)
        table = "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)
        return (f"{table}\ndouble sends: {self.double_sends}\nlost: {self.lost}\n"
                f"ambiguous: {self.ambiguous}")


def _queue_count(client: Any) -> int:
    return int(client.get_queue_properties().approximate_message_count or 0)


def _drain_poison(client: Any) -> list[dict[str, Any]]:
    """Every poison message (received with a long invisibility so each is read once)."""
    found: list[dict[str, Any]] = []
    while True:
        batch = list(client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=600))
        if not batch:
            return found
        for message in batch:
            try:
                document = json.loads(message.content)
            except ValueError:
                document = {"message": message.content}
            found.append(document)


def _tally_events(tally: Tally, client: Any, ids: list[str], created: Counter,
                  poisoned: dict[str, list[str]]) -> None:
    """Every outcome has its event, at least once: each id Twilio created a message for has a ``sent`` event, each
    dead-lettered one a ``dead_lettered`` (or ``opted_out``) event, and no ``sent`` event names an id never sent."""
    seen: set[str] = set()
    by_id: dict[str, set[str]] = {}
    for document in _drain_poison(client):  # the same read-once drain
        event_id, ident, kind = document.get("event_id", ""), document.get("id", ""), document.get("type", "")
        if event_id in seen:
            tally.events_repeated += 1
            continue
        seen.add(event_id)
        tally.events[kind] += 1
        by_id.setdefault(ident, set()).add(kind)
    for ident in ids:
        kinds = by_id.get(ident, set())
        if created.get(ident, 0) and "sent" not in kinds and not poisoned.get(ident):
            tally.sent_without_event.append(ident)  # (one also dead-lettered has that event: checked below)
        if not created.get(ident, 0) and "sent" in kinds:
            tally.event_without_send.append(ident)
        if poisoned.get(ident) and not kinds & {"dead_lettered", "opted_out"}:
            tally.dead_lettered_without_event.append(ident)


def _poison_id_and_reason(document: dict[str, Any]) -> tuple[str, str]:
    error = document.get("error")
    if isinstance(error, dict):
        return str(error.get("id", "")), str(error.get("code", "unknown"))
    # Moved by the host itself (function raised on its last try): no reason from the app.
    try:
        original = json.loads(document.get("message", "")) if isinstance(document.get("message"), str) else document
    except ValueError:
        original = {}
    return str(original.get("id", "")), "moved_by_host_without_reason"


def run(args: argparse.Namespace) -> Tally:
    sys.path.insert(0, str(ROOT))
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient

    from tests.peers.azurite import start_azurite
    from tests.peers.twilio_fake import start_twilio_fake

    tally = Tally()
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:6]
    queue_name = f"soak-sms-{run_id}"
    azurite = start_azurite()
    fake = start_twilio_fake(ACCOUNT_SID, {ACCOUNT_SID: AUTH_TOKEN}, fault_rate=args.fault_rate,
                             fault_choices=("429", "500"), timeout_rate=args.timeout_rate,
                             slow_seconds=args.twilio_timeout + 0.5, list_lag=args.list_lag, seed=args.seed)
    if fake._server is not None:  # noqa: SLF001 - a killed host resets its connections: no tracebacks for that
        fake._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-soak-"))
    outcomes = workdir / "outcomes.log"
    host: HostProcess | None = None
    try:
        env = dict(os.environ)
        for name in ("KEY_VAULT_URL", "TWILIO_API_KEY_SID", "TWILIO_MESSAGING_SERVICE_SID", "SMS_AUTO_REPLY"):
            env.pop(name, None)
        env.update({
            "AzureWebJobsStorage": azurite.connection_string, "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM, "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "TWILIO_API_BASE_URL": fake.base_url, "SMS_QUEUE": queue_name, "CALL_QUEUE": f"soak-calls-{run_id}",
            "INBOUND_QUEUE": f"soak-inbound-{run_id}", "TWILIO_HTTP_TIMEOUT_SECONDS": str(args.twilio_timeout),
            "OUTCOMES_QUEUE": f"soak-outcomes-{run_id}",
            "RECONCILE_SETTLE_SECONDS": str(args.settle),
            # Pacing on, as in production, at a rate this box's host cannot reach: it adds its round trips and
            # never holds a message back (bench.pacing measures pacing itself).
            "PACING": "on", "SENDER_RATES": f"{FROM}=5000",
            "PYTHONUNBUFFERED": "1",
        })
        queue = QueueClient.from_connection_string(azurite.connection_string, queue_name)
        poison = QueueClient.from_connection_string(azurite.connection_string, queue_name + "-poison")
        for client in (queue, poison):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass

        ids = [f"soak-{run_id}-{i:05d}" for i in range(args.count)]
        duplicated = set(rng.sample(ids, round(args.count * args.dup_rate)))
        bodies = [json.dumps({"id": ident, "to": f"+1415555{i % 10000:04d}", "body": f"soak message {i}"})
                  for i, ident in enumerate(ids)]
        # Each duplicate goes in a little later than its original, as a producer's retry would.
        messages = list(bodies)
        for i, ident in enumerate(ids):
            if ident in duplicated:
                messages.insert(min(len(messages), i + rng.randint(1, 200) + len(messages) - len(bodies)), bodies[i])
        tally.enqueued_ids, tally.duplicates_injected, tally.queue_messages = len(ids), len(duplicated), len(messages)

        host = HostProcess(env, outcomes, workdir / "host.log", ["--visibility", str(args.visibility), "--lease",
                           str(args.lease), "--claim-margin", str(args.claim_margin)])
        started = time.monotonic()
        host.start()
        producer_error: list[BaseException] = []
        producer_done = threading.Event()
        stop_producer = threading.Event()

        def produce() -> None:
            # A steady producer: keeps at most --max-backlog messages waiting (Azurite's in-memory queue gets
            # slower the deeper it is, which real Storage does not; see README).
            try:
                with ThreadPoolExecutor(max_workers=8, thread_name_prefix="enqueue") as pool:
                    for start in range(0, len(messages), 100):
                        while _queue_count(queue) > args.max_backlog and not stop_producer.is_set():
                            time.sleep(0.2)
                        if stop_producer.is_set():
                            return
                        list(pool.map(queue.send_message, messages[start:start + 100]))
            except BaseException as exc:  # noqa: BLE001 - reported by the main loop
                producer_error.append(exc)
            finally:
                producer_done.set()

        producer = threading.Thread(target=produce, name="soak-producer", daemon=True)
        producer.start()

        thresholds = [args.count * (k + 1) / (args.kills + 1) for k in range(args.kills)]
        deadline = started + args.timeout
        quiet_polls = 0
        enqueued_all = False
        last_send = [0.0]
        sends_seen = 0
        while time.monotonic() < deadline:
            time.sleep(0.25)
            if producer_error:
                raise producer_error[0]
            enqueued_all = producer_done.is_set()
            sends_now = len(fake.created("sms"))
            if sends_now > sends_seen:
                sends_seen, last_send[0] = sends_now, time.monotonic()
            if thresholds and sends_now >= thresholds[0]:
                thresholds.pop(0)
                tally.killed_pids.append(host.kill())
                tally.kills += 1
                print(f"  killed the host (pid {tally.killed_pids[-1]}) after "
                      f"{len(fake.created('sms'))} sends; restarting", file=sys.stderr, flush=True)
                host.start()
                quiet_polls = 0
                continue
            if enqueued_all and not thresholds and _queue_count(queue) == 0:
                quiet_polls += 1
                if quiet_polls >= 3:
                    tally.settled = True
                    break
            else:
                quiet_polls = 0
        tally.elapsed = time.monotonic() - started
        stop_producer.set()
        host.stop()
        host = None

        created = Counter(r.send_id for r in fake.created("sms"))
        tally.busy = last_send[0] - started if last_send[0] else 0.0
        with fake._lock:  # noqa: SLF001 - a consistent snapshot
            records = list(fake.requests)
        tally.twilio_requests = len(records)
        tally.twilio_faults = Counter(r.fault or ("" if r.created else str(r.answered)) for r in records)
        poisoned: dict[str, list[str]] = {}
        for document in _drain_poison(poison):
            ident, reason = _poison_id_and_reason(document)
            poisoned.setdefault(ident, []).append(reason)
        for line in outcomes.read_text(errors="replace").splitlines() if outcomes.exists() else []:
            match = _OUTCOME.search(line)
            if match:
                tally.outcomes[match.group(2)] += 1
        tally.duplicates_suppressed = tally.outcomes.get("duplicate", 0)
        tally.ambiguous = sum(1 for reasons in poisoned.values() if "ambiguous" in reasons)
        for ident in ids:
            n = created.get(ident, 0)
            reasons = poisoned.get(ident, [])
            if n > 1:
                tally.double_sends += 1
                tally.double_ids.append(ident)
            elif n == 1:
                if reasons:
                    tally.sent_once_but_dead_lettered["+".join(sorted(set(reasons)))] += 1
                else:
                    tally.sent_once += 1
            elif reasons:
                tally.dead_lettered["+".join(sorted(set(reasons)))] += 1
            else:
                tally.lost += 1
                tally.lost_ids.append(ident)
        _tally_events(tally, QueueClient.from_connection_string(azurite.connection_string,
                                                                f"soak-outcomes-{run_id}"), ids, created, poisoned)
        known = set(ids)
        strays = [r for r in records if r.created and r.send_id not in known]
        tally.stray_creates = len(strays)
        for r in strays[:5]:
            tally.stray_details.append(f"id={r.send_id!r} form keys={sorted(r.form)} body={r.first('Body')[:30]!r}")
        return tally
    finally:
        if host is not None:
            host.stop()
        fake.stop()
        azurite.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="distinct ids to send")
    parser.add_argument("--fault-rate", type=float, default=0.10, help="share of Twilio creates answered 429/500")
    parser.add_argument("--timeout-rate", type=float, default=0.05,
                        help="share of Twilio creates accepted but answered after the client's timeout")
    parser.add_argument("--list-lag", type=float, default=1.0, help="seconds before a new send shows in lists")
    parser.add_argument("--dup-rate", type=float, default=0.05, help="share of ids enqueued twice")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILL + restart of the host, spread over the run")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up (and fail) after this many seconds")
    parser.add_argument("--seed", type=int, default=20240611)
    # Time scaling (the real values in parentheses); the soak prints what it used.
    parser.add_argument("--visibility", type=float, default=2.0, help="retry back-off after a failure (30 s)")
    parser.add_argument("--max-backlog", type=int, default=1000, help="producer keeps at most this many waiting")
    parser.add_argument("--lease", type=int, default=10, help="invisibility of a running message (600 s, renewed)")
    parser.add_argument("--claim-margin", type=float, default=6.0,
                        help="sender CLAIM_LEASE_MARGIN_SECONDS (30 s)")
    parser.add_argument("--twilio-timeout", type=float, default=2.0, help="TWILIO_HTTP_TIMEOUT_SECONDS (10 s)")
    parser.add_argument("--settle", type=float, default=3.0, help="RECONCILE_SETTLE_SECONDS (60 s)")
    parser.add_argument("--scenario-pairs", type=int, default=20,
                        help="pairs per exactly-once scenario (bench/soak_scenarios.py) run after the soak; 0 = none")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = {k: getattr(args, k) for k in ("count", "fault_rate", "timeout_rate", "dup_rate", "kills", "visibility",
                                            "lease", "claim_margin", "twilio_timeout", "settle", "list_lag",
                                            "max_backlog", "seed")}
    print(f"soak: {args.count} ids, faults {args.fault_rate:.0%}, late answers {args.timeout_rate:.0%}, "
          f"duplicates {args.dup_rate:.0%}, {args.kills} host kills ...", file=sys.stderr, flush=True)
    tally = run(args)
    print(tally.render(params))
    scenarios_ok = True
    if args.scenario_pairs > 0:
        from bench import soak_scenarios

        results = soak_scenarios.run_all(args.scenario_pairs)
        print(soak_scenarios.render(results))
        scenarios_ok = all(r.ok for r in results)
    return 0 if tally.ok and scenarios_ok else 1


if __name__ == "__main__":
    sys.exit(main())
