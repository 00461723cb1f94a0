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


def test_session_recorder_sees_every_level_of_every_logger():
    root = logging.getLogger()
    assert SESSION_LOGS in root.handlers and root.level == logging.DEBUG
    before = len(SESSION_LOGS.texts)
    logging.getLogger("azure.core.some.sdk").debug("debug line from an SDK")
    assert len(SESSION_LOGS.texts) == before + 1


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


def test_register_secret_refuses_short_values():
    import pytest

    with pytest.raises(ValueError):
        register_secret("short")


def test_recorder_flags_whole_phone_numbers_in_app_logs_but_not_masked_ones():
    import logging

    from shared.redact import mask_number
    from tests.secret_scan import LogRecorder

    recorder = LogRecorder()
    app_log, sdk_log = logging.getLogger("switchboard.check"), logging.getLogger("urllib3.check")
    for logger in (app_log, sdk_log):
        logger.addHandler(recorder)
        logger.propagate = False  # the deliberate leak below must not reach the session-wide check
    try:
        app_log.warning("sent to %s", mask_number("+14155552345"))
        sdk_log.warning("sdk line with +14155552345")  # not ours: the app scan ignores it
        assert recorder.unmasked_numbers() == []
        app_log.warning("sent to %s", "+14155552345")
        assert [name for name, _ in recorder.unmasked_numbers()] == ["switchboard.check"]
    finally:
        for logger in (app_log, sdk_log):
            logger.removeHandler(recorder)
            logger.propagate = True
