"""Sign requests exactly as Twilio does, with twilio's own RequestValidator (tests only)."""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

TEST_AUTH_TOKEN = "test-auth-token-0123456789abcdef"
TEST_SHARED_KEY = "test-webhook-shared-key-fedcba9876543210"
PUBLIC_BASE_URL = "https://switchboard.example.net"


def sign_form(url: str, params: dict, token: str = TEST_AUTH_TOKEN, algorithm: str = "HMAC_SHA1") -> str:
    return RequestValidator(token).compute_signature(url, params, algorithm)


def sign_json(url_without_hash: str, body: str, token: str = TEST_AUTH_TOKEN,
              algorithm: str = "HMAC_SHA1") -> tuple[str, str]:
    """Return (url with bodySHA256, signature) for a JSON body."""
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    sep = "&" if "?" in url_without_hash else "?"
    url = f"{url_without_hash}{sep}bodySHA256={digest}"
    return url, RequestValidator(token).compute_signature(url, {}, algorithm)


def form_body(params: dict) -> bytes:
    return urlencode(params, doseq=True).encode("utf-8")
