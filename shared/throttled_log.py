"""Rate-limited log lines for events an outside caller can trigger.

Why: a forged or broken request costs its sender nothing, so a log line per request lets anyone flood the logs
(and Application Insights' bill). Every warning/error caused by a request goes through :func:`log_throttled`:
one record per key per interval, then a count of what was held back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

DEFAULT_INTERVAL_SECONDS = 60.0
MAX_KEYS = 1024  # keys are chosen by our code, but stay bounded whatever happens

_clock: Callable[[], float] = time.monotonic
_lock = threading.Lock()
_last: dict[tuple[str, str], tuple[float, int]] = {}  # (logger, key) -> (when logged, suppressed since)


def log_throttled(logger: logging.Logger, level: int, key: str, msg: str, *args: Any,
                  interval: float = DEFAULT_INTERVAL_SECONDS) -> bool:
    """Log ``msg % args`` unless the same ``key`` was logged less than ``interval`` seconds ago.

    Returns whether the record was emitted. Held-back records are counted and reported on the next one.
    """
    slot = (logger.name, key)
    now = _clock()
    with _lock:
        last = _last.get(slot)
        if last is not None and now - last[0] < interval:
            _last[slot] = (last[0], last[1] + 1)
            return False
        if len(_last) >= MAX_KEYS:
            _last.clear()
        _last[slot] = (now, 0)
    suppressed = last[1] if last is not None else 0
    if suppressed:
        msg += " (%d similar record(s) held back in the last %.0f s)"
        args = (*args, suppressed, interval)
    logger.log(level, msg, *args)
    return True


def reset_throttle() -> None:
    """Forget what was logged (tests reset the app between cases)."""
    with _lock:
        _last.clear()
