"""Log lines an outside caller can trigger are rate-limited by one mechanism (shared.throttled_log); phone numbers
are masked wherever they stand in a line, and machine ids (SIDs, UUIDs, digests) stay readable."""

from __future__ import annotations

import logging

import pytest

from shared import throttled_log
from shared.redact import install_log_redaction, mask_numbers_in


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


# ---------------------------------------------------------------- phone-length digit runs inside ids (issue 27, 8)

@pytest.mark.parametrize("text, masked", [
    ("sent id=reminder_14155550100", "sent id=reminder_1415***0100"),
    ("sent id=order.14155550100.2", "sent id=order.1415***0100.2"),
    ("sent id=x14155550100y", "sent id=x1415***0100y"),
    ("sent id=14155550100_retry", "sent id=1415***0100_retry"),
    ("sent id=batch7.447911123456", "sent id=batch7.4479***3456"),
])
def test_a_phone_length_digit_run_in_an_id_is_masked_next_to_underscores_dots_and_letters(text, masked):
    assert mask_numbers_in(text) == masked


def test_a_log_record_naming_an_id_that_holds_a_number_reaches_every_handler_masked(caplog):
    install_log_redaction()
    logging.getLogger("switchboard.test.ids").warning("send %s dead-lettered", "reminder_14155550100")
    [record] = [r for r in caplog.records if r.name == "switchboard.test.ids"]
    assert record.getMessage() == "send reminder_1415***0100 dead-lettered"


@pytest.mark.parametrize("machine_id", [
    "SM1234567890123abcdef0123456789abc",          # a message SID whose hex holds 13 decimal digits in a row
    "CA0123456789012345abcdef0123456789",          # a call SID with 16
    "AC" + "0123456789abcdef" * 2,
    "1234567890123abcdef0123456789abc",            # uuid4().hex, the enqueue CLI's default id
    "8c1e0c1a-4b2d-4c3e-9f00-123456789012",        # a dashed UUID whose last group is all digits
    "ab" + "1234567890" * 3 + "cd" * 16,           # a sha256 hex digest (64 hex)
])
def test_twilio_sids_uuids_and_hex_digests_stay_readable_whatever_digits_they_hold(machine_id):
    text = f"row {machine_id} updated (sid={machine_id})"
    assert mask_numbers_in(text) == text


def test_timestamps_durations_and_sizes_are_left_alone_while_e164_numbers_are_still_masked():
    text = "at 2030-01-01T09:00:00.1234567Z took 250 ms, 1048576 bytes, Retry-After 30"
    assert mask_numbers_in(text) == text
    assert (mask_numbers_in("to=+14155550100 wa=whatsapp:+447911123456 key=RowKey='%2B14155550100'")
            == "to=+1415***0100 wa=whatsapp:+4479***3456 key=RowKey='%2B1415***0100'")


@pytest.mark.parametrize("address, masked", [
    ("whatsapp:+14155550102", "whatsapp:+1415***0102"),
    ("whatsapp:+447911123456", "whatsapp:+4479***3456"),
    ("+14155550102", "+1415***0102"),
    ("whatsapp:", "whatsapp:***"),
])
def test_a_whatsapp_address_is_masked_keeping_its_channel_and_country(address, masked):
    # Log lines name senders with mask_number (opt-outs, suppressed replies): `what***0102` hid both.
    from shared.redact import mask_number

    assert mask_number(address) == masked
