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
from typing import Iterator

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
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
