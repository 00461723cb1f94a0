"""``make run`` as a new user runs it, without Core Tools: the app comes up on the built-in host with Azurite and
the offline Twilio fake, answers the webhook simulator, sends a queued SMS, and Ctrl-C leaves nothing behind.

It runs in a copy of the repository (its own local.settings.json and .azurite/; .venv and node_modules are
linked, already installed) on free ports given through the environment, so it never touches the repo's data
or a developer's running ``make run``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from tests.conftest import _APP_SETTINGS, BASE_ENV
from tests.peers.ports import free_port, port_open, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
LINKED = {".venv", "node_modules"}
SKIPPED = {".git", ".venv-infra", ".azurite", ".cache", ".tools", ".pytest_cache", ".hypothesis", ".ruff_cache",
           "__pycache__", "local.settings.json", "bench"}
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _path_without_func() -> str:
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not os.access(os.path.join(p, "func"), os.X_OK))


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent links in /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "switchboard"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in LINKED:
            (copy / entry.name).symlink_to(entry)
        elif entry.name not in SKIPPED:
            if entry.is_dir():
                shutil.copytree(entry, copy / entry.name, ignore=shutil.ignore_patterns(*SKIPPED))
            else:
                shutil.copy2(entry, copy / entry.name)  # mtimes kept: make sees the installs as up to date
    return copy


@pytest.fixture
def user_env() -> dict[str, str]:
    """A user's shell: none of the tests' app settings, no ``func`` on the PATH, free ports."""
    env = {k: v for k, v in os.environ.items() if k not in BASE_ENV and k not in _APP_SETTINGS
           and not k.startswith(("PYTEST", "TWILIO_"))}
    env.update(PATH=_path_without_func(), CORE_TOOLS_INSTALL="no", LOCAL_HTTP_PORT=str(free_port()),
               AZURITE_BLOB_PORT=str(free_port()), AZURITE_QUEUE_PORT=str(free_port()),
               AZURITE_TABLE_PORT=str(free_port()), TWILIO_FAKE_PORT=str(free_port()))
    return env


@pytest.fixture
def make_run(repo_copy: Path, user_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, Path]]:
    log = repo_copy / "make-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=repo_copy, env=user_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    seen: set[int] = set()
    try:
        yield proc, log
    finally:
        seen |= _descendants(proc.pid)
        for pid in seen | {proc.pid}:  # whatever a failed test left running
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        proc.wait(timeout=10)


def _run(repo_copy: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=repo_copy, env=env, capture_output=True, text=True,
                          timeout=60)


def test_make_run_without_core_tools_serves_simulated_webhooks_sends_queued_sms_and_ctrl_c_leaves_nothing(
        make_run: tuple[subprocess.Popen, Path], repo_copy: Path, user_env: dict[str, str]) -> None:
    proc, log = make_run
    http_port = int(user_env["LOCAL_HTTP_PORT"])
    ports = [http_port, *(int(user_env[k]) for k in ("AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT",
                                                      "AZURITE_TABLE_PORT", "TWILIO_FAKE_PORT"))]
    base = f"http://localhost:{http_port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"make run exited with {proc.returncode}:\n{log.read_text()}"
        try:
            return requests.get(base + "/api/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, 120, "make run to serve /api/health")
    output = log.read_text()
    assert "running the built-in local host (python -m devhost) instead of func start" in output
    assert (repo_copy / "local.settings.json").is_file()  # created from the example, as for a new user

    simulate = ("-m", "devhost.simulate", "--public-url", base)
    help_reply = _run(repo_copy, user_env, *simulate, "sms", "HELP")
    assert help_reply.returncode == 0, help_reply.stderr
    assert "<- 200 OK" in help_reply.stdout and 'replies: "' in help_reply.stdout and "STOP" in help_reply.stdout
    call = _run(repo_copy, user_env, *simulate, "call", "--digits", "1")
    assert call.returncode == 0, call.stderr
    assert "caller presses: 1" in call.stdout and "2010-04-01" in call.stdout and "hangs up" in call.stdout
    forged = _run(repo_copy, user_env, *simulate, "--token", "not-the-token", "sms", "hi")
    assert forged.returncode == 1 and "<- 403" in forged.stdout

    storage = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
               f"QueueEndpoint=http://127.0.0.1:{user_env['AZURITE_QUEUE_PORT']}/devstoreaccount1;"
               f"TableEndpoint=http://127.0.0.1:{user_env['AZURITE_TABLE_PORT']}/devstoreaccount1;")
    enqueued = _run(repo_copy, {**user_env, "AzureWebJobsStorage": storage}, "-m", "shared.enqueue", "sms",
                    "--to", "+14155550100", "--body", "hello from the quick start")
    assert enqueued.returncode == 0, enqueued.stderr
    send_id = enqueued.stdout.strip()
    wait_until(lambda: "twilio-fake: sms to +1415***0100 -> 201" in log.read_text(), 60,
               "the queued SMS to reach the Twilio fake")
    wait_until(lambda: f"id={send_id}" in log.read_text() and "row=delivered" in log.read_text(), 30,
               "the fake's delivery callback to reach the app")
    sms_queue = QueueClient.from_connection_string(storage, "outbound-sms")
    wait_until(lambda: sms_queue.get_queue_properties().approximate_message_count == 0, 30,
               "outbound-sms to be empty")
    try:
        poisoned = QueueClient.from_connection_string(storage, "outbound-sms-poison").get_queue_properties()
        assert poisoned.approximate_message_count == 0
    except ResourceNotFoundError:
        pass

    started = _descendants(proc.pid)
    assert len(started) >= 4, started  # the launcher, Azurite, the Twilio fake, the host
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
    proc.wait(timeout=60)
    wait_until(lambda: not any(_alive(pid) for pid in started), 30, "every process make run started to exit")
    assert [port for port in ports if port_open(port)] == []
    assert "make run: stopped" in log.read_text()
    assert (repo_copy / ".azurite").is_dir()  # the data stays


# ---------------------------------------------------------------- issue 26: ports, peers, Ctrl-C

PORT_VARIABLES = ("LOCAL_HTTP_PORT", "AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "AZURITE_TABLE_PORT", "TWILIO_FAKE_PORT")
DEFAULT_PORTS = {"LOCAL_HTTP_PORT": 7071, "AZURITE_QUEUE_PORT": 10001, "AZURITE_TABLE_PORT": 10002,
                 "TWILIO_FAKE_PORT": 4010}


def _start_make_run(repo_copy: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen, Path]:
    log = repo_copy / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=repo_copy, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, log


def _wait_healthy(proc: subprocess.Popen, log: Path, port: int) -> None:
    def healthy() -> bool:
        assert proc.poll() is None, f"make run exited with {proc.returncode}:\n{log.read_text()}"
        try:
            return requests.get(f"http://localhost:{port}/api/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, 120, "make run to serve /api/health")


def _process_groups() -> dict[int, int]:
    """pid → process group of every live process."""
    groups = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                groups[int(entry.name)] = int(fields[2])
    return groups


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _storage(env: dict[str, str]) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
            f"QueueEndpoint=http://127.0.0.1:{env['AZURITE_QUEUE_PORT']}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{env['AZURITE_TABLE_PORT']}/devstoreaccount1;")


STOPS = 3
SENDS_IN_FLIGHT = 40


def test_ctrl_c_stops_make_run_within_2_seconds_with_sends_in_flight_and_leaves_no_process(
        repo_copy: Path, user_env: dict[str, str]) -> None:
    """Each of several stops, made while queued sends are being sent, ends every process group make run started in
    under 2 s (the host used to outlive Azurite's shutdown and be killed after 10 s)."""
    for attempt in range(STOPS):
        _one_timed_stop(repo_copy, user_env, attempt)


def _one_timed_stop(repo_copy: Path, user_env: dict[str, str], attempt: int) -> None:
    import json
    import time
    import uuid

    ports = [int(user_env[v]) for v in PORT_VARIABLES]
    proc, log = _start_make_run(repo_copy, user_env, f"stop-{attempt}")
    started: set[int] = set()
    try:
        _wait_healthy(proc, log, int(user_env["LOCAL_HTTP_PORT"]))
        queue = QueueClient.from_connection_string(_storage(user_env), "outbound-sms")
        try:  # the host may not have created it yet (as shared.enqueue does, create it if absent)
            queue.create_queue()
        except ResourceExistsError:
            pass
        for i in range(SENDS_IN_FLIGHT):
            queue.send_message(json.dumps({"id": uuid.uuid4().hex, "to": "+14155550100", "body": f"burst {i}"}))
        wait_until(lambda: "twilio-fake: sms to" in log.read_text(), 60, "the burst to start sending")
        started = _descendants(proc.pid) | {proc.pid}
        groups = {group for pid, group in _process_groups().items() if pid in started}
        before = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: make and the launcher get it

        def nothing_left() -> bool:
            return not any(pid in started or group in groups for pid, group in _process_groups().items())

        wait_until(nothing_left, 30, "every process group make run started to end", interval=0.01)
        took = time.monotonic() - before
        proc.wait(timeout=10)
        assert took < 2.0, f"stop {attempt + 1} took {took:.2f}s:\n{log.read_text()[-2000:]}"
        assert "make run: stopped" in log.read_text()
        assert "Error 130" not in log.read_text()  # a stop asked for is not a failure of make
        assert [port for port in ports if port_open(port)] == []
    finally:
        _kill_all(started | _descendants(proc.pid) | {proc.pid})
        proc.wait(timeout=10)


def _decoys_on_default_ports() -> tuple[list[Any], list[str]]:
    """A server answering 500 to everything on each default port that is free (another stack's stand-in); returns
    the servers and the list every request they got is appended to."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Decoy(BaseHTTPRequestHandler):
        def _any(self) -> None:
            hits.append(f"{self.server.server_address[1]} {self.command} {self.path}")
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    servers = []
    for port in DEFAULT_PORTS.values():
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), Decoy)
        except OSError:
            continue  # something else already listens there: it plays the other stack
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers, hits


def test_simulate_enqueue_and_ops_reach_make_run_on_moved_ports_and_say_so_while_the_defaults_answer_elsewhere(
        make_run: tuple[subprocess.Popen, Path], repo_copy: Path, user_env: dict[str, str]) -> None:
    proc, log = make_run
    servers, hits = _decoys_on_default_ports()
    try:
        _wait_healthy(proc, log, int(user_env["LOCAL_HTTP_PORT"]))
        # A second terminal: none of the port variables, the repo's own local.settings.json (local defaults).
        second = {k: v for k, v in user_env.items() if k not in PORT_VARIABLES}
        named = "make run, pid"

        reply = _run(repo_copy, second, "-m", "devhost.simulate", "sms", "HELP")
        assert reply.returncode == 0, reply.stdout + reply.stderr
        assert 'replies: "' in reply.stdout and f"localhost:{user_env['LOCAL_HTTP_PORT']}/api/sms" in reply.stdout
        assert f"local stack: host localhost:{user_env['LOCAL_HTTP_PORT']}" in reply.stderr and named in reply.stderr

        enqueued = _run(repo_copy, second, "-m", "shared.enqueue", "sms", "--to", "+14155550100", "--body", "moved")
        assert enqueued.returncode == 0, enqueued.stderr
        assert f"local stack: queue 127.0.0.1:{user_env['AZURITE_QUEUE_PORT']}" in enqueued.stderr
        send_id = enqueued.stdout.strip()
        wait_until(lambda: f"id={send_id}" in log.read_text() and "row=delivered" in log.read_text(), 60,
                   "the queued SMS to be sent by this make run and delivered")

        shown = _run(repo_copy, second, "-m", "shared.ops", "sends", "show", send_id)
        assert shown.returncode == 0, shown.stderr
        assert f"sms {send_id}: delivered" in shown.stdout
        assert (f"ops: local stack: queue 127.0.0.1:{user_env['AZURITE_QUEUE_PORT']}, table "
                f"127.0.0.1:{user_env['AZURITE_TABLE_PORT']} ({named}") in shown.stderr
        assert hits == []  # nothing went to whatever holds the default ports
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _foreign_http_server(port: int) -> Any:
    """An unrelated HTTP server (``python -m http.server``-like): 501 to POST, 404 to GET."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Foreign(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_error(404)

        def do_POST(self) -> None:  # noqa: N802
            self.send_error(501)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Foreign)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("variable, named", [("TWILIO_FAKE_PORT", "the Twilio fake"),
                                             ("AZURITE_QUEUE_PORT", "Azurite queue"),
                                             ("LOCAL_HTTP_PORT", "the Functions host")])
def test_make_run_refuses_a_port_held_by_a_server_it_cannot_prove_is_its_own_in_one_line(
        repo_copy: Path, user_env: dict[str, str], variable: str, named: str) -> None:
    port = int(user_env[variable])
    server = _foreign_http_server(port)
    proc, log = _start_make_run(repo_copy, user_env, "refused")
    try:
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run went on with a foreign server on {variable}={port}:\n{log.read_text()}")
        output = log.read_text()
        assert proc.returncode != 0
        lines = [line for line in output.splitlines() if f"port {port}" in line]
        assert lines == [f"make run: port {port} ({named}) is in use{_why(variable)}: stop it, or set {variable} "
                         "to a free port"], output
        assert "make run: stopped" in output
        others = [int(user_env[v]) for v in PORT_VARIABLES if v != variable]
        assert [p for p in others if port_open(p)] == []  # what it had started is stopped again
    finally:
        _kill_all(_descendants(proc.pid) | {proc.pid})
        server.shutdown()
        server.server_close()


def _why(variable: str) -> str:
    return {"TWILIO_FAKE_PORT": " by something that is not switchboard's Twilio fake",
            "AZURITE_QUEUE_PORT": " by a process make run did not start", "LOCAL_HTTP_PORT": ""}[variable]


def test_make_run_reuses_a_twilio_fake_that_answers_its_fingerprint_and_leaves_it_running(
        repo_copy: Path, user_env: dict[str, str]) -> None:
    import json

    from devhost.twilio_fake import TwilioFake

    values = json.loads((repo_copy / "local.settings.json.example").read_text())["Values"]
    fake = TwilioFake(account_sid=values["TWILIO_ACCOUNT_SID"],
                      credentials={values["TWILIO_ACCOUNT_SID"]: values["TWILIO_AUTH_TOKEN"]},
                      port=int(user_env["TWILIO_FAKE_PORT"])).start()  # as `make twilio-fake-start` leaves one
    proc, log = _start_make_run(repo_copy, user_env, "reuse")
    started: set[int] = set()
    try:
        _wait_healthy(proc, log, int(user_env["LOCAL_HTTP_PORT"]))
        assert f"the Twilio fake already on {user_env['TWILIO_FAKE_PORT']}" in log.read_text()
        started = _descendants(proc.pid) | {proc.pid}
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        assert port_open(int(user_env["TWILIO_FAKE_PORT"]))  # not ours to stop
    finally:
        _kill_all(started | _descendants(proc.pid) | {proc.pid})
        fake.stop()
