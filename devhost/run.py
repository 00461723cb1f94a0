"""``python -m devhost.run`` (what ``make run`` runs): the app and its local peers in one terminal.

1. Azurite (blob, queue, table; data in ``.azurite/``) and the offline Twilio fake (``devhost/twilio_fake.py``;
   only while ``TWILIO_API_BASE_URL`` points at it). A peer port that already listens is reused only when the peer
   is provably ours: Azurite started by ``make azurite-start`` for this data folder (its pid file), a Twilio fake that
   answers the fake's fingerprint for this account. Anything else on a port is refused in one line naming the port
   and the variable that moves it.
2. The Functions host: ``func start`` when Core Tools are on the PATH; else a local pinned install of Core
   Tools (``.tools/core-tools``), tried once and only on a Node.js the package supports (bounded in time; its npm
   package fetches the real binary from a CDN, which some networks block: a failure is remembered, and reported in
   one line); else the built-in host (``python -m devhost``), said in one line.
3. While it runs, ``.azurite/make-run.json`` holds its pid and ports: ``shared.enqueue``, ``shared.ops`` and
   ``devhost.simulate`` read it to reach this stack (``shared/localstack.py``).
4. Ctrl-C (SIGINT) or SIGTERM stops the host first (so its last storage calls still reach Azurite), then the
   peers, whole process groups, killed after a deadline: done within 2 s, no process or port left behind.

Ports come from the environment, for running beside something that already holds the defaults:
``LOCAL_HTTP_PORT`` (7071), ``AZURITE_BLOB_PORT`` (10000), ``AZURITE_QUEUE_PORT`` (10001), ``AZURITE_TABLE_PORT``
(10002), ``TWILIO_FAKE_PORT`` (4010); ``AZURITE_DIR`` (.azurite). When one differs from its default, the
settings that name it (``AzureWebJobsStorage=UseDevelopmentStorage=true``, ``TWILIO_API_BASE_URL``,
``PUBLIC_BASE_URL`` at their local defaults) are handed to the host pointing at the new port.
``CORE_TOOLS_INSTALL=no`` skips the Core Tools install attempt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from shared import localstack

from .ports import port_open
from .settings import ROOT, LocalSettingsError, read_local_settings

CORE_TOOLS_PACKAGE = "azure-functions-core-tools@4.15.1"  # pinned; the npm registry's latest v4 when written
CORE_TOOLS_NODE_MAJOR = 22  # that package's engines field: node >=22 (on 20 its installer crashes)
CORE_TOOLS_DIR = ROOT / ".tools" / "core-tools"
CORE_TOOLS_INSTALL_SECONDS = 300
READY_SECONDS = 60
HOST_STOP_SECONDS = 1.2  # then the host's process group is killed (a send in flight is reconciled next run)
PEER_STOP_SECONDS = 0.6  # Azurite and the fake stop in well under this once nothing talks to them
SERVICE_NAMES = {"http": "the Functions host", "blob": "Azurite blob", "queue": "Azurite queue",
                 "table": "Azurite table", "twilio": "the Twilio fake"}


class StartupError(RuntimeError):
    """A peer or the host could not be started (the message says which, and where its log is)."""


def say(line: str) -> None:
    print(f"make run: {line}", flush=True)


def busy(service: str, port: int, why: str = "") -> StartupError:
    """The one line for a port make run will not use: which port, what for, and the variable that moves it."""
    variable = localstack.PORTS[service][0]
    return StartupError(f"port {port} ({SERVICE_NAMES[service]}) is in use{why}: stop it, or set {variable} to a "
                        "free port")


class Launcher:
    def __init__(self) -> None:
        try:
            self.stack = localstack.find(os.environ, root=None)  # the variables only
        except localstack.PortSettingError as exc:
            raise StartupError(str(exc)) from None
        ports = self.stack.ports
        self.http_port, self.blob_port, self.queue_port = ports["http"], ports["blob"], ports["queue"]
        self.table_port, self.twilio_port = ports["table"], ports["twilio"]
        self.data_dir = Path(os.environ.get("AZURITE_DIR") or ROOT / ".azurite")
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = threading.Event()
        self.wrote_state = False
        self.values: dict[str, str] = {}

    def setting(self, env: dict[str, str], name: str) -> str:
        """A setting as the host will see it: the environment, else local.settings.json."""
        return env.get(name) or str(self.values.get(name) or "")

    # ------------------------------------------------------------ settings

    def host_environment(self, values: dict[str, str]) -> dict[str, str]:
        """The environment for the host: ours, plus settings re-pointed at non-default local ports."""
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)  # func's Python worker must find the app's packages
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env.setdefault("VIRTUAL_ENV", str(Path(venv_bin).parent))
        settings = {name: env.get(name) or str(values.get(name) or "")
                    for name in ("AzureWebJobsStorage", "PUBLIC_BASE_URL", "TWILIO_API_BASE_URL")}
        before = dict(settings)
        localstack.point_settings(settings, self.stack)
        env.update({name: value for name, value in settings.items() if value != before[name]})
        return env

    # ------------------------------------------------------------ children

    def spawn(self, name: str, argv: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
        """Start a child in its own process group (so stopping it takes its own children too)."""
        out = open(log, "ab") if log else None  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if out:
                out.close()
        self.children.append((name, proc))
        return proc

    def wait_ready(self, name: str, proc: subprocess.Popen, ready: Callable[[], bool], log: str) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and not self.stopping.is_set():
            if proc.poll() is not None:
                raise StartupError(f"{name} exited with {proc.returncode} (see {log})")
            if ready():
                return
            self.stopping.wait(0.1)
        if not self.stopping.is_set():
            raise StartupError(f"{name} did not listen within {READY_SECONDS}s (see {log})")

    def stop_all(self) -> None:
        """The host first, while the peers still answer its last calls; then the peers together. Each group gets
        SIGINT (as Ctrl-C would) and is killed at its deadline; whatever is left in a group is killed too."""
        hosts = [(n, p) for n, p in self.children if n in ("Functions host", "npm install")]
        peers = [(n, p) for n, p in self.children if (n, p) not in hosts]
        _stop_group(hosts, HOST_STOP_SECONDS)
        _stop_group(peers, PEER_STOP_SECONDS)
        self.children.clear()
        if self.wrote_state:
            localstack.remove_state(os.getpid(), ROOT)

    # ------------------------------------------------------------ the pieces

    def start_azurite(self, env: dict[str, str]) -> None:
        ports = {"blob": self.blob_port, "queue": self.queue_port, "table": self.table_port}
        taken = {service: port for service, port in ports.items() if port_open(port)}
        if taken:
            owner = _pid_from(self.data_dir / "pid")  # ``make azurite-start`` for this data folder
            if owner and len(taken) == len(ports):
                say(f"Azurite already running for {self.data_dir}/ (pid {owner}, make azurite-start): using it")
                return
            service, port = next(iter(taken.items()))
            raise busy(service, port, " by a process make run did not start")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise StartupError(f"{binary} is missing: run 'make install'")
        log = self.data_dir / "azurite.log"
        proc = self.spawn("Azurite", [str(binary), "--silent", "--disableTelemetry", "--skipApiVersionCheck",
                                      "--location", str(self.data_dir),
                                      "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                                      "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                                      "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port)], env, log)
        self.wait_ready("Azurite", proc, lambda: all(port_open(p) for p in ports.values()), str(log))
        say(f"Azurite on 127.0.0.1 (blob {self.blob_port}, queue {self.queue_port}, table {self.table_port}); "
            f"data in {self.data_dir}/")

    def start_twilio_fake(self, env: dict[str, str]) -> None:
        target = self.setting(env, "TWILIO_API_BASE_URL")
        if target.rstrip("/") != self.stack.twilio_url():
            say(f"TWILIO_API_BASE_URL is {target or '(not set)'}: no Twilio fake started (sends go there)")
            return
        if port_open(self.twilio_port):
            found = _fake_fingerprint(self.twilio_port)
            account = self.setting(env, "TWILIO_ACCOUNT_SID")
            if found is None:
                raise busy("twilio", self.twilio_port, " by something that is not switchboard's Twilio fake")
            if found.get("account_sid") != account:
                raise busy("twilio", self.twilio_port, f" by a Twilio fake for another account "
                                                       f"({str(found.get('account_sid'))[:6]}…)")
            say(f"the Twilio fake already on {self.twilio_port} (pid {found.get('pid')}) is ours: using it")
            return
        proc = self.spawn("Twilio fake", [sys.executable, "-m", "devhost.twilio_fake", "--port",
                                          str(self.twilio_port)], env)
        self.wait_ready("Twilio fake", proc, lambda: _fake_fingerprint(self.twilio_port) is not None,
                        "the lines above")

    def host_command(self) -> list[str]:
        func = shutil.which("func")
        if func:
            return [func, "start", "--port", str(self.http_port)]
        local = self.local_core_tools()
        if local:
            say(f"Core Tools not on PATH: using the local install {local}")
            return [str(local), "start", "--port", str(self.http_port)]
        say("running the built-in local host (python -m devhost) instead of func start")
        return [sys.executable, "-m", "devhost", "--port", str(self.http_port)]

    def local_core_tools(self) -> Path | None:
        """``.tools/core-tools``'s func, installing the pinned npm package once if never tried."""
        binary = CORE_TOOLS_DIR / "node_modules" / ".bin" / "func"
        failed = CORE_TOOLS_DIR / "install-failed.txt"
        if binary.exists() and _runs(binary):
            return binary
        if os.environ.get("CORE_TOOLS_INSTALL", "").lower() in ("no", "0", "false"):
            return None
        if failed.exists():
            say(f"Core Tools: a local install failed before: {failed.read_text().strip()[:200]} "
                f"(delete {failed} to retry)")
            return None
        if not shutil.which("npm"):
            return None
        node = node_major()
        if node is not None and node < CORE_TOOLS_NODE_MAJOR:
            say(f"Core Tools: {CORE_TOOLS_PACKAGE} needs Node.js {CORE_TOOLS_NODE_MAJOR} or later and this is "
                f"Node.js {node}: not installing it (install Node.js {CORE_TOOLS_NODE_MAJOR}+ or Core Tools yourself)")
            return None
        say(f"Core Tools not found: trying a local install of {CORE_TOOLS_PACKAGE} (at most "
            f"{CORE_TOOLS_INSTALL_SECONDS // 60} min, once)")
        CORE_TOOLS_DIR.mkdir(parents=True, exist_ok=True)
        log = CORE_TOOLS_DIR / "install.log"
        try:
            with open(log, "wb") as out:
                proc = subprocess.Popen(["npm", "install", "--prefix", str(CORE_TOOLS_DIR), "--no-save",
                                         "--no-audit", "--no-fund", CORE_TOOLS_PACKAGE],
                                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
                self.children.append(("npm install", proc))
                deadline = time.monotonic() + CORE_TOOLS_INSTALL_SECONDS
                while proc.poll() is None and time.monotonic() < deadline and not self.stopping.is_set():
                    self.stopping.wait(0.2)
                if proc.poll() is None:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
                self.children.remove(("npm install", proc))
        except OSError as exc:
            failed.write_text(f"{exc}\n")
        if self.stopping.is_set():
            return None
        if binary.exists() and _runs(binary):
            return binary
        reason = install_failure(log)
        failed.write_text(f"{reason}; see {log}\n")
        say(f"Core Tools: local install failed: {reason} (its binary comes from a CDN this network may block; "
            f"full log: {log})")
        return None

    def run(self) -> int:
        try:
            values = read_local_settings(ROOT).get("Values", {})
        except LocalSettingsError as exc:
            say(str(exc))
            return 2
        self.values = values
        env = self.host_environment(values)
        other = localstack.running_make_run(ROOT)
        if other:
            raise StartupError(f"make run is already running from this folder (pid {other['pid']}, "
                               f"http://localhost:{other['ports']['http']}): use that one, or stop it first")
        if port_open(self.http_port):
            raise busy("http", self.http_port)
        self.start_azurite(env)
        if not self.stopping.is_set():
            self.start_twilio_fake(env)
        if self.stopping.is_set():
            return 0
        command = self.host_command()
        if self.stopping.is_set():
            return 0
        say(f"HTTP functions on http://localhost:{self.http_port}/api/... ; Ctrl-C stops everything")
        host = self.spawn("Functions host", command, env)
        localstack.write_state(self.stack, os.getpid(), ROOT)
        self.wrote_state = True
        while not self.stopping.is_set() and host.poll() is None:
            self.stopping.wait(0.2)
        if host.poll() is not None and not self.stopping.is_set():
            say(f"the Functions host exited with {host.returncode}")
            return host.returncode or 1
        return 0  # stopped as asked (Ctrl-C): make then ends quietly, not with "Error 130"


def node_major() -> int | None:
    """The major version of the ``node`` on the PATH (None when there is none, or it does not say)."""
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"v?(\d+)\.", out.strip())
    return int(match[1]) if match else None


_ERROR_LINE = re.compile(r"\b(\w*Error|ERR!|ENOTFOUND|ETIMEDOUT|ECONNRESET|EACCES|ENOSPC)\b|is not a function")


def install_failure(log: Path) -> str:
    """Why an npm install failed, in one readable line: the error npm's output buries (often under a stack), and the
    engines mismatch when npm warned about one (``EBADENGINE``)."""
    try:
        lines = [re.sub(r"^npm (error|ERR!|warn)\s*", "", line.strip())
                 for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "npm wrote no log"
    text = "\n".join(lines)
    errors = [line for line in lines if _ERROR_LINE.search(line) and "A complete log" not in line]
    reason = next((line for line in errors if re.match(r"\w*Error\b", line)), errors[0] if errors else "")
    required = re.search(r"required: \{ node: '([^']+)'", text)
    current = re.search(r"current: \{ node: '([^']+)'", text)
    if required and current:
        engines = f"the package needs Node.js {required[1]} and this is {current[1]}"
        reason = f"{reason} ({engines})" if reason else engines
    return (reason or "npm install did not produce a working func")[:240]


def _fake_fingerprint(port: int) -> dict | None:
    """What a server on ``port`` answers to the Twilio fake's fingerprint request; None unless it is the fake."""
    import http.client

    from .twilio_fake import FINGERPRINT, FINGERPRINT_PATH

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", FINGERPRINT_PATH)
        answer = connection.getresponse()
        body = json.loads(answer.read(4096)) if answer.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    return body if isinstance(body, dict) and body.get("fake") == FINGERPRINT else None


def _pid_from(path: Path) -> int | None:
    """The live pid written in ``path`` (a pid file of ``make azurite-start``), else None."""
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _stop_group(children: list[tuple[str, subprocess.Popen]], seconds: float) -> None:
    for _name, proc in children:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGINT)
    deadline = time.monotonic() + seconds
    for name, proc in children:
        try:
            proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop within {seconds:g}s of Ctrl-C: killed it")
        _signal_group(proc, signal.SIGKILL)  # whatever it left in its group (a func worker, say)
        proc.wait()


def _runs(binary: Path) -> bool:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def main() -> int:
    try:
        launcher = Launcher()
    except StartupError as exc:
        say(str(exc))
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: launcher.stopping.set())
    try:
        return launcher.run()
    except StartupError as exc:
        say(str(exc))
        return 1
    finally:
        launcher.stop_all()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
