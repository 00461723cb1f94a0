"""``python -m devhost.run`` (what ``make run`` runs): the app and its local peers in one terminal.

1. Azurite (blob, queue, table; data in ``.azurite/``) and the offline Twilio fake, unless something already
   listens on their ports (then that is used and left alone).
2. The Functions host: ``func start`` when Core Tools are on the PATH; else a local pinned install of Core
   Tools (``.tools/core-tools``), tried once (bounded in time; its npm package fetches the real binary from a
   CDN, which some networks block: a failure is remembered, and reported in one line); else the built-in host
   (``python -m devhost``), said in one line.
3. Ctrl-C (SIGINT) or SIGTERM stops everything it started, whole process groups, with a deadline: no process or
   port is left behind.

Ports come from the environment, for running beside something that already holds the defaults:
``LOCAL_HTTP_PORT`` (7071), ``AZURITE_BLOB_PORT`` (10000), ``AZURITE_QUEUE_PORT`` (10001), ``AZURITE_TABLE_PORT``
(10002), ``TWILIO_FAKE_PORT`` (4010); ``AZURITE_DIR`` (.azurite). When one differs from its default, the
settings that name it (``AzureWebJobsStorage=UseDevelopmentStorage=true``, ``TWILIO_API_BASE_URL``,
``PUBLIC_BASE_URL`` at their local defaults) are handed to the host pointing at the new port.
``CORE_TOOLS_INSTALL=no`` skips the Core Tools install attempt.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from .settings import ROOT, LocalSettingsError, read_local_settings

CORE_TOOLS_PACKAGE = "azure-functions-core-tools@4.15.1"  # pinned; the npm registry's latest v4 when written
CORE_TOOLS_DIR = ROOT / ".tools" / "core-tools"
CORE_TOOLS_INSTALL_SECONDS = 300
READY_SECONDS = 60
STOP_SECONDS = 10
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class StartupError(RuntimeError):
    """A peer or the host could not be started (the message says which, and where its log is)."""


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StartupError(f"{name} must be a TCP port number, got {raw!r}")
    return int(raw)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def say(line: str) -> None:
    print(f"make run: {line}", flush=True)


class Launcher:
    def __init__(self) -> None:
        self.http_port = _port("LOCAL_HTTP_PORT", 7071)
        self.blob_port = _port("AZURITE_BLOB_PORT", 10000)
        self.queue_port = _port("AZURITE_QUEUE_PORT", 10001)
        self.table_port = _port("AZURITE_TABLE_PORT", 10002)
        self.twilio_port = _port("TWILIO_FAKE_PORT", 4010)
        self.data_dir = Path(os.environ.get("AZURITE_DIR") or ROOT / ".azurite")
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = threading.Event()

    # ------------------------------------------------------------ settings

    def host_environment(self, values: dict[str, str]) -> dict[str, str]:
        """The environment for the host: ours, plus settings re-pointed at non-default local ports."""
        env = dict(os.environ)
        venv_bin = str(Path(sys.executable).parent)  # func's Python worker must find the app's packages
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env.setdefault("VIRTUAL_ENV", str(Path(venv_bin).parent))

        def setting(name: str) -> str:
            return env.get(name) or str(values.get(name) or "")

        storage = setting("AzureWebJobsStorage").replace(" ", "").lower()
        if storage == "usedevelopmentstorage=true" and (self.blob_port, self.queue_port, self.table_port) != (
                10000, 10001, 10002):
            base = "http://127.0.0.1:{}/devstoreaccount1"
            env["AzureWebJobsStorage"] = (
                f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={base.format(self.blob_port)};QueueEndpoint={base.format(self.queue_port)};"
                f"TableEndpoint={base.format(self.table_port)};")
        if setting("TWILIO_API_BASE_URL").rstrip("/") == "http://127.0.0.1:4010" and self.twilio_port != 4010:
            env["TWILIO_API_BASE_URL"] = f"http://127.0.0.1:{self.twilio_port}"
        if setting("PUBLIC_BASE_URL").rstrip("/") == "http://localhost:7071" and self.http_port != 7071:
            env["PUBLIC_BASE_URL"] = f"http://localhost:{self.http_port}"
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
        """SIGINT to each child's process group (as Ctrl-C would), SIGKILL after a deadline; newest first."""
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGINT)
        deadline = time.monotonic() + STOP_SECONDS
        for name, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in {STOP_SECONDS}s: killing it")
            _signal_group(proc, signal.SIGKILL)  # whatever it left in its group (a func worker, say)
            proc.wait()

    # ------------------------------------------------------------ the pieces

    def start_azurite(self, env: dict[str, str]) -> None:
        ports = (self.blob_port, self.queue_port, self.table_port)
        if all(port_open(p) for p in ports):
            say(f"Azurite already listening on {self.blob_port}/{self.queue_port}/{self.table_port}: using it")
            return
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
        self.wait_ready("Azurite", proc, lambda: all(port_open(p) for p in ports), str(log))
        say(f"Azurite on 127.0.0.1 (blob {self.blob_port}, queue {self.queue_port}, table {self.table_port}); "
            f"data in {self.data_dir}/")

    def start_twilio_fake(self, env: dict[str, str]) -> None:
        if port_open(self.twilio_port):
            say(f"something already listens on {self.twilio_port}: using it as the Twilio fake")
            return
        proc = self.spawn("Twilio fake", [sys.executable, "-m", "devhost.twilio_fake", "--port",
                                          str(self.twilio_port)], env)
        self.wait_ready("Twilio fake", proc, lambda: port_open(self.twilio_port), "the lines above")

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
            say(f"Core Tools: a local install failed before (delete {failed} to retry)")
            return None
        if not shutil.which("npm"):
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
        failed.write_text(f"npm install {CORE_TOOLS_PACKAGE} did not produce a working func; see {log}\n")
        say(f"Core Tools: local install failed (its binary comes from a CDN this network may block; see {log})")
        return None

    def run(self) -> int:
        try:
            values = read_local_settings(ROOT).get("Values", {})
        except LocalSettingsError as exc:
            say(str(exc))
            return 2
        env = self.host_environment(values)
        if port_open(self.http_port):
            say(f"port {self.http_port} is busy: stop what uses it or set LOCAL_HTTP_PORT")
            return 1
        self.start_azurite(env)
        if not self.stopping.is_set():
            self.start_twilio_fake(env)
        if self.stopping.is_set():
            return 130
        command = self.host_command()
        if self.stopping.is_set():
            return 130
        say(f"HTTP functions on http://localhost:{self.http_port}/api/... ; Ctrl-C stops everything")
        host = self.spawn("Functions host", command, env)
        while not self.stopping.is_set() and host.poll() is None:
            self.stopping.wait(0.2)
        if host.poll() is not None and not self.stopping.is_set():
            say(f"the Functions host exited with {host.returncode}")
            return host.returncode or 1
        return 130


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
