"""Every log record the test session emits, checked against every secret value the tests used, and the app's
own records checked for unmasked phone numbers.

``conftest.py`` installs one :class:`LogRecorder` on the root logger for the whole session (root at DEBUG, so
INFO/DEBUG lines of the app and the SDKs are seen too) and checks it when the session finishes, whatever the
test order: a secret in any message or exception text fails the run. Tests register the values they use with
:func:`register_secret`.
"""

from __future__ import annotations

import logging
import re
import threading

# A whole E.164 number; the app's logs may only hold masked ones (+1415***2345).
_FULL_NUMBER = re.compile(r"(?<![\d*])\+\d{10,15}(?![\d*])")

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
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
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

    def unmasked_numbers(self, logger_prefix: str = "switchboard") -> list[tuple[str, str]]:
        """(logger name, line) for every app log record that holds a whole phone number instead of a masked one."""
        with self._texts_lock:
            texts = list(self.texts)
        return [(name, text[:300]) for name, text in texts
                if name.startswith(logger_prefix) and _FULL_NUMBER.search(text)]
