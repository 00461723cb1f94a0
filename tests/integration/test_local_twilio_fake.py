"""The offline Twilio that ``make run`` starts (``python -m devhost.twilio_fake``), as a local user meets it: one
report line and one status callback per send however many run at once, Twilio errors on demand, and a fingerprint
that tells it from any other server on its port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest
import requests

from tests.conftest import ROOT
from tests.peers.ports import free_port, wait_until

SID = "AC" + "fedcba9876543210" * 2
TOKEN = "local-fake-test-token"
CONCURRENT = 16


class Callbacks:
    """An HTTP server recording the status callbacks the fake posts (MessageSid → how many times)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        callbacks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                with callbacks.lock:
                    sid = form["MessageSid"][0]
                    callbacks.seen[sid] = callbacks.seen.get(sid, 0) + 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/status/message?id=x"

    def count(self) -> dict[str, int]:
        with self.lock:
            return dict(self.seen)


@pytest.fixture
def local_fake(tmp_path: Any) -> Iterator[tuple[int, subprocess.Popen, Any]]:
    port = free_port()
    log = tmp_path / "fake.log"
    env = {**os.environ, "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devhost.twilio_fake", "--port", str(port), "--settings",
                                 str(tmp_path / "none.json")], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "offline Twilio on" in log.read_text(), 30, "the local fake to start")
        yield port, proc, log
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _send(port: int, to: str, callback: str) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{port}/2010-04-01/Accounts/{SID}/Messages.json", auth=(SID, TOKEN),
                         data={"To": to, "From": "+15005550006", "Body": "hi", "StatusCallback": callback},
                         timeout=10)


def test_concurrent_sends_are_each_reported_once_and_called_back_once(
        local_fake: tuple[int, subprocess.Popen, Any]) -> None:
    port, proc, log = local_fake
    callbacks = Callbacks()
    start = threading.Barrier(CONCURRENT)

    def one(i: int) -> str:
        start.wait()
        answer = _send(port, f"+1415555{i:04d}", callbacks.url)
        assert answer.status_code == 201, answer.text
        return answer.json()["sid"]

    with ThreadPoolExecutor(CONCURRENT) as pool:
        sids = list(pool.map(one, range(CONCURRENT)))
    wait_until(lambda: set(callbacks.count()) == set(sids), 30, "a status callback for every send")
    wait_until(lambda: log.read_text().count("twilio-fake: sms to") >= CONCURRENT, 30, "a report line per send")
    proc.send_signal(signal.SIGINT)  # Ctrl-C: nothing more is reported or posted after this
    proc.wait(timeout=10)

    reports = [line for line in log.read_text().splitlines() if line.startswith("twilio-fake: sms to")]
    assert sorted(line.split()[-1] for line in reports) == sorted(sids), reports  # each send once, no repeats
    assert callbacks.count() == {sid: 1 for sid in sids}


def test_fail_makes_the_running_fake_answer_the_next_send_with_that_twilio_error(
        local_fake: tuple[int, subprocess.Popen, Any]) -> None:
    port, _, log = local_fake
    done = subprocess.run([sys.executable, "-m", "devhost.twilio_fake", "fail", "21610", "--count", "2", "--port",
                           str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{port}" in done.stdout and "21610" in done.stdout and "not retried" in done.stdout

    for _ in range(2):
        refused = _send(port, "+14155550100", "")
        assert refused.status_code == 400 and refused.json()["code"] == 21610
    assert _send(port, "+14155550100", "").status_code == 201  # then sends go through again
    wait_until(lambda: log.read_text().count("(injected fault 21610)") == 2, 30, "the fault in the fake's log")


def test_a_fault_from_twilio_fake_fail_at_start_and_clear(tmp_path: Any) -> None:
    port = free_port()
    log = tmp_path / "fake.log"
    env = {**os.environ, "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FAKE_FAIL": "429,21211"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devhost.twilio_fake", "--port", str(port)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "offline Twilio on" in log.read_text(), 30, "the local fake to start")
        assert "the next 2 send(s) fail with 429, 21211 (TWILIO_FAKE_FAIL)" in log.read_text()
        assert _send(port, "+14155550100", "").json()["code"] == 20429
        cleared = subprocess.run([sys.executable, "-m", "devhost.twilio_fake", "clear", "--port", str(port)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert cleared.returncode == 0 and "no faults pending" in cleared.stdout
        assert _send(port, "+14155550100", "").status_code == 201  # 21211 was forgotten
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_fail_against_a_port_where_no_fake_answers_is_one_line() -> None:
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "devhost.twilio_fake", "fail", "429", "--port", str(port)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"twilio-fake: no Twilio fake answers on 127.0.0.1:{port} (is make run running? --port " \
                          "moves it)\n"
