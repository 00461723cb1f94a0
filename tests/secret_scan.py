"""Every log record the test session emits, checked against every secret value the tests used and for unmasked
phone numbers, whichever logger (app or library) made it.

``conftest.py`` installs one :class:`LogRecorder` on the root logger for the whole session, with the root at
INFO as the Functions worker sets it (so every library's INFO lines are seen, as Application Insights sees them),
and checks it when the session finishes, whatever the test order: a secret or a whole phone number (plain or
URL-encoded, as in a Table request URL) in any message, exception or stack text fails the run. Tests register
the secret values they use with :func:`register_secret`.
"""

from __future__ import annotations

import logging
import re
import threading

# A whole E.164 number, plain or URL-encoded once or twice; logs may only hold masked ones (+1415***2345).
_FULL_NUMBER = re.compile(r"(?<![\d*])(?:\+|%2[Bb]|%252[Bb])\d{10,15}(?![\d*])")

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str) -> str:
    """Remember ``value`` as a secret no log line may contain; returns it (for inline use)."""
    if len(value) < 8:
        raise ValueError("use secret values of 8+ characters so a match means a leak, not a coincidence")
    with _registered_lock:
        _registered.add(value)
    return value


def registered_secrets() -> frozenset[str]:
    with _registered_lock:
        return frozenset(_registered)


class LogRecorder(logging.Handler):
    """Keeps the text of every record (message, exception and stack text) it sees."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[tuple[str, str]] = []  # (logger name, text)
        self._texts_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string still gets its raw parts checked
            message = f"{record.msg!r} {record.args!r}"
        parts = [message]
        # As logging.Formatter does: the record's exc_text (which the app's redaction fills) wins over exc_info.
        if record.exc_text:
            parts.append(record.exc_text)
        elif record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        with self._texts_lock:
            self.texts.append((record.name, "\n".join(parts)))

    def leaks(self, secrets: frozenset[str] | set[str] | None = None) -> list[tuple[str, str]]:
        """(logger name, offending line with the secret masked) for every record holding a secret."""
        values = registered_secrets() if secrets is None else frozenset(secrets)
        with self._texts_lock:
            texts = list(self.texts)
        found = []
        for logger_name, text in texts:
            hits = [v for v in values if v in text]
            if hits:
                masked = text
                for value in hits:
                    masked = masked.replace(value, f"<secret {value[:3]}…>")
                found.append((logger_name, masked[:300]))
        return found

    def unmasked_numbers(self, logger_prefix: str = "") -> list[tuple[str, str]]:
        """(logger name, line) for every record (of loggers under ``logger_prefix``; default all) that holds a
        whole phone number instead of a masked one."""
        with self._texts_lock:
            texts = list(self.texts)
        return [(name, text[:300]) for name, text in texts
                if name.startswith(logger_prefix) and _FULL_NUMBER.search(text)]
