"""Capacity model: which limit caps sending first at N sends/s, measured from the app itself.

Run: ``python -m bench.capacity --sends-per-second 2000 [--plot docs/capacity.png]`` (docs/capacity.md explains it).

1. Measure, on Azurite and the Twilio fake, the requests one send costs: a producer's put, the host's batched get
   and delete on the queue; the opt-out read, claim, Twilio create, record and SID index in ``shared.sender``; and
   the status callbacks (``--callbacks``, through the indexed ``/api/status/message`` function, signed). Every
   HTTP request is counted by peer, and table requests by partition class (send row, SID index, opt-out).
2. Spread N ids, N recipients and N SIDs over partitions with the app's own key functions
   (``ledger.partition_key``, ``optouts.partition_key``, the SID index) and weight each by its measured ops.
3. Compare against the published Azure Storage targets, Flex Consumption's instance cap, the per-instance rate
   ``make bench`` measured (the README's Capacity section) and Twilio's account limits; say which binds first.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import threading
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "capacity-auth-token-3f9a1c"
FROM = "+15005550006"
PUBLIC_BASE_URL = "https://switchboard.example.net"
BATCH_SIZE = 16  # host.json batchSize: the host gets 16 messages per queue GET

# Published targets (DESIGN "Tables"; Azure Storage scalability targets) and Flex Consumption's cap.
PARTITION_TARGET = 2_000      # entities/s per table partition
PARTITION_BUDGET = 1_000      # what we allow ourselves: half the target, for headroom
QUEUE_TARGET = 2_000          # messages/s per queue
ACCOUNT_TARGET = 20_000       # requests/s per storage account
FLEX_MAX_INSTANCES = 1_000

_KEY = re.compile(r"PartitionKey='([^']*)'")


@dataclass
class Counted:
    """Requests per peer and class, as ``bench._common.observe_http`` sees them."""

    counts: Counter[str]

    def per(self, sends: int) -> dict[str, float]:
        return {k: v / sends for k, v in sorted(self.counts.items())}


class RequestCounter:
    def __init__(self, table_port: int, queue_port: int, twilio_netloc: str) -> None:
        self.peers = {f"127.0.0.1:{table_port}": "table", f"127.0.0.1:{queue_port}": "queue",
                      twilio_netloc: "twilio"}
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop: Any = None

    def _classify(self, netloc: str, method: str, url: str, body: Any) -> str:
        peer = self.peers.get(netloc, "other")
        path = unquote(urlsplit(url).path)
        if peer == "table":
            match = _KEY.search(path)
            partition = match.group(1) if match else ""
            if not partition and body:
                try:
                    partition = json.loads(body).get("PartitionKey", "")
                except (ValueError, AttributeError):
                    partition = ""
            if "/optouts" in path:
                return "table: opt-out"
            return "table: SID index" if partition.startswith("sid-") else "table: send row"
        if peer == "queue":
            return f"queue: {method}"
        return peer

    def install(self) -> None:
        from bench._common import observe_http

        self._stop = observe_http(self._seen)

    def _seen(self, netloc: str, method: str, target: str, body: Any, seconds: float) -> None:
        name = self._classify(netloc, method, target, body)
        with self._lock:
            self.counts[name] += 1

    def uninstall(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def measure(sends: int, callbacks: list[str]) -> tuple[dict[str, float], list[str]]:
    """Run ``sends`` real sends (queue → sender → Twilio fake → status callbacks) and count requests per send."""
    from bench._common import indexed_functions, use_app_environment
    from bench._twilio_proc import TwilioFakeProcess
    from tests.peers.azurite import start_azurite
    from tests.twilio_signing import form_body, sign_form

    notes: list[str] = []
    with ExitStack() as stack:
        azurite = start_azurite()
        stack.callback(azurite.stop)
        twilio = TwilioFakeProcess(ACCOUNT_SID, {ACCOUNT_SID: AUTH_TOKEN})
        stack.callback(twilio.stop)
        run_id = uuid.uuid4().hex[:6]
        env = {"AzureWebJobsStorage": azurite.connection_string, "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
               "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": FROM, "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
               "TWILIO_API_BASE_URL": twilio.base_url, "SMS_QUEUE": f"capacity-sms-{run_id}",
               "CALL_QUEUE": f"capacity-calls-{run_id}", "INBOUND_QUEUE": f"capacity-inbound-{run_id}"}
        use_app_environment(stack, env, unset=("KEY_VAULT_URL", "TWILIO_API_KEY_SID"))

        import azure.functions as func

        from shared import config, sender, storage

        config.reset_settings()
        storage.reset_clients()
        stack.callback(storage.reset_clients)
        status_fn = next(fn.get_user_function() for fn in indexed_functions()
                         if fn.get_function_name() == "status_message")
        queue = storage.queue(env["SMS_QUEUE"])

        def callback(ident: str, sid: str, status: str) -> None:
            params = {"MessageSid": sid, "MessageStatus": status, "To": "+14155550100", "From": FROM,
                      "AccountSid": ACCOUNT_SID}
            query = f"id={ident}"
            public = f"{PUBLIC_BASE_URL}/api/status/message?{query}"
            req = func.HttpRequest(method="POST", url=f"http://localhost:7071/api/status/message?{query}",
                                   headers={"Content-Type": "application/x-www-form-urlencoded",
                                            "X-Twilio-Signature": sign_form(public, params, AUTH_TOKEN)},
                                   params={"id": ident}, route_params={}, body=form_body(params))
            answer = status_fn(req)
            if answer.status_code != 204:
                raise RuntimeError(f"status callback answered {answer.status_code}")

        def run(first: int, count: int) -> int:
            """Producer puts, host-style batched gets and deletes, sends, callbacks; returns sends that went out."""
            for i in range(first, first + count):
                queue.send_message(json.dumps({"id": f"cap-{run_id}-{i}", "to": f"+1415{i % 10_000_000:07d}",
                                               "body": "Your code is 123456"}))
            sent = 0
            while sent < count:
                batch = list(queue.receive_messages(messages_per_page=BATCH_SIZE, max_messages=BATCH_SIZE,
                                                    visibility_timeout=60))
                if not batch:
                    break
                for message in batch:
                    outcome = sender.process_sms(message.content, message.id, message.dequeue_count)
                    queue.delete_message(message.id, message.pop_receipt)
                    if outcome.result == "sent":
                        sent += 1
                        for status in callbacks:
                            callback(outcome.id, outcome.sid, status)
            return sent

        run(0, BATCH_SIZE)  # warm up: tables and queues created, clients made; not counted
        counter = RequestCounter(azurite.table_port, azurite.queue_port, urlsplit(twilio.base_url).netloc)
        counter.install()
        try:
            sent = run(1_000_000, sends)
        finally:
            counter.uninstall()
        if sent != sends:
            notes.append(f"WARNING: {sent} of {sends} measured sends went out")
        per_send = Counted(counter.counts).per(max(sent, 1))
    return per_send, notes


def per_instance_rate(readme: Path = ROOT / "README.md") -> float:
    """The sends/s per instance ``make bench`` measured at 150 ms Twilio latency and 16 threads (README)."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"\|\s*150 ms\s*\|\s*16\s*\|[^|\n]*\|\s*(\d+(?:\.\d+)?)/s", text)
    if match is None:
        raise SystemExit("README.md has no measured per-instance rate (Capacity section): pass --per-instance")
    return float(match.group(1))


def busiest_partition(n: int, ops: dict[str, float], seed: int = 15) -> tuple[float, str]:
    """Ops/s on the busiest table partition when ``n`` sends/s arrive (n ids, n recipients, n SIDs)."""
    from shared import ledger, optouts

    rng = random.Random(seed)
    load: dict[str, float] = defaultdict(float)
    for i in range(n):
        load[ledger.partition_key("sms", f"capacity-{i}")] += ops.get("table: send row", 0.0)
        load[ledger._sid_partition(f"SM{rng.getrandbits(128):032x}")] += ops.get("table: SID index", 0.0)
        load["optouts/" + optouts.partition_key(f"+1415{i:07d}")] += ops.get("table: opt-out", 0.0)
    name = max(load, key=load.__getitem__)
    return load[name], name


@dataclass
class Limit:
    name: str
    load: Callable[[int], float]   # at n sends/s, in the limit's unit
    capacity: float
    unit: str
    remedy: str

    def binds_at(self, n: int) -> float:
        """Sends/s at which this limit is reached (load is linear in n, up to the hash spread)."""
        load = self.load(n)
        return math.inf if load <= 0 else n * self.capacity / load


def limits(ops: dict[str, float], rate: float, twilio_concurrency: int, twilio_latency: float) -> list[Limit]:
    table = sum(v for k, v in ops.items() if k.startswith("table"))
    queue = sum(v for k, v in ops.items() if k.startswith("queue"))
    return [
        Limit("busiest table partition", lambda n: busiest_partition(n, ops)[0], PARTITION_BUDGET, "ops/s budget",
              "spread wider (ledger.PARTITIONS / optouts.PARTITIONS, with a migration)"),
        Limit("storage account", lambda n: n * (table + queue), ACCOUNT_TARGET, "requests/s",
              "a second storage account for the ledger and opt-out tables (the queues stay on AzureWebJobsStorage)"),
        Limit("queue", lambda n: float(n), QUEUE_TARGET, "messages/s",
              "more queues: split SMS_QUEUE across several queues, each with its own queue function"),
        Limit("Flex instances", lambda n: n / rate, FLEX_MAX_INSTANCES, "instances",
              "a second function app (its own queues and storage account)"),
        Limit("Twilio concurrent requests", lambda n: n * twilio_latency, twilio_concurrency, "in flight",
              "ask Twilio to raise the account's concurrency; cap maximumInstanceCount x threads below it"),
    ]


def report(n: int, ops: dict[str, float], rate: float, twilio_concurrency: int, twilio_latency: float,
           mps_per_sender: float) -> list[str]:
    table = sum(v for k, v in ops.items() if k.startswith("table"))
    queue = sum(v for k, v in ops.items() if k.startswith("queue"))
    busiest, where = busiest_partition(n, ops)
    lines = ["measured requests per send (Azurite + Twilio fake):"]
    lines += [f"  {name:<22} {value:6.2f}" for name, value in ops.items()]
    lines.append(f"  {'storage total':<22} {table + queue:6.2f}  (table {table:.2f}, queue {queue:.2f})")
    lines.append(f"at {n} sends/s:")
    lines.append(f"busiest partition: {busiest:.0f} ops/s ({where}; budget {PARTITION_BUDGET}, "
                 f"target {PARTITION_TARGET}; one 'sms' partition as before the spread: "
                 f"{n * ops.get('table: send row', 0.0):.0f} ops/s)")
    account = n * (table + queue)
    lines.append(f"storage account: {account:.0f} requests/s (target {ACCOUNT_TARGET}: "
                 f"{'holds' if account <= ACCOUNT_TARGET else 'does NOT hold'} in one account; "
                 f"tables {n * table:.0f}/s, queues {n * queue:.0f}/s)")
    lines.append(f"queue: {n} messages/s (target {QUEUE_TARGET} per queue: {100 * n / QUEUE_TARGET:.0f}% of one "
                 f"queue; {math.ceil(n / (QUEUE_TARGET / 2))} queue(s) to stay at half)")
    lines.append(f"instances: {math.ceil(n / rate)} at {rate:g} sends/s per instance (README, make bench; "
                 f"Flex max {FLEX_MAX_INSTANCES})")
    lines.append(f"Twilio: {n * twilio_latency:.0f} requests in flight at {twilio_latency * 1000:.0f} ms "
                 f"(account limit {twilio_concurrency}); {math.ceil(n / mps_per_sender)} sender(s) at "
                 f"{mps_per_sender:g} msg/s each in a messaging-service pool (long code 1/s, toll-free 3/s, "
                 f"short code 100/s)")
    ordered = sorted(limits(ops, rate, twilio_concurrency, twilio_latency), key=lambda lim: lim.binds_at(n))
    lines.append("limits, first to bind first (sends/s at which each is reached):")
    for lim in ordered:
        lines.append(f"  {lim.name:<28} {lim.binds_at(n):>9.0f} sends/s  ({lim.capacity:g} {lim.unit})")
    first = ordered[0]
    storage_first = next(lim for lim in ordered if lim.name in ("busiest table partition", "storage account",
                                                                   "queue"))
    verdict = "holds" if first.binds_at(n) >= n else "is over it"
    lines.append(f"binds first: {first.name} at {first.binds_at(n):.0f} sends/s ({n} sends/s {verdict}); "
                 f"then: {first.remedy}")
    lines.append(f"first storage limit: {storage_first.name} at {storage_first.binds_at(n):.0f} sends/s; "
                 f"then: {storage_first.remedy}")
    return lines


def plot(path: Path, n: int, ops: dict[str, float], rate: float, twilio_concurrency: int,
         twilio_latency: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(4_000, 2 * n)
    xs = list(range(top // 40, top + 1, top // 40))
    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=110)
    for lim in limits(ops, rate, twilio_concurrency, twilio_latency):
        ax.plot(xs, [100 * lim.load(x) / lim.capacity for x in xs], linewidth=2,
                label=f"{lim.name} ({lim.capacity:g} {lim.unit})")
    before = [100 * x * ops.get("table: send row", 0.0) / PARTITION_BUDGET for x in xs]
    ax.plot(xs, before, linestyle=":", color="grey", label="one 'sms' partition (layout before the spread)")
    ax.axhline(100, color="black", linewidth=1)
    ax.axvline(n, color="black", linestyle="--", linewidth=1)
    ax.text(n, 5, f" {n} sends/s", fontsize=9)
    ax.set_ylim(0, 300)
    ax.set_xlim(0, top)
    ax.set_xlabel("sends per second (SMS, with status callbacks)")
    ax.set_ylabel("% of the limit (100% = reached)")
    ax.set_title("switchboard: what caps sending first (measured ops per send x published limits)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--sends-per-second", type=int, default=2000, help="the rate to model (default 2000)")
    parser.add_argument("--measure-sends", type=int, default=300, help="real sends measured on Azurite")
    parser.add_argument("--callbacks", default="queued,sent,delivered",
                        help="status callbacks Twilio posts per message, in order")
    parser.add_argument("--per-instance", type=float, help="sends/s per instance (default: the README's measure)")
    parser.add_argument("--twilio-concurrency", type=int, default=100, help="Twilio account's concurrent requests")
    parser.add_argument("--twilio-latency-ms", type=float, default=150.0)
    parser.add_argument("--mps-per-sender", type=float, default=100.0,
                        help="messages/s per Twilio sender (short code 100, toll-free 3, long code 1)")
    parser.add_argument("--plot", type=Path, help="write a PNG of the limits against sends/s (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.sends_per_second < 1:
        parser.error("--sends-per-second must be at least 1")
    rate = args.per_instance or per_instance_rate()
    callbacks = [c.strip() for c in args.callbacks.split(",") if c.strip()]
    ops, notes = measure(args.measure_sends, callbacks)
    latency = args.twilio_latency_ms / 1000
    for line in notes + report(args.sends_per_second, ops, rate, args.twilio_concurrency, latency,
                               args.mps_per_sender):
        print(line)
    if args.plot:
        plot(args.plot, args.sends_per_second, ops, rate, args.twilio_concurrency, latency)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
