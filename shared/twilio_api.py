"""Twilio REST: one client per process, send an SMS, place a call, and classify what went wrong.

Why this shape:
- One ``twilio.rest.Client`` per worker process keeps one pooled HTTP session (TLS handshakes are the slow part
  of a send). It is built lazily on the first send, so importing the function app stays light.
- The SDK's default HTTP timeout is *none*; every request here carries ``TWILIO_HTTP_TIMEOUT_SECONDS``.
- No automatic HTTP retries: Twilio's Messages and Calls APIs have no idempotency key, so a retried POST may
  send twice. Retrying is the queue's job, guarded by the ledger (``shared.sender``).
- Credentials are read through ``shared.secrets.get_secret`` on every send (it is cached there); the client's
  credentials are swapped only when the value changed, so a rotated token is picked up without a restart.
  A 401 / 20003 refreshes the secret once (rate-limited) and retries once: a 401 proves nothing was created.

Error classes say what the caller may do next:
- :class:`PermanentTwilioError` — Twilio refused the request for good (4xx such as 21211 invalid number,
  21610 unsubscribed recipient); do not retry.  :class:`AuthFailedError` is one, after the refresh.
- :class:`TransientTwilioError` — try again later; ``maybe_sent`` says whether the request may have reached
  Twilio and created the message/call anyway (read timeout, connection dropped after sending, a 5xx answer: Twilio's
  edge can answer 500-504 after the create went through). ``False`` means we observed that it did not (connection
  refused, 429) so a retry cannot duplicate.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from . import secrets
from .config import get_settings
from .outbound import CallMessage, SmsMessage, say_twiml

log = logging.getLogger("switchboard.twilio")

STATUS_CALLBACK_EVENTS = ["initiated", "ringing", "answered", "completed"]
# A 401 re-reads the secret at most this often (a wrong token must not hammer the vault).
AUTH_REFRESH_SECONDS = 30.0
AUTH_ERROR_CODES = {20003}
RATE_LIMIT_CODES = {20429}


class TwilioSendError(Exception):
    """A send did not succeed; ``reason`` is safe to log and to store (never holds a credential)."""

    def __init__(self, reason: str, *, http_status: int | None = None, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status
        self.code = code


class PermanentTwilioError(TwilioSendError):
    """Twilio refused the request; sending it again would fail the same way."""


class AuthFailedError(PermanentTwilioError):
    """Twilio rejected our credentials (401 / 20003) even after re-reading the secret."""


class TransientTwilioError(TwilioSendError):
    """Worth retrying later. ``maybe_sent`` is True when Twilio may have acted on the request anyway."""

    def __init__(self, reason: str, *, maybe_sent: bool, http_status: int | None = None,
                 code: int | None = None) -> None:
        super().__init__(reason, http_status=http_status, code=code)
        self.maybe_sent = maybe_sent


@dataclass(frozen=True)
class SendResult:
    sid: str
    status: str


# ---------------------------------------------------------------- the client


_lock = threading.Lock()
_client: Any = None
_credentials: tuple[str, str] | None = None


def _make_http_client(timeout: float) -> Any:
    """twilio's own ``TwilioHttpClient``: every request with ``timeout``, on a session from ``shared.transport``
    (one pooled connection per worker thread, proxy/CA settings read once, no retries: a retried POST could
    send twice)."""
    from twilio.http.http_client import TwilioHttpClient

    from .transport import new_session

    # The SDK's request log (it names the query, e.g. a list's To number) stays out unless asked for.
    http_log = logging.getLogger("switchboard.twilio.http")
    if http_log.level == logging.NOTSET:
        http_log.setLevel(logging.WARNING)
    client = TwilioHttpClient(pool_connections=True, timeout=timeout, logger=http_log)
    client.session.close()
    client.session = new_session(max_retries=0)
    return client


def _current_credentials() -> tuple[str, str, str]:
    """(username, password, account_sid): API key + its secret when TWILIO_API_KEY_SID is set, else the token."""
    settings = get_settings()
    account_sid = settings.require("TWILIO_ACCOUNT_SID")
    if settings.api_key_sid:
        return settings.api_key_sid, secrets.get_secret(secrets.API_KEY_SECRET), account_sid
    return account_sid, secrets.get_secret(secrets.AUTH_TOKEN), account_sid


def _secret_name() -> str:
    return secrets.API_KEY_SECRET if get_settings().api_key_sid else secrets.AUTH_TOKEN


def get_client() -> Any:
    """The process's Twilio client with current credentials (raises ``SecretUnavailableError`` when unreadable)."""
    global _client, _credentials
    username, password, account_sid = _current_credentials()
    with _lock:
        if _client is None:
            from twilio.rest import Client

            settings = get_settings()
            client = Client(username, password, account_sid=account_sid, environment={},
                            http_client=_make_http_client(settings.twilio_http_timeout))
            client.api.base_url = settings.twilio_api_base_url
            _client = client
            _credentials = (username, password)
        elif _credentials != (username, password):
            _client.username, _client.password = username, password
            _client.auth = (username, password)
            _credentials = (username, password)
            log.info("twilio credentials changed; client updated")
        return _client


def reset_client() -> None:
    """Forget the client (tests change settings between cases)."""
    global _client, _credentials
    with _lock:
        session = getattr(getattr(_client, "http_client", None), "session", None)
        if session is not None:
            session.close()
        _client = None
        _credentials = None


# ---------------------------------------------------------------- sending


def status_callback_url(kind: str, ident: str) -> str:
    """``PUBLIC_BASE_URL/api/status/message?id=…`` (or ``/call``), the id URL-encoded."""
    return _callback_url("message" if kind == "sms" else "call", ident)


def amd_callback_url(ident: str) -> str:
    """``PUBLIC_BASE_URL/api/status/amd?id=…``: where Twilio's asynchronous AMD result for a call goes."""
    return _callback_url("amd", ident)


def _callback_url(path: str, ident: str) -> str:
    from urllib.parse import quote

    base = get_settings().require("PUBLIC_BASE_URL")
    return f"{base}/api/status/{path}?id={quote(ident, safe='')}"


def send_sms(message: SmsMessage, *, from_: str | None, messaging_service_sid: str | None) -> SendResult:
    """Create the Message; exactly one of ``from_`` / ``messaging_service_sid`` names the sender."""
    kwargs: dict[str, Any] = {"to": message.to, "status_callback": status_callback_url("sms", message.id)}
    if message.content_sid:  # a template replaces body and media (the schema refuses both together)
        kwargs["content_sid"] = message.content_sid
        variables = message.content_variables_json()
        if variables is not None:
            kwargs["content_variables"] = variables
    if message.body:
        kwargs["body"] = message.body
    if message.media_urls:
        kwargs["media_url"] = list(message.media_urls)
    if from_:
        kwargs["from_"] = from_
    else:
        kwargs["messaging_service_sid"] = messaging_service_sid
    created = _with_auth_retry(lambda client: client.messages.create(**kwargs), "messages.create")
    return SendResult(sid=created.sid or "", status=str(created.status or ""))


def place_call(message: CallMessage, *, from_: str) -> SendResult:
    """Create the Call with exactly one of TwiML built from ``say``, ``twiml``, or ``url``."""
    kwargs: dict[str, Any] = {
        "to": message.to, "from_": from_,
        "status_callback": status_callback_url("call", message.id),
        "status_callback_event": list(STATUS_CALLBACK_EVENTS),
        "status_callback_method": "POST",
    }
    if message.say is not None:
        kwargs["twiml"] = say_twiml(message)
    elif message.twiml is not None:
        kwargs["twiml"] = message.twiml
    else:
        kwargs["url"] = message.url
    if message.timeout is not None:
        kwargs["timeout"] = message.timeout
    if message.machine_detection:
        # Asynchronous AMD: the call's TwiML plays at once (a person hears no detection delay); the result goes
        # to our signed AMD callback. With a voicemail, detection waits for the greeting's end (the beep), so the
        # callback can replace the call's TwiML with the voicemail exactly then.
        kwargs["machine_detection"] = "DetectMessageEnd" if message.voicemail else "Enable"
        kwargs["async_amd"] = "true"
        kwargs["async_amd_status_callback"] = amd_callback_url(message.id)
        kwargs["async_amd_status_callback_method"] = "POST"
    created = _with_auth_retry(lambda client: client.calls.create(**kwargs), "calls.create")
    return SendResult(sid=created.sid or "", status=str(created.status or ""))


def drop_voicemail(call_sid: str, twiml: str) -> SendResult:
    """Replace a live call's TwiML with the voicemail TwiML (:func:`shared.outbound.voicemail_twiml`), which the
    machine records after its beep."""
    updated = _with_auth_retry(lambda client: client.calls(call_sid).update(twiml=twiml), "calls.update",
                               ok_status=200)
    return SendResult(sid=updated.sid or call_sid, status=str(updated.status or ""))


def _with_auth_retry(create: Callable[[Any], Any], operation: str, *, ok_status: int = 201) -> Any:
    client = get_client()
    try:
        return _call(create, client, operation, ok_status)
    except AuthFailedError as first:
        name = _secret_name()
        refreshed = secrets.refresh_secret(name, min_interval=AUTH_REFRESH_SECONDS)
        before = _credentials
        client = get_client()
        if not refreshed and _credentials == before:
            # Someone refreshed moments ago (e.g. a failed webhook signature): the vault may still be behind a
            # rotation. Not Twilio's final word yet, so retry later, when a refresh is allowed again.
            raise TransientTwilioError(f"{first.reason}; secret refresh rate-limited, retrying later",
                                       maybe_sent=False, http_status=first.http_status,
                                       code=first.code) from None
        log.warning("twilio rejected credentials; re-read secret %s and retrying once", name)
        return _call(create, client, operation, ok_status)


def _call(create: Callable[[Any], Any], client: Any, operation: str, ok_status: int) -> Any:
    """One REST call, timed into ``switchboard.twilio.duration`` with its HTTP status (or why there was none)."""
    from . import telemetry

    with telemetry.twilio_call(operation) as call:
        try:
            result = create(client)
        except Exception as exc:  # noqa: BLE001 - classified below; unknown errors re-raised
            classified = classify(exc)
            call.status_code = getattr(exc, "status", None) if isinstance(getattr(exc, "status", None), int) \
                else None
            call.error_type = None if call.status_code else type(exc).__name__.lower()
            raise classified from exc
        call.status_code = ok_status
    return result


def classify(exc: BaseException) -> BaseException:
    """Map an SDK / HTTP exception to a :class:`TwilioSendError` subclass (others come back unchanged)."""
    import requests
    from twilio.base.exceptions import TwilioException, TwilioRestException

    if isinstance(exc, TwilioRestException):
        status, code = int(exc.status), exc.code
        detail = f"HTTP {status}" + (f" code {code}" if code else "") + (f": {exc.msg}" if exc.msg else "")
        detail = _redact(detail)
        if status == 401 or code in AUTH_ERROR_CODES:
            return AuthFailedError(detail, http_status=status, code=code)
        if status == 429 or code in RATE_LIMIT_CODES:
            return TransientTwilioError(detail, maybe_sent=False, http_status=status, code=code)
        if status >= 500:
            # Twilio's edge can answer 5xx after the message or call was created: in doubt, as a timeout is.
            return TransientTwilioError(f"{detail}: Twilio may have accepted it", maybe_sent=True,
                                        http_status=status, code=code)
        return PermanentTwilioError(detail, http_status=status, code=code)
    if isinstance(exc, requests.exceptions.RequestException):
        if not _may_have_been_sent(exc):
            return TransientTwilioError(f"cannot connect: {_short(exc)}", maybe_sent=False)
        if isinstance(exc, requests.exceptions.Timeout):
            timeout = get_settings().twilio_http_timeout
            return TransientTwilioError(f"no answer within {timeout:g} s: Twilio may have accepted it",
                                        maybe_sent=True)
        # Connection lost or reset, a broken answer: the request may have been written.
        return TransientTwilioError(f"connection lost after sending: {_short(exc)}", maybe_sent=True)
    if isinstance(exc, TwilioException):
        return TransientTwilioError(f"unreadable answer: {_short(exc)}", maybe_sent=True)
    return exc


def _may_have_been_sent(exc: BaseException) -> bool:
    """False only when requests/urllib3 say the connection itself was never made: a connect timeout, refused,
    DNS, the TLS handshake, or the proxy (then nothing was written, so a retry cannot duplicate). Anything after
    the connection was up (read timeout, reset, a broken answer) may have reached Twilio."""
    import requests
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProxyError, SSLError

    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError,
                        requests.exceptions.ProxyError)):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError):
        cause = exc.args[0] if exc.args else None
        reason = cause.reason if isinstance(cause, MaxRetryError) else cause
        return not isinstance(reason, (NewConnectionError, SSLError, ProxyError))
    return True


def _short(exc: BaseException) -> str:
    return _redact(f"{type(exc).__name__}: {exc}")[:300]


def _redact(text: str) -> str:
    from .redact import mask_numbers_in

    return mask_numbers_in(text)


# ---------------------------------------------------------------- reading back (reconciliation)


class TwilioReadError(TwilioSendError):
    """Twilio's Messages / Calls list could not be read (timeout, 5xx, 429, auth): nothing can be concluded."""


@dataclass(frozen=True)
class RecordedSend:
    """A message or call as Twilio's list shows it: what reconciliation compares with the send in doubt."""

    sid: str
    status: str
    to: str
    from_: str
    messaging_service_sid: str
    body: str
    num_media: int
    direction: str
    created: Any  # datetime (UTC) or None when Twilio gave none


@dataclass(frozen=True)
class ReadBack:
    """What a bounded read of Twilio's list found. ``complete`` is False when a bound (pages, time) stopped the read
    before it reached resources older than ``created_after``: absence then proves nothing."""

    items: tuple[RecordedSend, ...]
    complete: bool
    pages: int


def list_recent(kind: str, *, to: str, from_: str | None, created_after: Any, page_size: int = 50,
                max_pages: int = 4, budget_seconds: float = 15.0) -> ReadBack:
    """:func:`_list_recent`, timed as one ``messages.list`` / ``calls.list`` in ``switchboard.twilio.duration``."""
    from . import telemetry

    with telemetry.twilio_call("messages.list" if kind == "sms" else "calls.list") as call:
        readback = _list_recent(kind, to=to, from_=from_, created_after=created_after, page_size=page_size,
                                max_pages=max_pages, budget_seconds=budget_seconds)
        call.status_code = 200
    return readback


def _list_recent(kind: str, *, to: str, from_: str | None, created_after: Any, page_size: int,
                 max_pages: int, budget_seconds: float) -> ReadBack:
    """Twilio's ``Messages.json`` / ``Calls.json`` filtered on ``To`` (and ``From`` when known), newest first,
    until the resources are older than ``created_after``.

    No date filter is sent: Twilio's ``DateSent`` / ``StartTime`` filters skip a message still queued or a call not
    yet started, which is exactly the send in doubt. Paging stops at ``max_pages`` or after ``budget_seconds``.
    Raises :class:`TwilioReadError` when Twilio cannot be read.
    """
    import time

    deadline = time.monotonic() + budget_seconds
    filters: dict[str, Any] = {"to": to, "page_size": page_size}
    if from_:
        filters["from_"] = from_
    client = get_client()
    resource = client.messages if kind == "sms" else client.calls
    items: list[RecordedSend] = []
    try:
        page = resource.page(**filters)
        pages = 1
        while True:
            oldest_seen = False
            for record in page:
                item = recorded(kind, record)
                if item.created is not None and item.created < created_after:
                    oldest_seen = True
                    break
                items.append(item)
            next_url = page.next_page_url
            if oldest_seen or not next_url:
                return ReadBack(tuple(items), complete=True, pages=pages)
            if pages >= max_pages or time.monotonic() >= deadline:
                return ReadBack(tuple(items), complete=False, pages=pages)
            page = page.next_page()
            pages += 1
            if page is None:
                return ReadBack(tuple(items), complete=True, pages=pages)
    except TwilioSendError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified; anything unexpected is "unreadable" too
        classified = classify(exc)
        reason = classified.reason if isinstance(classified, TwilioSendError) else _short(exc)
        raise TwilioReadError(f"cannot read Twilio's {'Messages' if kind == 'sms' else 'Calls'} list: "
                              f"{reason}") from exc


def recorded(kind: str, record: Any) -> RecordedSend:
    """A Message / Call instance of the SDK as a :class:`RecordedSend`."""
    if kind == "sms":
        return RecordedSend(sid=record.sid or "", status=str(record.status or ""), to=record.to or "",
                            from_=record.from_ or "", messaging_service_sid=record.messaging_service_sid or "",
                            body=record.body or "", num_media=int(record.num_media or 0),
                            direction=str(record.direction or ""), created=record.date_created)
    return RecordedSend(sid=record.sid or "", status=str(record.status or ""), to=record.to or "",
                        from_=getattr(record, "_from", None) or "", messaging_service_sid="", body="", num_media=0,
                        direction=str(record.direction or ""), created=record.date_created)
