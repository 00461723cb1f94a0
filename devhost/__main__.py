"""``python -m devhost``: serve the function app in the current folder as ``func start`` would.

Settings come from local.settings.json ``Values`` (the environment wins), HTTP functions are served on
``http://localhost:<port>/api/...`` (``--port``, else ``Host.LocalHttpPort``, else 7071; loopback only: a
development host has no business being reachable from the network), queue triggers poll their queues with
host.json's semantics, and every sync invocation runs on one pool of ``PYTHON_THREADPOOL_THREAD_COUNT`` threads
(an invalid value: a warning, then the worker's default), every ``async def`` one on one event loop.
SIGINT (Ctrl-C) or SIGTERM stops it cleanly: no new work is taken, running invocations finish.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from .settings import LocalSettingsError, apply_local_settings, http_port, read_local_settings

EXIT_UNAVAILABLE = 1


class _FuncStyleFormatter(logging.Formatter):
    """``[2024-05-01T12:00:00.123Z] message``, the way func prints host and worker lines."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        return f"[{stamp}Z] {super().format(record)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--port", "-p", type=int, help="HTTP port (default: Host.LocalHttpPort, else 7071)")
    parser.add_argument("--script-root", default=".", help="folder holding function_app.py (default: .)")
    args = parser.parse_args(argv)

    root = Path(args.script_root).resolve()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_FuncStyleFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])  # the worker sets the root logger to INFO
    for noisy in ("azure.core.pipeline.policies.http_logging_policy", "urllib3.connectionpool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        document = read_local_settings(root)
        for name in apply_local_settings(document):
            print(f"Skipping '{name}' from local settings as it's already defined in current environment "
                  "variables.", flush=True)
        port = args.port or http_port(document)
        from .worker import WorkerPool

        pool = WorkerPool()
    except LocalSettingsError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_UNAVAILABLE

    sys.path.insert(0, str(root))
    os.chdir(root)
    try:
        import function_app
    except Exception as exc:  # the host reports an indexing failure and serves nothing
        logging.getLogger("devhost").exception("Worker failed to index functions: %s", exc)
        return EXIT_UNAVAILABLE
    functions = function_app.app.get_functions()

    from shared.hostjson import queue_settings

    from .http import HttpHost
    from .queues import QueueHost

    http = HttpHost(functions, pool=pool, port=port, public_host="localhost")
    try:
        http.start()
    except OSError:
        print(f"Port {port} is unavailable. Close the process using that port, or specify another port using "
              "--port [-p].", file=sys.stderr, flush=True)
        pool.shutdown()
        return EXIT_UNAVAILABLE
    queues = QueueHost(functions, pool=pool, poll_interval=0.1,
                       max_polling_interval=queue_settings().max_polling_interval).start()

    print(f"switchboard local host (devhost): {pool.threads} worker threads (async functions: one event loop)"
          "\n\nFunctions:\n", flush=True)
    for line in http.describe() + queues.describe():
        print(f"\t{line}\n", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    print("Application is shutting down...", flush=True)
    http.stop()
    queues.stop()
    pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
