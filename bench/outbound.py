"""Outbound sends at the host's concurrency: the SMS queue function vs a raw requests sender, same fake, same run.

Run alone: ``python -m bench.outbound [--sends N] [--latencies 0,150]``.

- ours: the indexed queue function for ``%SMS_QUEUE%`` invoked with ``azure.functions.queue.QueueMessage``, as the
  host does (pacing: two shard reads + one write; opt-out read + ledger claim + attempt index + Twilio create + SID
  index + ledger record + the ``sent`` outcome event on Azurite; every metric recorded by the OpenTelemetry SDK;
  all through the official SDKs: azure-data-tables and twilio's ``TwilioHttpClient``; the auth token from the Key
  Vault fake through the real ``SecretClient``), on min(16, ``PYTHON_THREADPOOL_THREAD_COUNT``) threads: batch 16,
  run on the worker's thread pool;
- baseline: a raw ``requests.Session`` posting the same form bodies to the same fake at the same concurrency.

The Twilio fake (tests/peers/twilio_fake.py) runs in a child process and answers after 0 ms and 150 ms (a
realistic Twilio latency). Per latency: sends/s (target at 150 ms: >= 0.75x raw), CPU ms per send (this
process's CPU time; printed, not targeted), p50/p99 per message; then HTTP round trips per send by peer.
Requests per send by peer are counted in a separate pass; a pyinstrument profile of single-threaded sends ends
the section.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack
from typing import Any, Callable
from urllib.parse import urlsplit

from bench._common import Row, Section, indexed_functions, observe_http, percentile, render, use_app_environment

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "bench-vault-auth-token-5e1f0c2a9d"
FROM = "+15005550006"
PUBLIC_BASE_URL = "https://switchboard.example.net"
BATCH_SIZE = 16  # host.json extensions.queues.batchSize
BODY = "Your appointment is confirmed for Tuesday 10:30. Reply HELP for help."


class HttpMeter:
    """Counts and times every HTTP exchange by peer (host:port → name): the app's own pools and requests'."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.count: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.by_method: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None

    def name(self, netloc: str, peer: str) -> None:
        self.names[netloc] = peer

    def install(self) -> None:
        self._stop = observe_http(self._seen)

    def _seen(self, netloc: str, method: str, target: str, body: Any, seconds: float) -> None:
        peer = self.names.get(netloc, "other")
        with self._lock:
            self.count[peer] += 1
            self.seconds[peer] += seconds
            self.by_method[(peer, method)] += 1

    def uninstall(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def reset(self) -> None:
        with self._lock:
            self.count.clear()
            self.seconds.clear()
            self.by_method.clear()

    def snapshot(self) -> tuple[dict[str, int], dict[str, float], dict[tuple[str, str], int]]:
        with self._lock:
            return dict(self.count), dict(self.seconds), dict(self.by_method)


def _form(i: int, ident: str) -> dict[str, str]:
    return {"To": f"+1415555{i % 10000:04d}", "From": FROM, "Body": BODY,
            "StatusCallback": f"{PUBLIC_BASE_URL}/api/status/message?id={ident}"}


def _sms_queue_function() -> tuple[Callable[..., Any], str]:
    for fn in indexed_functions():
        for binding in json.loads(fn.get_function_json())["bindings"]:
            if binding["type"] == "queueTrigger" and binding.get("queueName") == "%SMS_QUEUE%":
                return fn.get_user_function(), binding["name"]
    raise ModuleNotFoundError("function_app has no queue trigger on %SMS_QUEUE% yet")


def _profile(call: Callable[[int], Any], start: int, n: int, top: int = 14, tree_lines: int = 45) -> list[str]:
    """pyinstrument (sampling, low overhead) over ``n`` sends: the top functions by own time, then the call tree."""
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    profiler = Profiler(interval=0.001)
    t0 = time.perf_counter()
    profiler.start()
    for i in range(start, start + n):
        call(i)
    profiler.stop()
    wall = time.perf_counter() - t0
    lines = [f"pyinstrument over {n} sends ({wall / n * 1000:.2f} ms/send while sampled); top by own time (s):"]
    flat = profiler.output(ConsoleRenderer(unicode=False, color=False, flat=True, show_all=False))
    rows = [line for line in flat.splitlines() if line[:1].isdigit()]
    lines += [f"  {line}" for line in rows[:top]]
    tree = profiler.output(ConsoleRenderer(unicode=False, color=False, show_all=False, time="percent_of_total"))
    body = [line for line in tree.splitlines() if "%" in line]
    lines.append("call tree (percent of total):")
    lines += [f"  {line}" for line in body[:tree_lines]]
    return lines


class _FormattingHandler(logging.Handler):
    """Stands in for the Functions worker's log handler: formats every record it gets (and drops it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def _concurrent(call: Callable[[int], Any], ids: range, threads: int) -> tuple[float, float, list[float]]:
    """Run ``call(i)`` for every id on ``threads`` threads (always that many in flight): wall s, CPU s, per-call ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    it = iter(ids)

    def worker() -> None:
        mine: list[float] = []
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                break
            start = time.perf_counter()
            call(i)
            mine.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - t0, time.process_time() - cpu0, latencies


def run(sends: int = 800, latencies_ms: tuple[int, ...] = (0, 150), chunk: int = 200, count_sends: int = 100,
        profile_sends: int = 200) -> Section:
    import requests

    from tests.peers.azurite import start_azurite
    from tests.peers.keyvault import FakeCredential, start_keyvault
    from bench._twilio_proc import TwilioFakeProcess

    section = Section("outbound")
    meter = HttpMeter()
    with ExitStack() as stack:
        azurite = start_azurite()
        stack.callback(azurite.stop)
        vault = start_keyvault()
        stack.callback(vault.stop)
        twilio = TwilioFakeProcess(ACCOUNT_SID, {ACCOUNT_SID: AUTH_TOKEN})
        stack.callback(twilio.stop)

        from shared import secrets

        vault.set_secret(secrets.AUTH_TOKEN, AUTH_TOKEN)
        run_id = uuid.uuid4().hex[:6]
        env = {
            "AzureWebJobsStorage": azurite.connection_string, "KEY_VAULT_URL": vault.url,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_FROM_NUMBER": FROM, "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "TWILIO_API_BASE_URL": twilio.base_url, "SMS_QUEUE": f"bench-sms-{run_id}",
            "CALL_QUEUE": f"bench-calls-{run_id}", "INBOUND_QUEUE": f"bench-inbound-{run_id}",
            "PYTHON_THREADPOOL_THREAD_COUNT": "16",  # what infra/ deploys (the worker's own default is cores + 4)
            # As deployed: pacing on (a sender fast enough never to hold the bench back: its shard reads and write
            # are what is measured) and outcome events on.
            "PACING": "on", "SENDER_RATES": f"{FROM}=5000", "OUTCOMES_QUEUE": f"bench-outcomes-{run_id}",
        }
        use_app_environment(stack, env, unset=("TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SID"))
        # The worker configures OpenTelemetry before the app loads, so each metric call really records: do the
        # same with the SDK's provider (an in-memory reader instead of the Azure Monitor exporter).
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from shared import telemetry

        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        telemetry.use_meter_provider(provider)
        stack.callback(lambda: (telemetry.use_meter_provider(None), provider.shutdown()))

        # The Functions worker sets the root logger to INFO and ships every record: do the same.
        root = logging.getLogger()
        handler = _FormattingHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        stack.callback(lambda: (root.removeHandler(handler), root.setLevel(old_level)))

        from shared import config, storage, transport

        def reset_app() -> None:
            config.reset_settings()
            transport.reset_http_environment()
            storage.reset_clients()
            try:
                from shared import twilio_api
                twilio_api.reset_client()
            except ImportError:
                pass

        secrets.set_credential_factory(FakeCredential, verify_challenge_resource=False,
                                       connection_verify=str(vault.cert_path))
        stack.callback(lambda: secrets.set_credential_factory(None))
        reset_app()
        stack.callback(reset_app)
        threads = config.get_settings().thread_count
        in_flight = min(BATCH_SIZE, threads)

        from azure.functions.queue import QueueMessage

        user_fn, arg = _sms_queue_function()

        def ours(i: int) -> None:
            ident = f"bench-{run_id}-{i}"
            body = json.dumps({"id": ident, "to": _form(i, ident)["To"], "body": BODY})
            user_fn(**{arg: QueueMessage(id=f"qm-{run_id}-{i}", body=body.encode(), dequeue_count=1)})

        # The ceiling: what any sender pays for the Twilio POST alone, on a pool as large as ours.
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=in_flight)
        session.mount("http://", adapter)
        messages_url = f"{twilio.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"

        def raw(i: int) -> None:
            response = session.post(messages_url, data=_form(i, f"raw-{run_id}-{i}"), auth=(ACCOUNT_SID, AUTH_TOKEN),
                                    timeout=10)
            if response.status_code != 201:
                raise RuntimeError(f"fake answered {response.status_code}")

        # Warm up: tables, clients, the secret, and a full pool of connections; not measured.
        _concurrent(ours, range(10_000_000, 10_000_000 + 2 * in_flight), in_flight)
        _concurrent(raw, range(10_000_000, 10_000_000 + 2 * in_flight), in_flight)

        # Requests per send, counted in a separate pass (the counting wrapper costs CPU of its own).
        meter.name(f"127.0.0.1:{azurite.table_port}", "azurite-table")
        meter.name(f"127.0.0.1:{azurite.queue_port}", "azurite-queue")
        meter.name(urlsplit(vault.url).netloc, "keyvault")
        meter.name(urlsplit(twilio.base_url).netloc, "twilio")
        meter.install()
        reads_before = vault.reads(secrets.AUTH_TOKEN)
        _concurrent(ours, range(20_000_000, 20_000_000 + count_sends), in_flight)
        counted, _, methods = meter.snapshot()
        vault_reads = vault.reads(secrets.AUTH_TOKEN) - reads_before
        meter.uninstall()
        twilio.reset()

        offset = 0
        for latency in latencies_ms:
            twilio.set_latency(latency / 1000)
            wall = {"ours": 0.0, "raw": 0.0}
            cpu = {"ours": 0.0, "raw": 0.0}
            lat: dict[str, list[float]] = {"ours": [], "raw": []}
            done = 0
            while done < sends:
                n = min(chunk, sends - done)
                for name, fn in (("raw", raw), ("ours", ours)):  # interleaved so noise hits both alike
                    w, c, per_call = _concurrent(fn, range(offset + done, offset + done + n), in_flight)
                    wall[name] += w
                    cpu[name] += c
                    lat[name] += per_call
                done += n
            offset += 1_000_000
            rate = {k: sends / wall[k] for k in wall}
            cpu_ms = {k: cpu[k] / sends * 1000 for k in cpu}
            tag = f"{latency} ms Twilio, {in_flight} in flight"
            base = f"raw requests, {in_flight} thr"
            section.rows += [
                Row("outbound", f"sends/s ({tag})", rate["ours"], rate["raw"], "/s", base,
                    *(("ratio >= 0.75", rate["ours"] / rate["raw"] >= 0.75) if latency >= 100 else ("", None))),
                # Printed, not targeted: CPU is not what a send costs a user (see bench/README.md).
                Row("outbound", f"CPU ms per send ({tag})", cpu_ms["ours"], cpu_ms["raw"], "ms", base),
                Row("outbound", f"p50 per message ({tag})", percentile(lat["ours"], 50), percentile(lat["raw"], 50),
                    "ms", base),
                Row("outbound", f"p99 per message ({tag})", percentile(lat["ours"], 99), percentile(lat["raw"], 99),
                    "ms", base),
            ]
        twilio.set_latency(0)

        stats = twilio.stats()
        created = sum(c for i, c in stats["by_id"].items() if i.startswith(f"bench-{run_id}-"))
        if created != sends * len(latencies_ms):
            section.notes.append(f"WARNING: the fake created {created} messages for "
                                 f"{sends * len(latencies_ms)} queue sends")
        per_send = {peer: v / count_sends for peer, v in counted.items()}
        table_ops = per_send.get("azurite-table", 0.0)
        round_trips = sum(per_send.values())
        section.rows += [
            Row("outbound", "vault reads per send", vault_reads / count_sends, None, "", "", "~0 (cached)",
                vault_reads / count_sends < 0.05),
            # opt-out read, claim, attempt index, SID index claim, record: each needed by exactly-once; plus pacing's
            # shard read and write (one budget for every instance), a second read only when a shard is busy.
            Row("outbound", "table ops per send", table_ops, None, "", "", "<= 5 + 2 pacing",
                table_ops <= 7.0 + 0.1),
            Row("outbound", "round trips per send (every peer)", round_trips, 1.0, "", "raw requests"),
            Row("outbound", "Twilio requests per send", per_send.get("twilio", 0.0), 1.0, "", "raw requests",
                "== 1", abs(per_send.get("twilio", 0.0) - 1.0) < 1e-9),
        ]
        section.notes.append(f"threads: PYTHON_THREADPOOL_THREAD_COUNT={threads}, queue batchSize {BATCH_SIZE}: "
                             f"{in_flight} messages in flight; {sends} sends per variant and latency, interleaved "
                             f"in chunks of {chunk}; CPU = this process's (Azurite and the fake run apart)")
        section.notes.append("table ops by method (per send): " + ", ".join(
            f"{method} {v / count_sends:.2f}" for (peer, method), v in sorted(methods.items())
            if peer == "azurite-table"))
        section.notes += _profile(ours, 30_000_000, profile_sends)
    return section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=800, help="sends per variant and latency")
    parser.add_argument("--latencies", default="0,150", help="Twilio answer latencies to run, ms")
    parser.add_argument("--profile-sends", type=int, default=200)
    args = parser.parse_args(argv)
    latencies = tuple(int(x) for x in args.latencies.split(",") if x.strip())
    print(render([run(args.sends, latencies, chunk=min(200, args.sends), profile_sends=args.profile_sends)]))


if __name__ == "__main__":
    main()
