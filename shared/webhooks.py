"""Twilio webhook requests: parse the body, check the signature against the public URL.

Why not ``req.url``: inside Azure the worker sees an internal host, so the URL Twilio signed is rebuilt from
``PUBLIC_BASE_URL`` + the path + the query string exactly as received (it may hold ``code=``).
twilio's ``RequestValidator`` does the crypto (HMAC-SHA1, HMAC-SHA256, ``bodySHA256`` for JSON bodies). The key is
the auth token, or, when Twilio sends ``X-Twilio-Webhooks-Signature-Settings`` (a Webhook Rule applies), the
SharedKey secret with the algorithm that header names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping
from urllib.parse import parse_qs

from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from . import secrets
from .config import MissingSettingError, get_settings

log = logging.getLogger("switchboard.webhooks")

# A failed signature refreshes the token at most this often, so forged floods cannot hammer the vault.
SIGNATURE_REFRESH_SECONDS = 60.0
MAX_BODY_BYTES = 256 * 1024


class WebhookRejected(Exception):
    """A webhook request the app will not serve; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedRequestError(WebhookRejected):
    """The body or a required parameter is missing or unreadable (400)."""

    status = 400


class SignatureInvalidError(WebhookRejected):
    """Missing, forged or tampered ``X-Twilio-Signature`` (403)."""

    status = 403


class NotConfiguredError(WebhookRejected):
    """The app cannot check signatures yet: token or public URL unavailable (503)."""

    status = 503


class Params(dict):
    """Request parameters as ``name -> [values]``, in the shape ``RequestValidator`` reads (``getlist``)."""

    def getlist(self, name: str) -> list[str]:
        return list(self.get(name, ()))

    def first(self, name: str, default: str = "") -> str:
        values = self.get(name)
        return values[0] if values else default

    def require(self, name: str) -> str:
        value = self.first(name)
        if not value:
            raise MalformedRequestError(f"missing parameter {name}")
        return value

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> "Params":
        params = cls()
        for key, value in pairs:
            params.setdefault(key, []).append(value)
        return params


@dataclass(frozen=True)
class WebhookRequest:
    """An HTTP request as the worker received it, free of ``azure.functions`` types."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return ""

    @property
    def query_params(self) -> Params:
        return Params(parse_qs(self.query, keep_blank_values=True))


_reported: set[str] = set()


def _log_unavailable_once(reason: str) -> None:
    """One error line per distinct reason, not one per request (a misconfigured app gets every webhook)."""
    if reason in _reported:
        log.debug("cannot check webhook signatures: %s", reason)
        return
    _reported.add(reason)
    log.error("cannot check webhook signatures: %s", reason)


def forget_reported() -> None:
    """Log configuration problems again (tests reset the app between cases)."""
    _reported.clear()


def public_url_for(path: str, query: str = "", base_url: str | None = None) -> str:
    """The URL Twilio called: ``PUBLIC_BASE_URL`` + path + the raw query string."""
    if base_url is None:
        base_url = get_settings().require("PUBLIC_BASE_URL")
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{query}" if query else url


def _body_text(req: WebhookRequest) -> str:
    if len(req.body) > MAX_BODY_BYTES:
        raise MalformedRequestError(f"body of {len(req.body)} bytes is over the {MAX_BODY_BYTES}-byte limit")
    try:
        return req.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequestError(f"body is not UTF-8 (byte {exc.start})") from None


def parse_body(req: WebhookRequest) -> tuple[Params, str | None]:
    """Parse the request's parameters; returns them and, for JSON bodies, the raw text that was signed."""
    if req.method.upper() == "GET":
        return req.query_params, None
    text = _body_text(req)
    content_type = req.header("Content-Type").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            document = json.loads(text) if text else {}
        except ValueError as exc:
            raise MalformedRequestError(f"body is not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(document, dict):
            raise MalformedRequestError("JSON body must be an object")
        return Params({k: [v if isinstance(v, str) else json.dumps(v)] for k, v in document.items()}), text
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise MalformedRequestError(f"unsupported Content-Type {content_type!r}: send form or JSON")
    try:
        pairs = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except ValueError as exc:
        raise MalformedRequestError(f"form body unreadable: {exc}") from None
    return Params(pairs), None


def _signature_ok(token: str, url: str, signed: Params | str, signature: str, algorithm: str) -> bool:
    return RequestValidator(token).validate(url, signed, signature, algorithm)


def verify(req: WebhookRequest) -> Params:
    """Parse and authenticate a Twilio webhook; return its parameters or raise :class:`WebhookRejected`."""
    try:
        url = public_url_for(req.path, req.query)
    except MissingSettingError as exc:
        raise NotConfiguredError(str(exc)) from None
    params, raw_json = parse_body(req)
    signature = req.header(SIGNATURE_HEADER)
    if not signature:
        raise SignatureInvalidError(f"missing {SIGNATURE_HEADER} header")
    settings_header = req.header(SIGNATURE_SETTINGS_HEADER)
    algorithm = get_signature_algorithm(settings_header)
    # Twilio signs with the auth token, or with a Webhook Rule's SharedKey when it sends the settings header.
    secret_name = secrets.WEBHOOK_SHARED_KEY if settings_header else secrets.AUTH_TOKEN
    # For GET the parameters are part of the signed URL; for JSON the body hash is (bodySHA256).
    signed: Params | str = raw_json if raw_json is not None else (Params() if req.method.upper() == "GET" else params)
    if raw_json is not None and "bodySHA256=" not in req.query:
        raise SignatureInvalidError("JSON body without bodySHA256 in the URL")
    try:
        key = secrets.get_secret(secret_name)
    except secrets.SecretUnavailableError as exc:
        _log_unavailable_once(str(exc))
        raise NotConfiguredError("webhook signing secret unavailable") from None
    if _signature_ok(key, url, signed, signature, algorithm):
        return params
    # The key may have been rotated: re-read it once (rate-limited) and check again.
    if secrets.refresh_secret(secret_name, min_interval=SIGNATURE_REFRESH_SECONDS):
        try:
            fresh = secrets.get_secret(secret_name)
        except secrets.SecretUnavailableError:
            fresh = key
        if fresh != key and _signature_ok(fresh, url, signed, signature, algorithm):
            return params
    log.warning("rejected webhook %s %s: signature does not match", req.method, req.path)
    raise SignatureInvalidError("signature does not match")
