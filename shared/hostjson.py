"""The queue semantics the Functions host applies, read once from host.json (never hard-coded twice).

The app needs ``maxDequeueCount`` to know when a try is the last one (then it dead-letters with the reason
instead of letting the host move the message to ``-poison`` without one); the tests' stand-in host reads the
same values so it behaves like the real one.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"


@dataclass(frozen=True)
class QueueSettings:
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"


def _timespan(value: str | None, default: float) -> float:
    """``"00:00:30"`` / ``"1.00:00:00"`` → seconds."""
    if not value:
        return default
    match = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", value.strip())
    if not match:
        return default
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@functools.lru_cache(maxsize=4)
def queue_settings(path: Path = HOST_JSON) -> QueueSettings:
    """``extensions.queues`` of host.json, with the host's own defaults for anything unset."""
    try:
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
    except (OSError, ValueError):
        queues = {}
    return QueueSettings(
        max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
        visibility_timeout=_timespan(queues.get("visibilityTimeout"), 0.0),
        batch_size=int(queues.get("batchSize", 16)),
        new_batch_threshold=int(queues.get("newBatchThreshold", 8)),
        max_polling_interval=_timespan(queues.get("maxPollingInterval"), 60.0),
        message_encoding=str(queues.get("messageEncoding", "base64")),
    )
