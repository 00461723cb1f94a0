"""The app's metrics: OpenTelemetry counters and one histogram, each recorded by a one-line call.

What reaches Application Insights, and how (README, "Telemetry and metrics"):

- ``host.json`` has ``"telemetryMode": "OpenTelemetry"``: the Functions host exports its own logs and traces
  (function executions as requests) with OpenTelemetry instead of the classic Application Insights SDK.
- App setting ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``: the Python worker, at worker init and before it
  indexes ``function_app``, calls ``azure.monitor.opentelemetry.configure_azure_monitor`` itself (from the app's
  own packages: ``azure-monitor-opentelemetry`` is in requirements.txt). That sets the global meter, tracer and
  logger providers, with Azure Monitor exporters, and hangs an OpenTelemetry logging handler on the root logger
  (``PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME`` unset = root), so every library's records are exported once, by
  the worker.
- No duplicate log records: the worker still forwards each record to the host over gRPC (the log stream and
  the console need them), but having configured the distro it answers the host's init request with the
  capability ``WorkerOpenTelemetryEnabled``; the host then drops the forwarded ``Function.*`` records from its
  own OpenTelemetry log export. One path exports app logs (the worker's), one exports host logs (the host's).
  The other choice, this app calling ``configure_azure_monitor`` itself, would add a second root handler next
  to the worker's (each record twice) or, without the setting, leave the host exporting the forwarded records
  and the app's exporter exporting them again; so this module never configures an exporter.
- Managed identity: the worker passes only the connection string; the exporter reads
  ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (``ClientId=<uami>;Authorization=AAD``, set in
  infra/modules/functionapp.bicep) and authenticates with that identity (role Monitoring Metrics Publisher),
  as App Insights has local auth off.
- ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (app setting) turns off the distro's HTTP and Azure SDK
  instrumentations: their dependency spans carry full URLs, and ours hold phone numbers (Twilio list queries
  ``?To=+1…``, Table keys ``RowKey='%2B1…'``). Twilio latency is measured here instead, without the URL.

This module only records through the OpenTelemetry *API* (``opentelemetry.metrics``): whatever provider the
worker installed exports it (to the ``customMetrics`` table; counters as deltas per export interval, 60 s by
default, so ``sum(valueSum)`` is the count). Without one, the API is a no-op.

Cost: ``import function_app`` imports nothing of OpenTelemetry (tests/unit/test_cold_import.py). Importing the API
costs ~40 ms here, so it is not imported at all until something has loaded it: the worker does, when it
configures the distro, before the first invocation; until then (local runs, tests, the bench) each call is a
dictionary look-up and returns. Instruments are created on first use and cached.

Attribute values are identifiers our code chooses (outcome, channel, reason, operation, route…). To make sure a
caller's slip can never put a phone number, SID, token or free text into a metric dimension, every value goes
through :func:`safe_value`: a short lower-case identifier, or ``other``.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

# Metric names, units (UCUM; ``{send}`` is an annotation: a count of sends) and descriptions. The README table is
# written from this one.
SENDS = "switchboard.sends"
DEAD_LETTERS = "switchboard.dead_letters"
RECONCILIATIONS = "switchboard.reconciliations"
TWILIO_DURATION = "switchboard.twilio.duration"
WEBHOOK_REJECTIONS = "switchboard.webhook.rejections"
PACING_DEFERRALS = "switchboard.pacing.deferrals"

_COUNTERS: dict[str, tuple[str, str]] = {
    SENDS: ("{send}", "Outbound sends finished, by outcome and channel"),
    DEAD_LETTERS: ("{message}", "Messages written to a -poison queue by the app, by reason and channel"),
    RECONCILIATIONS: ("{reconciliation}", "Read-backs of an in-doubt send, by verdict and channel"),
    WEBHOOK_REJECTIONS: ("{request}", "Webhook requests refused, by reason and route"),
    PACING_DEFERRALS: ("{message}", "Sends put back on the queue to keep a sender's rate, by priority and reason"),
}
_HISTOGRAM_UNIT = "s"  # OpenTelemetry semantic conventions: HTTP client duration in seconds
_HISTOGRAM_DESCRIPTION = "Duration of Twilio REST calls, by operation and HTTP status"
# The semantic conventions' advised boundaries for http.client.request.duration (seconds). Application Insights
# keeps count, sum, min and max per export; other readers keep the buckets.
TWILIO_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

OTHER = "other"
# A safe value: starts with a letter, 1-40 of lower-case letters, digits and ``_ . : / -``, at most 5 digits in
# all (a Twilio error code such as ``21211`` fits; no phone number, which has 7+, and no 32-hex SID or token),
# and not mixed-case before lower-casing (``SMS`` → ``sms``; a base64 secret is mixed-case → ``other``).
_SAFE = re.compile(r"[a-z][a-z0-9_.:/-]{0,39}")
_MAX_DIGITS = 5
_STATUS_MIN, _STATUS_MAX = 100, 599

_API_MODULE = "opentelemetry.metrics"
_lock = threading.Lock()
_provider: Any = None  # injected by use_meter_provider (tests); None = the global provider
_instruments: dict[str, Any] = {}


def safe_value(value: object) -> str:
    """``value`` as a metric attribute value if it is a short identifier, else ``other``.

    Accepts only ``str``; ``"SMS"`` → ``"sms"``; ``"+14155550100"``, ``"whatsapp:+14155550100"``,
    ``"SM" + 32 hex``, a token, free text, control characters, anything over 40 characters → ``"other"``.
    """
    if not isinstance(value, str):
        return OTHER
    text = value.strip()
    if not text or len(text) > 40:
        return OTHER
    lowered = text.lower()
    if text != lowered and text != text.upper():
        return OTHER
    if _SAFE.fullmatch(lowered) is None or sum(ch.isdigit() for ch in lowered) > _MAX_DIGITS:
        return OTHER
    return lowered


def _status(status_code: object) -> int | None:
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        return None
    return status_code if _STATUS_MIN <= status_code <= _STATUS_MAX else None


def use_meter_provider(provider: Any) -> None:
    """Record through ``provider`` from now on (``None``: back to the global provider); forgets the instruments.

    For tests: OpenTelemetry's global provider can be set once per process, so each test injects its own
    ``MeterProvider`` with an ``InMemoryMetricReader`` instead.
    """
    global _provider
    with _lock:
        _provider = provider
        _instruments.clear()


def _instrument(name: str) -> Any:
    """The cached instrument ``name``, created on first use; ``None`` while nothing can collect it."""
    instrument = _instruments.get(name)
    if instrument is not None:
        return instrument
    provider = _provider
    if provider is None:
        api = sys.modules.get(_API_MODULE)
        if api is None:  # nobody has loaded OpenTelemetry, so no provider exists: recording would be a no-op
            return None
        provider = api.get_meter_provider()
    with _lock:
        instrument = _instruments.get(name)
        if instrument is None:
            meter = provider.get_meter("switchboard")
            if name == TWILIO_DURATION:
                instrument = meter.create_histogram(
                    name, unit=_HISTOGRAM_UNIT, description=_HISTOGRAM_DESCRIPTION,
                    explicit_bucket_boundaries_advisory=TWILIO_DURATION_BUCKETS)
            else:
                unit, description = _COUNTERS[name]
                instrument = meter.create_counter(name, unit=unit, description=description)
            _instruments[name] = instrument
    return instrument


def _add(name: str, attributes: dict[str, str]) -> None:
    try:
        counter = _instrument(name)
        if counter is not None:
            counter.add(1, attributes)
    except Exception:  # noqa: BLE001 - a metric must never fail a send or a webhook
        pass


def count_send(outcome: str, channel: str) -> None:
    """One send finished: ``outcome`` (e.g. sent, duplicate, rejected, failed, dead_lettered), ``channel``
    (sms, mms, whatsapp, call…) → ``switchboard.sends``."""
    _add(SENDS, {"outcome": safe_value(outcome), "channel": safe_value(channel)})


def count_dead_letter(reason: str, channel: str) -> None:
    """One message dead-lettered with ``reason`` (e.g. ambiguous, id_conflict, retries_exhausted)
    → ``switchboard.dead_letters``."""
    _add(DEAD_LETTERS, {"reason": safe_value(reason), "channel": safe_value(channel)})


def count_reconciliation(verdict: str, channel: str) -> None:
    """One read-back of an in-doubt send: ``verdict`` found, absent, too_soon, contested or unsure
    → ``switchboard.reconciliations``."""
    _add(RECONCILIATIONS, {"verdict": safe_value(verdict), "channel": safe_value(channel)})


def count_webhook_rejection(reason: str, route: str) -> None:
    """One webhook request refused: ``reason`` (bad_signature, malformed, wrong_method…), ``route`` (sms, voice,
    status…) → ``switchboard.webhook.rejections``."""
    _add(WEBHOOK_REJECTIONS, {"reason": safe_value(reason), "route": safe_value(route)})


def count_pacing_deferral(priority: str, reason: str) -> None:
    """One send deferred by pacing: ``priority`` and ``reason`` → ``switchboard.pacing.deferrals``."""
    _add(PACING_DEFERRALS, {"priority": safe_value(priority), "reason": safe_value(reason)})


def record_twilio_latency(seconds: float, operation: str, status_code: int | None,
                          error_type: str | None = None) -> None:
    """One Twilio REST call took ``seconds``: ``operation`` (messages.create, calls.create, messages.list…),
    the HTTP status as ``http.response.status_code`` or, with none (``None``: no response),
    ``error.type`` = ``error_type`` (timeout, connectionerror…; default ``no_response``)
    → histogram ``switchboard.twilio.duration`` (s)."""
    try:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            return
        histogram = _instrument(TWILIO_DURATION)
        if histogram is None:
            return
        attributes: dict[str, str | int] = {"operation": safe_value(operation)}
        status = _status(status_code)
        if status is not None:
            attributes["http.response.status_code"] = status
        else:
            attributes["error.type"] = safe_value(error_type) if error_type else "no_response"
        histogram.record(float(seconds), attributes)
    except Exception:  # noqa: BLE001 - a metric must never fail a send
        pass


class TwilioCall:
    """What :func:`twilio_call` records: set ``status_code`` (and ``error_type``) inside the block."""

    __slots__ = ("operation", "status_code", "error_type")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.status_code: int | None = None
        self.error_type: str | None = None


@contextmanager
def twilio_call(operation: str) -> Iterator[TwilioCall]:
    """Time the block as one Twilio call and record it, also when it raises::

        with telemetry.twilio_call("messages.create") as call:
            response = ...
            call.status_code = response.status_code

    An exception with an integer ``status`` (``TwilioRestException``) gives the status code; any other gives
    ``error.type`` = its class name (``ReadTimeout`` → ``readtimeout``). The exception propagates.
    """
    call = TwilioCall(operation)
    started = time.perf_counter()
    try:
        yield call
    except BaseException as exc:
        if call.status_code is None:
            status = getattr(exc, "status", None)
            if _status(status) is not None:
                call.status_code = status
            elif call.error_type is None:
                call.error_type = type(exc).__name__.lower()
        raise
    finally:
        record_twilio_latency(time.perf_counter() - started, call.operation, call.status_code, call.error_type)
