"""shared.telemetry: the metrics' names, units and attributes as an OpenTelemetry reader sees them, attribute values
that can never carry a number or a secret, and a cost of nothing until OpenTelemetry is loaded."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from typing import Any, Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared import telemetry
from tests.conftest import ROOT

# Hostile attribute values: phone numbers in every shape, SIDs, tokens, free text, control characters, long strings.
HOSTILE = [
    "+14155550100", "14155550100", "4155550100", "whatsapp:+14155550100", "WhatsApp:+14155550100",
    "tel:415-555-0100", "x.415.555.0100", "%2B14155550100", "sms:+447700900123",
    "SM" + "0123456789abcdef" * 2, "sm" + "0123456789abcdef" * 2, "AC" + "a1b2c3d4" * 4,
    "0123456789abcdef" * 2, "local-dev-auth-token-change-me-0123456789", "SKxYzAbCdEfGhIjKlMnOpQrStUvWxYz01",
    "Bearer eyJhbGciOiJIUzI1NiJ9", "sent to +1 415 555 0100", "hello world", "bad\nline", "tab\tbed", "nul\x00",
    "é", "", "   ", "a" * 41, "1abc", "-sms", "Sms", None, 14155550100, 3.5, b"sms", ["sms"],
]
_NUMBER_LIKE = re.compile(r"\d{6,}|\+\d|%2b", re.I)


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_meter_provider(provider)
    yield reader
    telemetry.use_meter_provider(None)
    provider.shutdown()


def metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics} if data else {}


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    metric = metrics(reader)[name]
    return [(dict(p.attributes), p) for p in metric.data.data_points]


def test_send_metric_is_a_counter_of_sends_by_outcome_and_channel(reader: InMemoryMetricReader) -> None:
    telemetry.count_send("sent", "sms")
    telemetry.count_send("sent", "sms")
    telemetry.count_send("dead_lettered", "whatsapp")
    metric = metrics(reader)[telemetry.SENDS]
    assert metric.name == "switchboard.sends" and metric.unit == "{send}" and metric.description
    assert metric.data.is_monotonic
    got = {tuple(sorted(a.items())): p.value for a, p in points(reader, telemetry.SENDS)}
    assert got == {(("channel", "sms"), ("outcome", "sent")): 2,
                   (("channel", "whatsapp"), ("outcome", "dead_lettered")): 1}


def test_dead_letter_metric_carries_reason_and_channel_only(reader: InMemoryMetricReader) -> None:
    telemetry.count_dead_letter("ambiguous", "call")
    [(attributes, point)] = points(reader, telemetry.DEAD_LETTERS)
    assert attributes == {"reason": "ambiguous", "channel": "call"} and point.value == 1
    assert metrics(reader)[telemetry.DEAD_LETTERS].unit == "{message}"


@pytest.mark.parametrize("verdict", ["found", "absent", "too_soon", "contested", "unsure"])
def test_reconciliation_metric_counts_each_verdict(reader: InMemoryMetricReader, verdict: str) -> None:
    telemetry.count_reconciliation(verdict, "sms")
    [(attributes, point)] = points(reader, telemetry.RECONCILIATIONS)
    assert attributes == {"verdict": verdict, "channel": "sms"} and point.value == 1
    assert metrics(reader)[telemetry.RECONCILIATIONS].name == "switchboard.reconciliations"


def test_webhook_rejection_and_pacing_deferral_metrics_carry_their_attributes(reader: InMemoryMetricReader) -> None:
    telemetry.count_webhook_rejection("bad_signature", "status/message")
    telemetry.count_pacing_deferral("normal", "sender_rate")
    assert points(reader, telemetry.WEBHOOK_REJECTIONS)[0][0] == {"reason": "bad_signature", "route": "status/message"}
    assert points(reader, telemetry.PACING_DEFERRALS)[0][0] == {"priority": "normal", "reason": "sender_rate"}
    assert metrics(reader)[telemetry.WEBHOOK_REJECTIONS].name == "switchboard.webhook.rejections"
    assert metrics(reader)[telemetry.PACING_DEFERRALS].name == "switchboard.pacing.deferrals"


def test_twilio_latency_is_a_histogram_in_seconds_with_the_semconv_buckets(reader: InMemoryMetricReader) -> None:
    telemetry.record_twilio_latency(0.12, "messages.create", 201)
    telemetry.record_twilio_latency(0.3, "messages.create", 201)
    telemetry.record_twilio_latency(10.0, "calls.create", None, "timeout")
    metric = metrics(reader)[telemetry.TWILIO_DURATION]
    assert metric.name == "switchboard.twilio.duration" and metric.unit == "s"
    by_attributes = {tuple(sorted(a.items())): p for a, p in points(reader, telemetry.TWILIO_DURATION)}
    created = by_attributes[(("http.response.status_code", 201), ("operation", "messages.create"))]
    assert created.count == 2 and created.sum == pytest.approx(0.42)
    assert tuple(created.explicit_bounds) == telemetry.TWILIO_DURATION_BUCKETS
    assert created.bucket_counts[telemetry.TWILIO_DURATION_BUCKETS.index(0.25)] == 1  # 0.12 in (0.1, 0.25]
    assert created.bucket_counts[telemetry.TWILIO_DURATION_BUCKETS.index(0.5)] == 1   # 0.3 in (0.25, 0.5]
    timed_out = by_attributes[(("error.type", "timeout"), ("operation", "calls.create"))]
    assert timed_out.count == 1 and timed_out.max == 10.0


def test_twilio_call_times_the_block_and_records_status_or_error(reader: InMemoryMetricReader) -> None:
    class TwilioRestException(Exception):
        status = 429

    with telemetry.twilio_call("messages.list") as call:
        call.status_code = 200
    with pytest.raises(TwilioRestException), telemetry.twilio_call("messages.create"):
        raise TwilioRestException("Too Many Requests for +14155550100")
    with pytest.raises(TimeoutError), telemetry.twilio_call("calls.create"):
        raise TimeoutError("read timed out")
    got = {tuple(sorted(a.items())): p.count for a, p in points(reader, telemetry.TWILIO_DURATION)}
    assert got == {(("http.response.status_code", 200), ("operation", "messages.list")): 1,
                   (("http.response.status_code", 429), ("operation", "messages.create")): 1,
                   (("error.type", "timeouterror"), ("operation", "calls.create")): 1}


def test_bad_latency_values_and_status_codes_record_nothing_wrong(reader: InMemoryMetricReader) -> None:
    for seconds in (-1.0, float("nan"), "0.1", None, True):
        telemetry.record_twilio_latency(seconds, "messages.create", 201)  # type: ignore[arg-type]
    assert telemetry.TWILIO_DURATION not in metrics(reader)
    telemetry.record_twilio_latency(0.1, "messages.create", 14155550100)
    telemetry.record_twilio_latency(0.1, "messages.create", True)  # type: ignore[arg-type]
    assert {tuple(sorted(a.items())) for a, _ in points(reader, telemetry.TWILIO_DURATION)} == \
        {(("error.type", "no_response"), ("operation", "messages.create"))}


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_no_phone_number_sid_token_or_free_text_becomes_an_attribute_value(value: object) -> None:
    assert telemetry.safe_value(value) == "other"


@pytest.mark.parametrize("value, expected", [
    ("sms", "sms"), ("SMS", "sms"), (" call ", "call"), ("whatsapp", "whatsapp"), ("messages.create", "messages.create"),
    ("bad_signature", "bad_signature"), ("status/message", "status/message"), ("twilio_21211", "twilio_21211"),
    ("too_soon", "too_soon"), ("a" * 40, "a" * 40),
])
def test_short_identifiers_pass_lower_cased(value: str, expected: str) -> None:
    assert telemetry.safe_value(value) == expected


def test_every_recorded_attribute_of_hostile_calls_is_safe(reader: InMemoryMetricReader) -> None:
    """Whatever the callers pass, an exported attribute value never looks like a number or a secret."""
    for value in HOSTILE:
        telemetry.count_send(value, value)  # type: ignore[arg-type]
        telemetry.count_dead_letter(value, value)  # type: ignore[arg-type]
        telemetry.count_reconciliation(value, value)  # type: ignore[arg-type]
        telemetry.count_webhook_rejection(value, value)  # type: ignore[arg-type]
        telemetry.count_pacing_deferral(value, value)  # type: ignore[arg-type]
        telemetry.record_twilio_latency(0.1, value, None, value)  # type: ignore[arg-type]
    names = set(metrics(reader))
    assert names == {telemetry.SENDS, telemetry.DEAD_LETTERS, telemetry.RECONCILIATIONS, telemetry.TWILIO_DURATION,
                     telemetry.WEBHOOK_REJECTIONS, telemetry.PACING_DEFERRALS}
    values = {v for name in names for attributes, _ in points(reader, name) for v in attributes.values()}
    assert values <= {"other", "no_response"}
    text = json.dumps(sorted(map(str, values)))
    assert not _NUMBER_LIKE.search(text)


def test_a_metric_never_raises_into_the_send_path(reader: InMemoryMetricReader) -> None:
    class Broken:
        def get_meter(self, *_: Any, **__: Any) -> Any:
            raise RuntimeError("exporter down")

    telemetry.use_meter_provider(Broken())
    telemetry.count_send("sent", "sms")
    telemetry.record_twilio_latency(0.1, "messages.create", 201)
    with telemetry.twilio_call("messages.create") as call:
        call.status_code = 201


def test_an_injected_provider_replaces_the_cached_instruments(reader: InMemoryMetricReader) -> None:
    telemetry.count_send("sent", "sms")
    second = InMemoryMetricReader()
    telemetry.use_meter_provider(MeterProvider(metric_readers=[second]))
    telemetry.count_send("sent", "call")
    assert [a for a, _ in points(second, telemetry.SENDS)] == [{"outcome": "sent", "channel": "call"}]
    assert [a for a, _ in points(reader, telemetry.SENDS)] == [{"outcome": "sent", "channel": "sms"}]


def _run(code: str) -> Any:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    return json.loads(out.stdout)


def test_recording_before_anything_loaded_opentelemetry_costs_no_import() -> None:
    code = ("import json, sys; from shared import telemetry; "
            "telemetry.count_send('sent', 'sms'); telemetry.record_twilio_latency(0.1, 'messages.create', 201); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))")
    assert _run(code) == []


def test_metrics_flow_through_the_global_provider_once_one_is_set() -> None:
    """As under the worker: the distro sets the global provider before the app records anything."""
    code = ("import json; from opentelemetry import metrics; from opentelemetry.sdk.metrics import MeterProvider; "
            "from opentelemetry.sdk.metrics.export import InMemoryMetricReader; r = InMemoryMetricReader(); "
            "metrics.set_meter_provider(MeterProvider(metric_readers=[r])); from shared import telemetry; "
            "telemetry.count_dead_letter('ambiguous', 'sms'); d = r.get_metrics_data(); "
            "print(json.dumps([[m.name, dict(m.data.data_points[0].attributes)] for rm in d.resource_metrics "
            "for sm in rm.scope_metrics for m in sm.metrics]))")
    assert _run(code) == [["switchboard.dead_letters", {"reason": "ambiguous", "channel": "sms"}]]


def test_an_exported_log_record_of_an_exception_carries_no_phone_number() -> None:
    """The worker's OpenTelemetry log handler formats exc_info itself (exception.message, exception.stacktrace):
    shared.redact's masking must reach those attributes too, not only the formatted text."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    import shared  # noqa: F401 - installs the masking record factory

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("tests.telemetry.export")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    logger.propagate = False
    # Built at run time: the stack trace quotes the raising source lines, and those must hold no number here.
    first, second, third = ("+1415555" + tail for tail in ("0100", "0199", "0123"))
    try:
        try:
            try:
                raise KeyError(f"whatsapp:{first}")
            except KeyError as exc:
                raise ValueError(f"Twilio refused To={second} (21211)") from exc
        except ValueError:
            logger.exception("send failed for %s", third)
    finally:
        logger.removeHandler(handler)
    [exported] = exporter.get_finished_logs()
    record = exported.log_record
    attributes = dict(record.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert "21211" in attributes["exception.message"] and "+1415***0199" in attributes["exception.message"]
    assert "KeyError" in attributes["exception.stacktrace"]
    text = json.dumps({"body": str(record.body), **{k: str(v) for k, v in attributes.items()}})
    assert not re.search(r"\d{7,}", text), text
    provider.shutdown()
