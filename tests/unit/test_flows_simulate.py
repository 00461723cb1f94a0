"""``python -m devhost.simulate call --script``: any flow file walked unattended over HTTP, signed as Twilio signs.

The app runs in the local host (devhost.http, in process, queue outputs kept in a list instead of Azurite); the
simulator is run through its command line, as a developer runs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from devhost import simulate
from tests.conftest import TEST_AUTH_TOKEN
from tests.functions.test_flow_routes import clinic
from tests.twilio_signing import PUBLIC_BASE_URL


@pytest.fixture
def host(indexed_functions: dict[str, Any]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    from devhost.http import HttpHost

    queued: list[tuple[str, str]] = []
    server = HttpHost(list(indexed_functions.values()), lambda queue, message: queued.append((queue, message)))
    server.start()
    yield server.base_url, queued
    server.stop()


@pytest.fixture
def run(host, capsys) -> Callable[..., tuple[int, str]]:
    def simulate_call(*args: str) -> tuple[int, str]:
        code = simulate.main(["--public-url", PUBLIC_BASE_URL, "--base-url", host[0], "--token", TEST_AUTH_TOKEN,
                              "call", *args])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return simulate_call


@pytest.fixture
def clinic_file(tmp_path: Path, set_env) -> Path:
    path = tmp_path / "clinic.json"
    path.write_text(json.dumps(clinic()))
    set_env(FLOWS_FILE=str(path), FLOW_RECEPTION_NUMBER="+14155550123")
    return path


def test_a_script_walks_the_clinic_from_the_hours_to_reception_to_a_voicemail(run, clinic_file, host):
    code, out = run("--script", "1,0")
    assert code == 0, out
    steps = [line for line in out.splitlines() if line.startswith(("->", "caller", "call ended", "  dials",
                                                                   "  redirects", "the dialled"))]
    assert steps == [
        f"-> POST {PUBLIC_BASE_URL}/api/voice  CallStatus=ringing",
        "caller presses: 1",
        f"-> POST {PUBLIC_BASE_URL}/api/voice/node?gather=main  Digits=1 FinishedOnKey=",
        "caller presses: 0",
        f"-> POST {PUBLIC_BASE_URL}/api/voice/node?gather=main  Digits=0 FinishedOnKey=",
        "  dials: +14155550123",
        "  redirects -> POST /api/voice/node?node=message",
        "the dialled call ends (the simulator connects nobody); Twilio goes on with the next verb",
        f"-> POST {PUBLIC_BASE_URL}/api/voice/node?node=message",
        "caller leaves a message (https://api.twilio.com/2010-04-01/Recordings/RE-simulated)",
        f"-> POST {PUBLIC_BASE_URL}/api/voice/recorded  RecordingUrl=https://api.twilio.com/2010-04-01/Recordings/"
        "RE-simulated RecordingDuration=7 RecordingSid=" + out.split("RecordingSid=")[1].split()[0] + " Digits=hangup",
        "call ended",
    ]
    assert "We are open Monday to Friday" in out
    [(queue, event)] = host[1]
    assert queue == "inbound-sms" and json.loads(event)["type"] == "voicemail"


def test_a_script_speaks_words_and_gives_no_input(run, clinic_file):
    code, out = run("--script", "say:opening hours,")
    assert code == 0, out
    assert 'caller says: "opening hours"' in out and "SpeechResult=opening hours" in out
    assert "caller presses nothing" in out
    assert out.rstrip().endswith("hangs up\ncall ended")
    assert 'says: "Thank you for calling switchboard. Goodbye."' in out


def test_a_script_longer_than_the_call_fails_naming_what_was_not_played(run, clinic_file):
    code, out = run("--script", "2,1,#")
    assert code == simulate.EXIT_REJECTED
    assert "script: the call ended with 2 step(s) unplayed: 1,#" in out


def test_the_shipped_menu_walks_with_a_script_too(run):
    code, out = run("--script", "9,say:one")
    assert code == 0, out
    assert 'says: "Sorry, that is not an option."' in out and "Twilio API version 2010-04-01" in out


def test_no_input_left_at_the_end_of_a_script_is_no_unplayed_answer(run):
    code, out = run("--script", "2,,")
    assert code == 0, out
    assert "caller leaves a message" in out and "unplayed" not in out


@pytest.mark.parametrize("script", ["1,x", "say", "1;2", "١"])
def test_a_script_step_that_is_neither_keys_words_nor_empty_is_refused_before_any_request(run, script):
    with pytest.raises(SystemExit) as refused:
        run("--script", script)
    assert refused.value.code == 2
