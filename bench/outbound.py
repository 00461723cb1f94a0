"""Outbound sends: the SMS queue function against the Twilio fake, ledger on Azurite, secret from a Key Vault fake.

Run alone: ``python -m bench.outbound [--sends N] [--naive-sends N]``.

Three variants, each sending to the same Twilio fake (tests/peers/twilio_fake.py, served from a child process so
its threads do not share our GIL), one thread, interleaved in chunks so noise hits them alike:

- ours: the indexed queue function for ``%SMS_QUEUE%`` invoked with ``azure.functions.queue.QueueMessage``, exactly
  as the host would (opt-out check + ledger claim + Twilio create + ledger record, on Azurite), with
  ``KEY_VAULT_URL`` pointing at the Key Vault fake (tests/peers/keyvault.py) through the real ``SecretClient``;
- ceiling: a raw ``requests.Session`` posting the same form bodies (To, From, Body, StatusCallback) to the fake;
- naive: what a seed-style function does per message: a new ``SecretClient`` read of the auth token and a new
  ``twilio.rest.Client`` (no ledger at all, so it is not even safe; it shows what the caches save).

Every HTTP request any of them makes goes through ``requests.Session.send``; a wrapper counts and times those by
peer (Azurite table/queue, Key Vault, Twilio), giving table operations and vault reads per send and where the
wall time goes. A pyinstrument profile of our sends (top functions by own time, and the call tree) is printed as well.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack
from typing import Any, Callable
from urllib.parse import urlsplit

from bench._common import Row, Section, indexed_functions, render

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "bench-vault-auth-token-5e1f0c2a9d"
FROM = "+15005550006"
PUBLIC_BASE_URL = "https://switchboard.example.net"
BODY = "Your appointment is confirmed for Tuesday 10:30. Reply HELP for help."


class HttpMeter:
    """Counts and times every ``requests.Session.send`` by peer (host:port → name)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.count: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.by_method: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()
        self._original: Any = None

    def name(self, netloc: str, peer: str) -> None:
        self.names[netloc] = peer

    def install(self) -> None:
        import requests

        original = self._original = requests.Session.send
        meter = self

        def send(session: Any, request: Any, **kwargs: Any) -> Any:
            peer = meter.names.get(urlsplit(request.url).netloc, "other")
            start = time.perf_counter()
            try:
                return original(session, request, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                with meter._lock:
                    meter.count[peer] += 1
                    meter.seconds[peer] += elapsed
                    meter.by_method[(peer, request.method)] += 1

        requests.Session.send = send  # type: ignore[method-assign]

    def uninstall(self) -> None:
        import requests

        if self._original is not None:
            requests.Session.send = self._original  # type: ignore[method-assign]
            self._original = None

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


def run(sends: int = 2_000, naive_sends: int = 300, chunk: int = 250, profile_sends: int = 300) -> Section:
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
        }
        saved = {k: os.environ.get(k) for k in [*env, "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SID"]}
        os.environ.update(env)
        os.environ.pop("TWILIO_AUTH_TOKEN", None)
        os.environ.pop("TWILIO_API_KEY_SID", None)
        stack.callback(lambda: [os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
                                for k, v in saved.items()])

        from shared import config, storage

        def reset_app() -> None:
            config.reset_settings()
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

        meter.name(f"127.0.0.1:{azurite.table_port}", "azurite-table")
        meter.name(f"127.0.0.1:{azurite.queue_port}", "azurite-queue")
        meter.name(urlsplit(vault.url).netloc, "keyvault")
        meter.name(urlsplit(twilio.base_url).netloc, "twilio")
        meter.install()
        stack.callback(meter.uninstall)

        from azure.functions.queue import QueueMessage

        user_fn, arg = _sms_queue_function()

        def ours(i: int) -> None:
            ident = f"bench-{run_id}-{i}"
            form = _form(i, ident)
            body = json.dumps({"id": ident, "to": form["To"], "body": BODY})
            user_fn(**{arg: QueueMessage(id=f"qm-{run_id}-{i}", body=body.encode(), dequeue_count=1)})

        session = requests.Session()
        messages_url = f"{twilio.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"

        def raw(i: int) -> None:
            response = session.post(messages_url, data=_form(i, f"raw-{run_id}-{i}"), auth=(ACCOUNT_SID, AUTH_TOKEN),
                                    timeout=10)
            if response.status_code != 201:
                raise RuntimeError(f"fake answered {response.status_code}")

        def naive(i: int) -> None:
            from azure.keyvault.secrets import SecretClient
            from twilio.rest import Client

            vault_client = SecretClient(vault.url, FakeCredential(), verify_challenge_resource=False,
                                        connection_verify=str(vault.cert_path))
            token = vault_client.get_secret(secrets.AUTH_TOKEN).value
            client = Client(ACCOUNT_SID, token)
            client.api.base_url = twilio.base_url
            form = _form(i, f"naive-{run_id}-{i}")
            client.messages.create(to=form["To"], from_=FROM, body=BODY, status_callback=form["StatusCallback"])

        # Warm up: first sends create the tables, the clients, read the secret once; not measured.
        for i in range(20):
            ours(10_000_000 + i)
            raw(10_000_000 + i)
        naive(10_000_000)
        twilio.reset()
        vault.reset_counts()

        elapsed = {"ours": 0.0, "raw": 0.0, "naive": 0.0}
        counts: dict[str, dict[str, int]] = {}
        peer_seconds: dict[str, dict[str, float]] = {}
        methods: dict[str, dict[tuple[str, str], int]] = {}
        vault_reads: dict[str, int] = {}
        done = {"ours": 0, "raw": 0, "naive": 0}
        totals = {"ours": sends, "raw": sends, "naive": naive_sends}
        funcs = {"ours": ours, "raw": raw, "naive": naive}
        while any(done[k] < totals[k] for k in done):
            for name in ("raw", "ours", "naive"):
                n = min(chunk, totals[name] - done[name])
                if n <= 0:
                    continue
                meter.reset()
                reads_before = vault.reads(secrets.AUTH_TOKEN)
                t0 = time.perf_counter()
                for i in range(done[name], done[name] + n):
                    funcs[name](i)
                elapsed[name] += time.perf_counter() - t0
                c, s, m = meter.snapshot()
                for peer, value in c.items():
                    counts.setdefault(name, defaultdict(int))[peer] += value
                for peer, value in s.items():
                    peer_seconds.setdefault(name, defaultdict(float))[peer] += value
                for key, value in m.items():
                    methods.setdefault(name, defaultdict(int))[key] += value
                vault_reads[name] = vault_reads.get(name, 0) + vault.reads(secrets.AUTH_TOKEN) - reads_before
                done[name] += n

        stats = twilio.stats()
        created = {k: sum(1 for i, c in stats["by_id"].items() if i.startswith(f"{k}-{run_id}-") for _ in range(c))
                   for k in ("bench", "raw", "naive")}
        if created["bench"] != sends:
            section.notes.append(f"WARNING: the fake created {created['bench']} messages for {sends} queue sends")

        rate = {k: done[k] / elapsed[k] for k in elapsed}
        per_send = {k: {peer: v / done[k] for peer, v in counts.get(k, {}).items()} for k in done}
        table_ops = per_send["ours"].get("azurite-table", 0.0)
        section.rows += [
            Row("outbound", f"SMS queue fn sends/s ({sends}, 1 thread)", rate["ours"], rate["raw"], "/s",
                "raw requests.Session"),
            Row("outbound", f"naive seed sender sends/s ({naive_sends})", rate["naive"], rate["raw"], "/s",
                "raw requests.Session"),
            Row("outbound", "ours vs naive", rate["ours"], rate["naive"], "/s", "naive seed sender"),
            Row("outbound", "ms per send", elapsed["ours"] / sends * 1000, elapsed["raw"] / sends * 1000, "ms",
                "raw requests.Session"),
            Row("outbound", "vault reads per send", vault_reads["ours"] / sends, vault_reads["naive"] / naive_sends,
                "", "naive seed sender", "~0 (cached)", vault_reads["ours"] / sends < 0.01),
            Row("outbound", "table ops per send", table_ops, None, "", "", "<= 3", table_ops <= 3.0 + 1e-9),
            Row("outbound", "Twilio requests per send", per_send["ours"].get("twilio", 0.0),
                per_send["raw"].get("twilio", 0.0), "", "raw requests.Session", "== 1",
                abs(per_send["ours"].get("twilio", 0.0) - 1.0) < 1e-9),
        ]
        section.notes.append("table ops by method (ours, per send): " + ", ".join(
            f"{method} {v / sends:.2f}" for (peer, method), v in sorted(methods.get("ours", {}).items())
            if peer == "azurite-table"))
        for name in ("ours", "raw", "naive"):
            wall = elapsed[name] / done[name] * 1000
            parts = {peer: secs / done[name] * 1000 for peer, secs in peer_seconds.get(name, {}).items()}
            rest = wall - sum(parts.values())
            section.notes.append(f"where the time goes, {name}: {wall:.2f} ms/send = " + " + ".join(
                f"{peer} {ms:.2f} ({per_send[name].get(peer, 0):.2g} req)" for peer, ms in
                sorted(parts.items(), key=lambda kv: -kv[1])) + f" + Python outside HTTP {rest:.2f}")
        section.notes += _profile(ours, 20_000_000, profile_sends)
    return section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=2_000)
    parser.add_argument("--naive-sends", type=int, default=300)
    parser.add_argument("--profile-sends", type=int, default=300)
    args = parser.parse_args(argv)
    print(render([run(args.sends, args.naive_sends, profile_sends=args.profile_sends)]))


if __name__ == "__main__":
    main()
