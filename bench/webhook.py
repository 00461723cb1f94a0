"""Webhook latency: a signed inbound SMS through the indexed ``sms`` function, in process, vs a constant TwiML.

Run alone: ``python -m bench.webhook [--calls N]``.

Each call builds an ``azure.functions.HttpRequest`` exactly as tests/conftest.py does (a form body signed with
twilio's RequestValidator for ``PUBLIC_BASE_URL`` + ``/api/sms``) and invokes the function's user function with an
Out object for the inbound-queue binding. The baseline is an indexed function of a throwaway FunctionApp that
returns a constant TwiML string for the same request construction: the floor of what azure.functions costs.

The body is an ordinary message (not STOP/START), so no storage is touched; settings come from the environment
(no Key Vault: the auth token is read from ``TWILIO_AUTH_TOKEN``). Target: p99 <= 1 ms. A cProfile of the sms
calls is summarised so a miss can be explained.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import time
from typing import Any, Callable

from bench._common import Row, Section, indexed_functions, load_average, percentile, render
from devhost.http import OutBox

PUBLIC_BASE_URL = "https://switchboard.example.net"
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
ENV = {
    "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
    "TWILIO_FROM_NUMBER": "+15005550006",
    "SMS_QUEUE": "outbound-sms",
    "CALL_QUEUE": "outbound-calls",
    "INBOUND_QUEUE": "inbound-sms",
    "SMS_AUTO_REPLY": "",
    # Nothing listens here: a storage call would fail loudly instead of silently costing time.
    "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=bm9uZQ==;"
                           "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
                           "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;",
}
PARAMS = {
    "ToCountry": "US", "ToState": "CA", "SmsMessageSid": "SM" + "1" * 32, "NumMedia": "0", "ToCity": "",
    "FromZip": "94105", "SmsSid": "SM" + "1" * 32, "FromState": "CA", "SmsStatus": "received",
    "FromCity": "SAN FRANCISCO", "Body": "Hello, is the shop open on Sunday?", "FromCountry": "US",
    "To": "+15005550006", "ToZip": "", "NumSegments": "1", "MessageSid": "SM" + "1" * 32,
    "AccountSid": ACCOUNT_SID, "From": "+14155550100", "ApiVersion": "2010-04-01",
}
CONSTANT_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'
TARGET_P99_MS = 1.0


def _setup() -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Return (call ours once, call the baseline once), each building its own HttpRequest."""
    os.environ.update(ENV)
    for name in ("KEY_VAULT_URL", "TWILIO_API_BASE_URL", "SECRET_CACHE_SECONDS"):
        os.environ.pop(name, None)
    import azure.functions as func
    from twilio.request_validator import RequestValidator
    from urllib.parse import urlencode

    from shared import config, secrets

    config.reset_settings()
    secrets.reset_secrets()

    body = urlencode(PARAMS).encode("utf-8")
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_BASE_URL + "/api/sms", PARAMS)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature,
               "Host": "localhost:7071", "User-Agent": "TwilioProxy/1.1"}

    def request() -> Any:
        return func.HttpRequest(method="POST", url="http://localhost:7071/api/sms", headers=headers, params={},
                                route_params={}, body=body)

    def bound(fn: Any) -> tuple[Callable[..., Any], str, str | None]:
        user_fn = fn.get_user_function()
        trigger, out = "", None
        for binding in json.loads(fn.get_function_json())["bindings"]:
            if binding["direction"] == "IN" and binding["type"] == "httpTrigger":
                trigger = binding["name"]
            elif binding["direction"] == "OUT" and binding["type"] == "queue":
                out = binding["name"]
        return user_fn, trigger, out

    functions = {fn.get_function_name(): fn for fn in indexed_functions()}
    sms_fn, sms_trigger, sms_out = bound(functions["sms"])

    baseline_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @baseline_app.route(route="sms", methods=["POST"])
    @baseline_app.queue_output(arg_name="inbound", queue_name="%INBOUND_QUEUE%", connection="AzureWebJobsStorage")
    def constant(req: func.HttpRequest, inbound: func.Out[str]) -> func.HttpResponse:
        return func.HttpResponse(CONSTANT_TWIML, status_code=200, mimetype="text/xml", charset="utf-8")

    base_fn, base_trigger, base_out = bound(baseline_app.get_functions()[0])

    def call_ours() -> Any:
        box = OutBox()
        kwargs = {sms_trigger: request()}
        if sms_out:
            kwargs[sms_out] = box
        return sms_fn(**kwargs), box

    def call_base() -> Any:
        box = OutBox()
        kwargs = {base_trigger: request()}
        if base_out:
            kwargs[base_out] = box
        return base_fn(**kwargs), box

    response, box = call_ours()
    if response.status_code != 200 or box.value is None or b"<Response" not in response.get_body():
        raise RuntimeError(f"/api/sms did not accept the signed request: {response.status_code} "
                           f"{response.get_body()[:200]!r}")
    return call_ours, call_base


def _measure(call: Callable[[], Any], n: int) -> list[float]:
    """Per-call wall times in ms (GC left on, as in a worker)."""
    clock = time.perf_counter_ns
    times = [0.0] * n
    for i in range(n):
        start = clock()
        call()
        times[i] = (clock() - start) / 1e6
    return times


def _profile(call: Callable[[], Any], n: int, top: int = 12) -> list[str]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        call()
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    total = stats.total_tt  # type: ignore[attr-defined]
    lines = [f"cProfile of {n} sms calls: {total / n * 1000:.3f} ms/call under the profiler; top by own time:"]
    entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    for (filename, lineno, name), (_cc, ncalls, tottime, cumtime, _callers) in entries:
        short = filename.split("site-packages/")[-1].replace(str(os.getcwd()) + "/", "")
        lines.append(f"  {tottime / total * 100:5.1f}% own {cumtime / total * 100:5.1f}% cum  "
                     f"{ncalls / n:5.1f}/call  {short}:{lineno} {name}")
    return lines


def run(calls: int = 10_000, profile_calls: int = 2_000) -> Section:
    call_ours, call_base = _setup()
    for _ in range(500):  # warm caches (settings, secret, compiled regexes)
        call_ours()
        call_base()
    ours: list[float] = []
    base: list[float] = []
    chunk = 1000
    for _ in range(max(1, calls // chunk)):  # interleave chunks so noise hits both alike
        ours += _measure(call_ours, chunk)
        base += _measure(call_base, chunk)
    gc.collect()
    p50, p99 = percentile(ours, 50), percentile(ours, 99)
    b50, b99 = percentile(base, 50), percentile(base, 99)
    section = Section("webhook")
    section.rows += [
        Row("webhook", f"POST /api/sms signed, p50 ({len(ours)} calls)", p50, b50, "ms", "constant TwiML fn"),
        Row("webhook", "POST /api/sms signed, p99", p99, b99, "ms", "constant TwiML fn",
            f"p99 <= {TARGET_P99_MS:g} ms", p99 <= TARGET_P99_MS),
        Row("webhook", "POST /api/sms signed, max", max(ours), max(base), "ms", "constant TwiML fn"),
        Row("webhook", "throughput, one thread", 1000 / (sum(ours) / len(ours)), 1000 / (sum(base) / len(base)),
            "req/s", "constant TwiML fn"),
    ]
    section.notes.append(f"load average after the run: {load_average()} (p99 and max are where a busy machine shows)")
    section.notes += _profile(call_ours, profile_calls)
    return section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="measured calls per variant (>= 10,000)")
    parser.add_argument("--profile-calls", type=int, default=2_000)
    args = parser.parse_args(argv)
    print(render([run(args.calls, args.profile_calls)]))


if __name__ == "__main__":
    main()
