"""``python -m devhost.simulate`` as a user types it: options after the scenario, a status callback that looks like
Twilio's, a voicemail walk that does not announce the hang-up before the caller speaks, help without markup."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest

from devhost import simulate
from tests.conftest import ROOT
from tests.peers.scripted_http import Reply, ScriptedHttpServer
from tests.twilio_signing import PUBLIC_BASE_URL, TEST_AUTH_TOKEN

APP_NUMBER = "+15005550006"
RECIPIENT = "+14155550177"


@pytest.fixture
def recorder() -> Iterator[ScriptedHttpServer]:
    server = ScriptedHttpServer()
    yield server
    server.stop()


def test_options_given_after_the_scenario_are_used(recorder: ScriptedHttpServer, capsys: Any) -> None:
    recorder.script(Reply(status=204, body=b""))
    code = simulate.main(["status", "message", "--id", "order-1", "--status", "delivered",
                          "--base-url", recorder.url, "--public-url", PUBLIC_BASE_URL, "--token", TEST_AUTH_TOKEN,
                          "--to", APP_NUMBER, "--from", RECIPIENT])
    assert code == 0, capsys.readouterr()
    assert [s.path for s in recorder.seen] == ["/api/status/message?id=order-1"]


def test_options_before_the_scenario_still_work_and_one_after_overrides_only_itself(
        recorder: ScriptedHttpServer, capsys: Any) -> None:
    recorder.script(Reply(status=204, body=b""))
    code = simulate.main(["--base-url", recorder.url, "--public-url", PUBLIC_BASE_URL, "--token", TEST_AUTH_TOKEN,
                          "--from", "+14155550100", "status", "message", "--id", "o-2", "--status", "sent",
                          "--from", RECIPIENT])
    assert code == 0, capsys.readouterr()
    assert parse_qs(recorder.seen[0].body.decode())["To"] == [RECIPIENT]


def test_a_status_callback_is_from_the_apps_number_to_the_recipient(recorder: ScriptedHttpServer,
                                                                     capsys: Any) -> None:
    recorder.script(Reply(status=204, body=b""))
    simulate.main(["--base-url", recorder.url, "--public-url", PUBLIC_BASE_URL, "--token", TEST_AUTH_TOKEN,
                   "--to", APP_NUMBER, "--from", RECIPIENT, "status", "message", "--id", "o-3", "--status",
                   "delivered"])
    form = parse_qs(recorder.seen[0].body.decode())
    # The send went from the app's number to the recipient, and Twilio's callback says so: it had them swapped.
    assert form["From"] == [APP_NUMBER] and form["To"] == [RECIPIENT]


def test_the_voicemail_walk_says_the_goodbye_after_record_happens_only_if_nothing_is_recorded(
        standin_http: Any, capsys: Any) -> None:
    code = simulate.main(["--base-url", standin_http.base_url, "--public-url", PUBLIC_BASE_URL, "--token",
                          TEST_AUTH_TOKEN, "call", "--digits", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    records = next(i for i, line in enumerate(lines) if "records a message" in line)
    goodbye = next(i for i, line in enumerate(lines) if "No message was recorded" in line)
    assert lines[records + 1] == "  if nothing is recorded:" and goodbye == records + 2
    assert lines[goodbye].startswith("    says: ")  # under the condition, not as the next thing the caller hears
    assert any(line.startswith("caller leaves a message") for line in lines[goodbye:])


@pytest.mark.parametrize("module", ["devhost.simulate", "shared.ops", "shared.enqueue", "devhost"])
def test_help_is_plain_text_without_rst_backticks(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert "``" not in done.stdout and f"python -m {module}" in done.stdout
