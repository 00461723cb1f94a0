"""``python -m devhost`` with an invalid PYTHON_THREADPOOL_THREAD_COUNT keeps running, as the Python worker does:
one warning naming the setting and its value, then min(32, cores + 4) worker threads, and the app served by it
sizes its connection pools for the same count (issue 20, item 10). Before, the local host exited at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.conftest import BASE_ENV
from tests.peers.ports import free_port, port_open

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
WORKER_DEFAULT = min(32, (os.cpu_count() or 1) + 4)
START_SECONDS = 60
POOLS_APP = '''
import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="pools", methods=["GET"])
def pools(req: func.HttpRequest) -> func.HttpResponse:
    from shared import config, transport

    body = {"threads": config.get_settings().thread_count, "pool_size": transport.pool_size()}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
'''


class Devhost:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the local host exited with {self.proc.returncode}:\n{self.output()}")
            if port_open(self.port):
                return
            time.sleep(0.1)
        pytest.fail(f"the local host did not listen within {START_SECONDS}s:\n{self.output()}")


@pytest.fixture
def start_devhost(tmp_path: Path) -> Iterator[object]:
    started: list[Devhost] = []

    def start(thread_count: str) -> Devhost:
        app_dir = tmp_path / f"app{len(started)}"
        app_dir.mkdir()
        (app_dir / "function_app.py").write_text(POOLS_APP, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in BASE_ENV}
        env.update(BASE_ENV, PYTHON_THREADPOOL_THREAD_COUNT=thread_count, PYTHONUNBUFFERED="1")
        port = free_port()
        log = tmp_path / f"devhost{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "devhost", "--port", str(port), "--script-root",
                                     str(app_dir)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        host = Devhost(proc, port, log)
        started.append(host)
        return host

    yield start
    for host in started:
        if host.proc.poll() is None:
            host.proc.send_signal(signal.SIGINT)
            try:
                host.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                host.proc.kill()
                host.proc.wait(timeout=5)


@pytest.mark.parametrize("value", ["abc", "0"])
def test_local_host_with_an_invalid_thread_count_warns_and_runs_the_workers_default_as_does_the_app(
        start_devhost: object, value: str) -> None:
    host = start_devhost(value)  # type: ignore[operator]
    host.wait_listening()
    answer = requests.get(f"http://127.0.0.1:{host.port}/api/pools", timeout=20)
    assert answer.status_code == 200
    assert answer.json() == {"threads": WORKER_DEFAULT, "pool_size": WORKER_DEFAULT}
    output = host.output()
    assert f"{WORKER_DEFAULT} worker threads" in output
    warnings = [line for line in output.splitlines() if f"PYTHON_THREADPOOL_THREAD_COUNT={value!r}" in line]
    assert len(warnings) == 2, output  # the host's (as the worker warns) and the app's: one each
    assert host.proc.poll() is None
