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
import re
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
from .throttled_log import log_throttled, reset_throttle

log = logging.getLogger("switchboard.webhooks")

# A failed signature refreshes the token at most this often, so forged floods cannot hammer the vault.
SIGNATURE_REFRESH_SECONDS = 60.0
MAX_BODY_BYTES = 256 * 1024
MAX_FIELDS = 1000
# What a signature of each algorithm can look like (base64 of a 20- or 32-byte digest); anything else is forged.
_SIGNATURE_SHAPES = {"HMAC_SHA1": re.compile(r"[A-Za-z0-9+/]{27}="), "HMAC_SHA256": re.compile(r"[A-Za-z0-9+/]{43}=")}
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class WebhookRejected(Exception):
    """A webhook request the app will not serve; ``status`` is the HTTP status to answer with."""

    status = 400
    code = "rejected"  # the reason in metrics (switchboard.webhook.rejections): a fixed identifier, never text

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedRequestError(WebhookRejected):
    """The body or a required parameter is missing or unreadable (400)."""

    status = 400
    code = "malformed"


class SignatureInvalidError(WebhookRejected):
    """Missing, forged or tampered ``X-Twilio-Signature`` (403)."""

    status = 403
    code = "bad_signature"


class NotConfiguredError(WebhookRejected):
    """The app cannot check signatures yet: token or public URL unavailable (503)."""

    status = 503
    code = "not_configured"


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
        return _parse_form(self.query, "query string")


def forget_reported() -> None:
    """Log configuration problems again (tests reset the app between cases)."""
    reset_throttle()


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


def _parse_form(text: str, what: str) -> Params:
    """``a=1&b=2`` → Params; bounded (field count) and free of text a UTF-8 encoder would refuse."""
    if _SURROGATE.search(text):
        raise MalformedRequestError(f"{what} holds a lone surrogate, which is not text")
    try:
        return Params(parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS))
    except ValueError as exc:
        raise MalformedRequestError(f"{what} unreadable: {exc}") from None


def _content_type(req: WebhookRequest) -> str:
    content_type = req.header("Content-Type").split(";")[0].strip().lower()
    if content_type not in ("", "application/x-www-form-urlencoded", "application/json"):
        raise MalformedRequestError(f"unsupported Content-Type {content_type!r}: send form or JSON")
    return content_type


def _json_params(text: str) -> Params:
    """A signed JSON body's top-level fields as parameters (non-string values as their JSON text)."""
    try:
        document = json.loads(text) if text else {}
        if not isinstance(document, dict):
            raise MalformedRequestError("JSON body must be an object")
        params = Params({k: [v if isinstance(v, str) else json.dumps(v)] for k, v in document.items()})
    except RecursionError:
        raise MalformedRequestError("JSON body is nested too deeply") from None
    except ValueError as exc:
        raise MalformedRequestError(f"body is not valid JSON ({exc})") from None
    if any(_SURROGATE.search(name) or any(_SURROGATE.search(v) for v in values) for name, values in params.items()):
        raise MalformedRequestError("JSON body holds a lone surrogate (\\ud800-\\udfff), which is not text")
    return params


def parse_body(req: WebhookRequest) -> tuple[Params, str | None]:
    """Parse the request's parameters; returns them and, for JSON bodies, the raw text that was signed.

    Only for requests whose signature has been checked (JSON) or bounded work (forms): see :func:`verify`.
    """
    if req.method.upper() == "GET":
        return _parse_form(req.query, "query string"), None
    content_type = _content_type(req)
    text = _body_text(req)
    if content_type == "application/json":
        return _json_params(text), text
    return _parse_form(text, "form body"), None


def _algorithm(settings_header: str) -> str:
    """The HMAC named by ``X-Twilio-Webhooks-Signature-Settings`` (SHA-1 without it); anything else is forged."""
    algorithm = get_signature_algorithm(settings_header)
    if algorithm not in _SIGNATURE_SHAPES:
        raise SignatureInvalidError("unsupported signature algorithm in " + SIGNATURE_SETTINGS_HEADER)
    return algorithm


def _body_hash_in(query: str) -> str:
    """The one ``bodySHA256`` a signed JSON request carries in its URL (64 hex digits), or a 403."""
    values = Params(parse_qs(query, keep_blank_values=True, max_num_fields=MAX_FIELDS)).getlist("bodySHA256")
    if len(values) != 1 or not _SHA256_HEX.fullmatch(values[0]):
        raise SignatureInvalidError("JSON body without exactly one bodySHA256 (64 hex digits) in the URL")
    return values[0]


def _signature_ok(token: str, url: str, signed: Params | str, signature: str, algorithm: str) -> bool:
    return RequestValidator(token).validate(url, signed, signature, algorithm)


def _signing_key(secret_name: str) -> str:
    """The key the request claims to be signed with; a key we do not have means the signature cannot be valid."""
    try:
        return secrets.get_secret(secret_name)
    except secrets.SecretUnavailableError as exc:
        if exc.missing and secret_name == secrets.WEBHOOK_SHARED_KEY:
            log_throttled(log, logging.WARNING, "no shared key",
                          "rejected webhooks carrying %s: no SharedKey is configured (%s)",
                          SIGNATURE_SETTINGS_HEADER, exc.reason)
            raise SignatureInvalidError("signed with a SharedKey this app does not have") from None
        log_throttled(log, logging.ERROR, f"unavailable {exc}", "cannot check webhook signatures: %s", exc)
        raise NotConfiguredError("webhook signing secret unavailable") from None


def verify(req: WebhookRequest) -> Params:
    """Authenticate a Twilio webhook and return its parameters, or raise :class:`WebhookRejected`.

    Order matters: everything a forger controls is refused with bounded work (header shape, size, a
    bounded form parse) before the HMAC is checked, and a JSON body is parsed only once its hash and the
    signature match, so no unsigned input reaches a parser that could recurse or blow up.
    """
    try:
        url = public_url_for(req.path, req.query)
    except MissingSettingError as exc:  # config logs a missing setting once
        raise NotConfiguredError(str(exc)) from None
    if _SURROGATE.search(url):
        raise MalformedRequestError("query string holds a lone surrogate, which is not text")
    signature = req.header(SIGNATURE_HEADER)
    if not signature:
        raise SignatureInvalidError(f"missing {SIGNATURE_HEADER} header")
    settings_header = req.header(SIGNATURE_SETTINGS_HEADER)
    algorithm = _algorithm(settings_header)
    if not _SIGNATURE_SHAPES[algorithm].fullmatch(signature):
        raise SignatureInvalidError(f"{SIGNATURE_HEADER} is not a base64 {algorithm} digest")
    is_get = req.method.upper() == "GET"
    raw_json: str | None = None
    if not is_get and _content_type(req) == "application/json":
        _body_hash_in(req.query)
        raw_json = _body_text(req)
        params = Params()
    else:
        params, _ = parse_body(req)
    # For GET the parameters are part of the signed URL; for JSON the body hash is (bodySHA256).
    signed: Params | str = raw_json if raw_json is not None else (Params() if is_get else params)
    # Twilio signs with the auth token, or with a Webhook Rule's SharedKey when it sends the settings header.
    secret_name = secrets.WEBHOOK_SHARED_KEY if settings_header else secrets.AUTH_TOKEN
    key = _signing_key(secret_name)
    if not _signature_ok(key, url, signed, signature, algorithm):
        # The key may have been rotated: re-read it once (rate-limited) and check again.
        fresh = key
        if secrets.refresh_secret(secret_name, min_interval=SIGNATURE_REFRESH_SECONDS):
            try:
                fresh = secrets.get_secret(secret_name)
            except secrets.SecretUnavailableError:
                fresh = key
        if fresh == key or not _signature_ok(fresh, url, signed, signature, algorithm):
            log_throttled(log, logging.WARNING, f"bad signature {req.path}",
                          "rejected webhook %s %s: signature does not match", req.method, req.path)
            raise SignatureInvalidError("signature does not match")
    return _json_params(raw_json) if raw_json is not None else params
