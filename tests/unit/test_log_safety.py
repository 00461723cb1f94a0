"""Log lines an outside caller can trigger are rate-limited by one mechanism (shared.throttled_log)."""

from __future__ import annotations

import logging

from shared import throttled_log
from shared.redact import mask_numbers_in


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_record_per_key_per_interval_then_a_count_of_what_was_held_back(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(throttled_log, "_clock", clock)
    logger = logging.getLogger("switchboard.test.throttle")
    emitted = [throttled_log.log_throttled(logger, logging.WARNING, "k", "forged %s", i) for i in range(100)]
    assert emitted.count(True) == 1
    assert throttled_log.log_throttled(logger, logging.WARNING, "other", "other key")
    clock.now += 61
    assert throttled_log.log_throttled(logger, logging.WARNING, "k", "forged %s", 100)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["forged 0", "other key", "forged 100 (99 similar record(s) held back in the last 60 s)"]


def test_masking_leaves_ids_sizes_and_masked_numbers_alone():
    text = "SM0123456789abcdef0123456789abcdef size 1048576 +1415***2345 code 21211"
    assert mask_numbers_in(text) == text
