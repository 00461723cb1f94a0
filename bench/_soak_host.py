"""The local Functions host's queue half (devhost/queues.py) as a process of its own, so the soak can SIGKILL it.

``python -m bench._soak_host --outcomes FILE [--visibility S] [--lease S] [--claim-margin S]``

Settings come from the environment (as the real host hands them to the worker). Time is scaled down for the soak,
and every scaled value is printed by the soak: ``--visibility`` is the retry back-off (host.json's
``visibilityTimeout``, 30 s), ``--lease`` how long a received message stays invisible while it runs (the real host
uses 10 minutes and renews it; a killed host's messages reappear after it), ``--claim-margin`` the sender's
``CLAIM_LEASE_MARGIN_SECONDS`` (30 s; with ``TWILIO_HTTP_TIMEOUT_SECONDS`` it decides when a claim left by a
crash counts as abandoned → "ambiguous").

Observation only: the sender's own outcome log lines (``outcome=sent|duplicate|deferred|dead_lettered``) are
appended to ``--outcomes``, one line per record, written unbuffered so a SIGKILL loses at most the line being
written. Prints ``ready`` when polling; stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _AppendHandler(logging.Handler):
    def __init__(self, path: str) -> None:
        super().__init__(logging.INFO)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage().replace("\n", " ") + "\n"
            os.write(self.fd, line.encode("utf-8"))
        except Exception:  # noqa: BLE001
            self.handleError(record)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outcomes", required=True)
    parser.add_argument("--visibility", type=float, default=None)
    parser.add_argument("--lease", type=int, default=None)
    parser.add_argument("--claim-margin", type=float, default=None)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    args = parser.parse_args()

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="host %(levelname)s %(name)s: %(message)s")
    outbound_log = logging.getLogger("switchboard.outbound")
    outbound_log.setLevel(logging.INFO)
    outbound_log.addHandler(_AppendHandler(args.outcomes))
    outbound_log.propagate = False

    import function_app
    from shared import sender
    from devhost import queues

    if args.lease is not None:
        queues.LEASE_SECONDS = args.lease  # type: ignore[assignment]
    if args.claim_margin is not None:
        sender.CLAIM_LEASE_MARGIN_SECONDS = args.claim_margin
    host = queues.QueueHost(function_app.app.get_functions(), visibility_timeout=args.visibility,
                                   poll_interval=args.poll_interval)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    host.start()
    print("ready", flush=True)
    stop.wait()
    host.stop()


if __name__ == "__main__":
    main()
