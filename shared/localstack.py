"""Where the local stack listens, for the local commands (``shared.enqueue``, ``shared.ops``, ``devhost.simulate``).

``make run`` takes its ports from ``LOCAL_HTTP_PORT`` (7071), ``AZURITE_BLOB_PORT`` (10000), ``AZURITE_QUEUE_PORT``
(10001), ``AZURITE_TABLE_PORT`` (10002) and ``TWILIO_FAKE_PORT`` (4010), and while it runs it writes them, with its
pid, to ``.azurite/make-run.json``. A command finds the stack the same way: a port variable that is set wins, else
the ports of the ``make run`` running from this folder, else the default. Only settings left at their local
defaults are pointed there: ``AzureWebJobsStorage=UseDevelopmentStorage=true`` (it names no port),
``PUBLIC_BASE_URL=http://localhost:7071`` and ``TWILIO_API_BASE_URL=http://127.0.0.1:4010``. Anything else (an
account in Azure, a tunnel URL, real Twilio) is used as it is. Each command says which stack it talks to, in one
line on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import MutableMapping

ROOT = Path(__file__).resolve().parents[1]
STATE_FILE = Path(".azurite") / "make-run.json"
# service → (variable, default port)
PORTS = {"http": ("LOCAL_HTTP_PORT", 7071), "blob": ("AZURITE_BLOB_PORT", 10000),
         "queue": ("AZURITE_QUEUE_PORT", 10001), "table": ("AZURITE_TABLE_PORT", 10002),
         "twilio": ("TWILIO_FAKE_PORT", 4010)}
LOCAL_STORAGE = "UseDevelopmentStorage=true"
LOCAL_PUBLIC_URL = "http://localhost:7071"
LOCAL_TWILIO_URL = "http://127.0.0.1:4010"
# Azurite's well-known development account (published in Azurite's documentation; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class PortSettingError(ValueError):
    """A port variable that is not a TCP port number (the message names it)."""


def port_variable(name: str, environ: MutableMapping[str, str] = os.environ) -> int | None:
    """The port a variable sets; None when it is unset or empty."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise PortSettingError(f"{name} must be a TCP port number, got {raw[:20]!r}")
    return int(raw)


def is_local_storage(value: str | None) -> bool:
    return (value or "").replace(" ", "").lower().rstrip(";") == LOCAL_STORAGE.lower()


@dataclass
class LocalStack:
    """The ports of the local stack, and where they came from."""

    ports: dict[str, int]
    pid: int | None = None                       # the make run found running from this folder
    from_env: list[str] = field(default_factory=list)  # the variables that set a port

    @property
    def default(self) -> bool:
        return all(self.ports[s] == d for s, (_, d) in PORTS.items())

    def storage_connection(self) -> str:
        """The connection string of this stack's Azurite (``UseDevelopmentStorage=true`` on the default ports)."""
        if all(self.ports[s] == PORTS[s][1] for s in ("blob", "queue", "table")):
            return LOCAL_STORAGE
        base = "http://127.0.0.1:{}/" + AZURITE_ACCOUNT
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={base.format(self.ports['blob'])};QueueEndpoint={base.format(self.ports['queue'])};"
                f"TableEndpoint={base.format(self.ports['table'])};")

    def public_url(self) -> str:
        return f"http://localhost:{self.ports['http']}"

    def twilio_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['twilio']}"

    def describe(self, services: list[str]) -> str:
        """``local stack: queue 127.0.0.1:17101 (make run, pid 4242, running in this folder)``: what a command talks
        to, and why there."""
        names = {"http": "host", "blob": "blob", "queue": "queue", "table": "table", "twilio": "Twilio fake"}
        where = ", ".join(f"{names[s]} {'localhost' if s == 'http' else '127.0.0.1'}:{self.ports[s]}"
                          for s in services)
        reasons = []
        if self.from_env:
            reasons.append("from " + ", ".join(self.from_env))
        if self.pid:
            reasons.append(f"make run, pid {self.pid}, running in this folder")
        elif not self.from_env:
            reasons.append("default ports: no make run is running in this folder")
        return f"local stack: {where} ({'; '.join(reasons)})"


def state_path(root: Path = ROOT) -> Path:
    return root / STATE_FILE


def running_make_run(root: Path = ROOT) -> dict | None:
    """The state ``make run`` wrote in ``root``, when the process that wrote it is still alive; else None."""
    try:
        state = json.loads(state_path(root).read_text(encoding="utf-8"))
        pid = int(state["pid"])
        ports = {s: int(state["ports"][s]) for s in PORTS}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    return {**state, "pid": pid, "ports": ports}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: a reused pid is not make run
        try:
            return b"devhost.run" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def find(environ: MutableMapping[str, str] = os.environ, root: Path | None = ROOT) -> LocalStack:
    """The stack the local commands talk to: port variables, else the ports of the make run running from ``root``
    (None: variables only, as make run itself reads them), else defaults. Raises :class:`PortSettingError` for a
    port variable that is not a port."""
    running = running_make_run(root) if root is not None else None
    ports: dict[str, int] = {}
    from_env = []
    for service, (variable, default) in PORTS.items():
        value = port_variable(variable, environ)
        if value is not None:
            from_env.append(f"{variable}={value}")
            ports[service] = value
        else:
            ports[service] = running["ports"][service] if running else default
    return LocalStack(ports, running["pid"] if running else None, from_env)


def write_state(stack: LocalStack, pid: int, root: Path = ROOT) -> Path:
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": pid, "ports": stack.ports, "root": str(root)}) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def remove_state(pid: int, root: Path = ROOT) -> None:
    """Remove the state file if this pid wrote it."""
    path = state_path(root)
    try:
        if int(json.loads(path.read_text(encoding="utf-8")).get("pid", 0)) == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def point_settings(values: MutableMapping[str, str], stack: LocalStack) -> list[str]:
    """Re-point the settings in ``values`` that are at their local defaults to ``stack``; returns the services those
    settings reach (for :meth:`LocalStack.describe`), in order; [] when none is local."""
    services: list[str] = []
    if "AzureWebJobsStorage" in values and is_local_storage(values["AzureWebJobsStorage"]):
        values["AzureWebJobsStorage"] = stack.storage_connection()
        services += ["queue", "table"]
    if (values.get("PUBLIC_BASE_URL") or "").rstrip("/") == LOCAL_PUBLIC_URL:
        values["PUBLIC_BASE_URL"] = stack.public_url()
        services.append("http")
    if (values.get("TWILIO_API_BASE_URL") or "").rstrip("/") == LOCAL_TWILIO_URL:
        values["TWILIO_API_BASE_URL"] = stack.twilio_url()
        services.append("twilio")
    return services


def use_local_stack(environ: MutableMapping[str, str] = os.environ, *, prog: str, services: list[str] | None = None,
                    root: Path = ROOT) -> LocalStack | None:
    """For a local command: point the environment's local-default settings at the running stack and say so on
    stderr (``<prog>local stack: …``). ``services`` limits what is named; None when no setting is local."""
    local = {name: environ[name] for name in ("AzureWebJobsStorage", "PUBLIC_BASE_URL", "TWILIO_API_BASE_URL")
             if name in environ}
    stack = find(environ, root)
    reached = point_settings(local, stack)
    environ.update(local)
    named = [s for s in reached if services is None or s in services]
    if not named:
        return None
    print(f"{prog}{stack.describe(named)}", file=sys.stderr, flush=True)
    return stack
