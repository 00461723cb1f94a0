"""Free loopback ports and readiness polling for the local peers."""

from __future__ import annotations

import time
from typing import Callable

from devhost.ports import free_port, port_open

__all__ = ["free_port", "port_open", "wait_until"]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass (then fail naming ``what``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
