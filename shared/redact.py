"""Keep personal data out of logs: phone numbers are masked in every log record of every logger.

Phone numbers are personal data; logs keep just enough of one to tell two apart (``+1415***2345``).
Why one record factory rather than care at each call site: under the Functions worker the root logger is at
INFO, so SDKs log too, and they log what we cannot edit (azure-core's HTTP policy logs each Table request URL,
whose key is the number, URL-encoded: ``RowKey='%2B1415…'``; twilio's client logs query parameters). The factory
is installed once, when the ``shared`` package is imported, and masks the formatted message, the exception text
and the stack text of every record, whichever logger made it.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

# Machine ids whose hex may hold a long run of decimal digits by chance (~1 in 10 random 32-hex ids holds a run of
# 10+): Twilio SIDs (``SM`` + 32 hex), 32+ hex ids and hashes (uuid4().hex, sha256), dashed UUIDs. Kept whole, so
# they stay readable; a chosen trade-off: a phone number hidden inside a pure-hex token of 32+ is not masked.
_MACHINE_ID = (r"(?P<keep>(?<![0-9A-Za-z])(?:[A-Z]{2}[0-9a-fA-F]{32}|[0-9a-fA-F]{32,}"
               r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![0-9A-Za-z]))")
# A number as E.164 (+…), URL-encoded (%2B…, %252B… twice) or as a bare run of 10-15 digits wherever it stands
# (``reminder_14155550100``, ``id.14155550100.2``, ``x14155550100``): ids carry numbers. Timestamps, durations and
# sizes have shorter runs (``2030-01-01T09:00:00.1234567Z``, ``250 ms``) and are left alone.
_NUMBER = re.compile(_MACHINE_ID + r"|(?P<prefix>\+|%2[Bb]|%252[Bb])(?P<digits>\d{7,15})(?!\d)"
                     r"|(?<!\d)(?P<bare>\d{10,15})(?!\d)")
# azure-core logs every request and response (URL, headers) at INFO: numbers in Table keys, and a CPU cost.
QUIET_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy",)
_INSTALLED_MARK = "_switchboard_masks_numbers"


def mask_number(number: str | None) -> str:
    """``+14155552345`` → ``+1415***2345``; ``whatsapp:+14155552345`` → ``whatsapp:+1415***2345`` (the channel and
    the country stay readable); anything short or empty comes back as ``***``."""
    if not number:
        return "***"
    number = str(number)
    channel, colon, rest = number.partition(":")
    if colon and channel.isalpha():  # whatsapp:+1…, messenger:… — a channel prefix is not the number
        return f"{channel}:{mask_number(rest)}"
    if len(number) < 9:
        return "***"
    head = 5 if number.startswith("+") else 4
    return f"{number[:head]}***{number[-4:]}"


def _masked(match: re.Match[str]) -> str:
    if match.group("keep"):
        return match.group("keep")
    if match.group("bare"):
        return mask_number(match.group("bare"))
    digits = match.group("digits")
    return match.group("prefix") + (digits[:4] + "***" + digits[-4:] if len(digits) >= 8 else "***")


def mask_numbers_in(text: str) -> str:
    """Mask every phone number in free text (error messages and library log lines echo numbers back)."""
    return _NUMBER.sub(_masked, text)


@functools.lru_cache(maxsize=256)
def _stand_in_type(original: type) -> type:
    """An exception class named like ``original`` (module, qualified name) whose instances carry masked text."""
    name = getattr(original, "__name__", "Exception")
    return type(name, (Exception,), {"__module__": getattr(original, "__module__", __name__),
                                     "__qualname__": getattr(original, "__qualname__", name)})


def _stand_in(exc: BaseException | None, depth: int = 0) -> BaseException | None:
    """``exc`` and its chain rebuilt with masked messages and the same tracebacks (for handlers that format
    ``exc_info`` themselves rather than use ``exc_text``)."""
    if exc is None or depth > 16:
        return None
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails still gets a stand-in
        text = ""
    copy = _stand_in_type(type(exc))(mask_numbers_in(text))
    copy.__traceback__ = exc.__traceback__
    copy.__cause__ = _stand_in(exc.__cause__, depth + 1)
    copy.__context__ = _stand_in(exc.__context__, depth + 1)
    copy.__suppress_context__ = exc.__suppress_context__
    return copy


def _mask_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is the handler's to report; mask its raw parts
        message = f"{record.msg!r} {record.args!r}"
    masked = mask_numbers_in(message)
    if masked != message:
        record.msg, record.args = masked, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        masked_exc = mask_numbers_in(record.exc_text)
        if masked_exc != record.exc_text and record.exc_info and record.exc_info[1] is not None:
            # Formatters use exc_text; OpenTelemetry's LoggingHandler (the worker's exporter) formats exc_info
            # itself into exception.message / exception.stacktrace: give it the masked stand-in.
            stand_in = _stand_in(record.exc_info[1])
            record.exc_info = (record.exc_info[0], stand_in, record.exc_info[2])
        record.exc_text = masked_exc
    if record.stack_info:
        record.stack_info = mask_numbers_in(record.stack_info)


def install_log_redaction() -> None:
    """Mask numbers in every record any logger creates from now on, and quiet azure-core's per-request log.

    Idempotent; wraps whatever record factory is already installed (the worker's or another library's).
    """
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    previous = logging.getLogRecordFactory()
    if getattr(previous, _INSTALLED_MARK, False):
        return

    def masking_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _mask_record(record)
        return record

    setattr(masking_factory, _INSTALLED_MARK, True)
    logging.setLogRecordFactory(masking_factory)
