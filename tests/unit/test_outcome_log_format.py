"""The app's outcome log lines stay readable by field in KQL: every `parse message with ...` in the Bicep alerts,
the workbook and the README must split the lines the code really writes into the right fields (channel, id,
outcome, reason, Twilio status). If shared/sender.py `_log` or the status-callback log line changes, this goes red.
The field for sms/call/whatsapp is named `channel`: `kind` is a reserved word in KQL, and Microsoft's parser rejects
a `parse` that names a column `kind` (tests/infra/test_kql.py parses every query with it)."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import pytest

from shared import sender
from tests.conftest import ROOT

SOURCES = [ROOT / "infra" / "modules" / "alerts.bicep", ROOT / "infra" / "modules" / "workbook.bicep",
           ROOT / "README.md"]
_PARSE = re.compile(r'parse message with ((?:"[^"]*"\s*\w+\s*)+)')


def kql_parse_to_regex(pattern: str) -> re.Pattern[str]:
    """KQL's simple-mode `parse`: literals in order, each column the text between them; the last takes the rest."""
    tokens = re.findall(r'"([^"]*)"|(\w+)', pattern)
    columns = [c for _, c in tokens if c]
    parts, seen = [], 0
    for literal, column in tokens:
        if column:
            seen += 1
            parts.append(f"(?P<{column}>.*)" if seen == len(columns) else f"(?P<{column}>.*?)")
        else:
            parts.append(re.escape(literal))
    return re.compile("^" + "".join(parts) + "$", re.DOTALL)


def parse_patterns(prefix: str) -> list[tuple[str, re.Pattern[str]]]:
    found = []
    for source in SOURCES:
        for match in _PARSE.finditer(source.read_text()):
            if match[1].startswith(f'"{prefix} "'):
                found.append((source.name, kql_parse_to_regex(match[1])))
    return found


def logged(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


@pytest.mark.parametrize("outcome,detail,reason", [
    ("dead_lettered", "invalid_message: body: required", "invalid_message"),
    ("dead_lettered", "ambiguous: ambiguous: no answer within 2 s: Twilio may have accepted it", "ambiguous"),
    ("sent", "SM" + "a" * 32, ""),
    ("duplicate", "already sent as SM" + "b" * 32, ""),
    ("dead_lettered", "recipient_rate_limited: recipient got 5 sends in the last 3600 s "
                      "(MAX_SENDS_PER_RECIPIENT_PER_HOUR = 5)", "recipient_rate_limited"),
    ("dead_lettered", "destination_not_allowed: to: region CA is not in ALLOWED_DESTINATIONS (US)",
     "destination_not_allowed"),
    ("deferred", "budget_exhausted: 100 sends per 3600 s spent (MAX_SENDS_PER_HOUR); the next window opens in "
                 "12 s (requeued for 40 s)", ""),
])
def test_outcome_lines_parse_into_channel_id_outcome_and_reason(caplog: pytest.LogCaptureFixture, outcome: str,
                                                             detail: str, reason: str) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.outbound")
    sender._log("sms", "order-42:a.b_c", "+14155552345", outcome, detail)
    [line] = logged(caplog, "switchboard.outbound")
    patterns = parse_patterns("outbound")
    assert {name for name, _ in patterns} == {"workbook.bicep", "README.md"}  # the alerts read metrics
    for name, pattern in patterns:
        fields = pattern.match(line)
        assert fields is not None, f"{name}: KQL parse does not read {line!r}"
        assert (fields["channel"], fields["id"], fields["outcome"], fields["to"]) == \
            ("sms", "order-42:a.b_c", outcome, "+1415***2345"), name
        derived = fields["detail"].split(":")[0] if fields["outcome"] == "dead_lettered" else ""
        assert derived == reason, name


def test_the_kql_pin_goes_red_when_the_line_format_drifts() -> None:
    [(_, pattern)] = parse_patterns("outbound")[:1]
    assert pattern.match("outbound sms id=x to=*** outcome=sent SM1")
    assert pattern.match("outbound sms id=x recipient=*** result=sent SM1") is None


def test_status_callback_lines_parse_into_channel_id_and_twilio_status(azurite: Any,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from shared import ledger, status_callbacks
    from shared.webhooks import Params

    ident = "fmt-" + uuid.uuid4().hex[:12]  # the shared Azurite outlives this test
    ledger.insert_if_absent("sms", ident, status="sent", attempts=1, sid="SM" + "c" * 32)
    caplog.set_level(logging.INFO, logger="switchboard.status")
    status_callbacks.handle("sms", Params(id=[ident]), Params(MessageStatus=["undelivered"], ErrorCode=["30003"],
                                                                To=["+14155552345"]))
    [line] = logged(caplog, "switchboard.status")
    patterns = parse_patterns("status")
    assert {name for name, _ in patterns} >= {"workbook.bicep"}
    for name, pattern in patterns:
        fields = pattern.match(line)
        assert fields is not None, f"{name}: KQL parse does not read {line!r}"
        assert (fields["channel"], fields["id"], fields["twilio_status"]) == ("sms", ident, "undelivered"), name
        assert fields["row_status"].split(" ")[0] == "undelivered"
