"""Azurite (queue + table) started from node_modules on free loopback ports, stopped by PID.

Tables live in memory. The queue service keeps its data in a temporary folder (removed on stop) instead: with
``--inMemoryPersistence`` every message written is an extent of its own, and Azurite's extent garbage collector,
60 s after start and every 60 s after, stops the queue service while it sweeps them, for longer the more were
written (measured: 0.6 s after 1,000 messages, 31 s after 3,000). On disk, messages share extent files and the sweep
is a few milliseconds, so a long test or bench measures the app rather than that pause."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .ports import free_port, port_open, wait_until

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    queue_port: int
    table_port: int
    processes: list[subprocess.Popen]
    data_dir: str | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _binary(name: str) -> str:
    path = ROOT / "node_modules" / ".bin" / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run 'npm ci' (make test does) to install Azurite")
    return str(path)


def start_azurite(timeout: float = 30.0) -> Azurite:
    queue_port, table_port = free_port(), free_port()
    common = ["--disableTelemetry", "--skipApiVersionCheck", "--silent"]
    data_dir = tempfile.mkdtemp(prefix="switchboard-azurite-")
    processes = [
        subprocess.Popen([_binary("azurite-queue"), "--queueHost", "127.0.0.1", "--queuePort", str(queue_port),
                          "--location", data_dir, *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([_binary("azurite-table"), "--tableHost", "127.0.0.1", "--tablePort", str(table_port),
                          "--inMemoryPersistence", *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    azurite = Azurite(queue_port, table_port, processes, data_dir)
    try:
        wait_until(lambda: port_open(queue_port) and port_open(table_port), timeout, "Azurite to listen")
    except TimeoutError:
        azurite.stop()
        raise
    return azurite
