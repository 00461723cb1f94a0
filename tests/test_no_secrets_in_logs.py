"""No secret value in any log line: the session-wide check (conftest's ``SESSION_LOGS`` + ``pytest_sessionfinish``)
and proof that it catches a leak.

The authoritative check runs when the session finishes, so it covers every test whatever the order; the test
here checks what has been logged so far, so a leak is also pinned to a test when this file runs last.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, SESSION_LOGS, VAULT_AUTH_TOKEN
from tests.secret_scan import LogRecorder, register_secret


def test_session_recorder_sees_info_of_every_logger_with_the_root_at_info_as_the_worker_sets_it():
    root = logging.getLogger()
    assert SESSION_LOGS in root.handlers and root.level == logging.INFO
    before = len(SESSION_LOGS.texts)
    logging.getLogger("azure.core.some.sdk").info("info line from an SDK")
    logging.getLogger("urllib3.connectionpool").info("info line from another library")
    assert len(SESSION_LOGS.texts) == before + 2


def test_recorder_finds_a_secret_in_messages_arguments_and_exceptions():
    secret = "leak-check-secret-8e8e8e8e"
    recorder = LogRecorder()
    logger = logging.getLogger("tests.leakcheck")
    logger.addHandler(recorder)
    logger.propagate = False  # keep these deliberate leaks out of the session's own check
    try:
        logger.info("clean line")
        logger.info("token=%s", secret)
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(recorder)
        logger.propagate = True
    leaks = recorder.leaks({secret})
    assert len(leaks) == 2
    assert all(secret not in text for _, text in leaks)  # the report itself masks the value


def test_no_secret_in_any_log_record_so_far():
    assert SESSION_LOGS.leaks() == []


def test_a_leaking_test_fails_the_whole_run(tmp_path):
    test_file = tmp_path / "test_leaky.py"
    test_file.write_text(textwrap.dedent(f"""
        import logging
        from tests.secret_scan import register_secret

        def test_leaks():
            logging.getLogger("switchboard.oops").info("token is %s", {VAULT_AUTH_TOKEN!r})
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-c", os.devnull,
                          "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(test_file)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert "1 passed" in out.stdout
    assert "SECRET LEAK: 1 log record(s)" in out.stdout
    assert VAULT_AUTH_TOKEN not in out.stdout + out.stderr
    assert out.returncode == 1


PLANTED_NUMBER_LEAK = """
import logging

def test_leaks_a_number():
    # A library that bypasses the app's masking (its own record factory) and logs a Table URL at INFO.
    logging.setLogRecordFactory(logging.LogRecord)
    logging.getLogger("somelib.http").info("GET /optouts(PartitionKey='optout',RowKey='%2B14155550123')")
"""


def test_a_planted_number_leak_from_any_logger_at_info_fails_the_whole_run(tmp_path):
    test_file = tmp_path / "test_leaky_number.py"
    test_file.write_text(PLANTED_NUMBER_LEAK)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-c", os.devnull,
                          "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(test_file)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert "1 passed" in out.stdout
    assert "PHONE NUMBER LEAK: 1 log record(s)" in out.stdout and "[somelib.http]" in out.stdout
    assert out.returncode == 1


def test_register_secret_refuses_short_values():
    import pytest

    with pytest.raises(ValueError):
        register_secret("short")


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    """A record made without the app's record factory (as a library bypassing it would)."""
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_recorder_flags_whole_numbers_plain_or_url_encoded_from_any_logger_but_not_masked_ones():
    from shared.redact import mask_number

    recorder = LogRecorder()
    recorder.handle(_record("switchboard.check", "sent to %s", mask_number("+14155552345")))
    recorder.handle(_record("azure.core.check", "RowKey='%2B1415***2345'"))
    assert recorder.unmasked_numbers() == []
    recorder.handle(_record("switchboard.check", "sent to %s", "+14155552345"))
    recorder.handle(_record("urllib3.check", "sdk line with +14155552345"))
    recorder.handle(_record("azure.core.check", "PUT optouts(PartitionKey='optout',RowKey='%2B14155552345')"))
    recorder.handle(_record("azure.core.check", "double encoded %252B14155552345"))
    assert [name for name, _ in recorder.unmasked_numbers()] == [
        "switchboard.check", "urllib3.check", "azure.core.check", "azure.core.check"]


def test_every_logger_masks_numbers_in_messages_arguments_and_exceptions():
    """The app's record factory (installed by importing ``shared``) masks what any library logs."""
    recorder = LogRecorder()
    logger = logging.getLogger("somelib.client")
    logger.addHandler(recorder)
    logger.propagate = False
    try:
        logger.info("GET /optouts(PartitionKey='optout',RowKey='%s')", "%2B14155550123")
        logger.warning("Query Params: {'To': '+14155550123', 'From': 'whatsapp:+447700900123'}")
        try:
            raise RuntimeError("Twilio refused +14155550123")
        except RuntimeError:
            logger.exception("send failed")
    finally:
        logger.removeHandler(recorder)
        logger.propagate = True
    assert len(recorder.texts) == 3
    assert recorder.unmasked_numbers() == []
    text = "\n".join(t for _, t in recorder.texts)
    assert "%2B1415***0123" in text and "+1415***0123" in text and "+4477***0123" in text


def test_azure_core_per_request_http_logging_is_quiet_at_info():
    import shared  # noqa: F401

    policy = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    assert not policy.isEnabledFor(logging.INFO) and policy.isEnabledFor(logging.WARNING)
