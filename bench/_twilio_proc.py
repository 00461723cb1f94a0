"""Run tests/peers/twilio_fake.py in a child process, so the fake's handler threads do not share our GIL.

Twilio is remote in production: a fake serving from the benchmark's own process would steal interpreter time
from the code being measured (and from the raw-HTTP ceiling alike), so the outbound bench serves it from here.

Child protocol (stdin/stdout, one JSON line each): the child prints ``{"url": ...}`` when listening; the parent
writes ``stats`` and gets ``{"requests": n, "created": n, "by_id": {id: creates}, "faults": {...}}``; ``stop``
(or EOF) ends it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

from bench._common import PYTHON, ROOT


class TwilioFakeProcess:
    def __init__(self, account_sid: str, credentials: dict[str, str], fault_rate: float = 0.0,
                 latency_seconds: float = 0.0, **options: Any) -> None:
        """``options``: more of the fake's settings (e.g. ``sender_mps``, ``concurrency_limit``)."""
        args = json.dumps({"account_sid": account_sid, "credentials": credentials, "fault_rate": fault_rate,
                           "latency_seconds": latency_seconds, "options": options})
        self.proc = subprocess.Popen([PYTHON, "-m", "bench._twilio_proc", args], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.kill()
            raise RuntimeError("the Twilio fake child process did not start")
        self.base_url: str = json.loads(line)["url"]

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def reset(self) -> None:
        self._ask("reset")

    def records(self) -> list[dict[str, Any]]:
        """Every create request: kind, send id, To, HTTP answer, created, and when a modelled sender queue took it
        (``time.monotonic()``, the same clock in every process of this machine)."""
        return self._ask("records")["records"]

    def sender_queues(self) -> dict[str, Any]:
        """The modelled sender queues (peak depth) and the 30001 overflow count."""
        return self._ask("queues")

    def set_latency(self, seconds: float) -> None:
        """Every answer from now on waits ``seconds`` (Twilio's own API latency)."""
        self._ask(f"latency {seconds}")

    def stop(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _child(config: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.peers.twilio_fake import start_twilio_fake

    fake = start_twilio_fake(config["account_sid"], config["credentials"], fault_rate=config["fault_rate"],
                             latency_seconds=config.get("latency_seconds", 0.0), **config.get("options", {}))
    print(json.dumps({"url": fake.base_url}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            with fake._lock:  # noqa: SLF001 - a consistent snapshot
                records = list(fake.requests)
            by_id = Counter(r.send_id for r in records if r.created)
            faults = Counter(r.fault or str(r.answered) for r in records)
            print(json.dumps({"requests": len(records), "created": sum(by_id.values()), "by_id": by_id,
                              "faults": faults}), flush=True)
        elif command == "records":
            with fake._lock:  # noqa: SLF001 - a consistent snapshot
                records = list(fake.requests)
            print(json.dumps({"records": [
                {"kind": r.kind, "id": r.send_id, "to": r.first("To"), "answered": r.answered,
                 "created": r.created, "submitted_at": r.submitted_at} for r in records]}), flush=True)
        elif command == "queues":
            with fake._lock:  # noqa: SLF001
                print(json.dumps({"queues": fake.sender_queues, "overflow_30001": fake.overflow_30001}), flush=True)
        elif command.startswith("latency "):
            fake.latency_seconds = float(command.split()[1])
            print("{}", flush=True)
        elif command == "reset":
            rate = fake.fault_rate
            fake.reset()
            fake.fault_rate = rate
            print("{}", flush=True)
        else:
            break
    fake.stop()


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
