"""Twilio's HTTP client contract (``twilio.http.HttpClient``) on ``shared.transport.OriginPool``: what ``twilio.rest``
sends through.

Why not the SDK's ``TwilioHttpClient``: it builds each request with requests (session merging, hooks, cookie jar,
adapters) and formats ~10 log lines per request even when its logger is off; with 16 sends in flight that was a
quarter of a send's CPU (bench.outbound). This client hands the same method, URL, query, form body, headers and
basic auth to a keep-alive connection and gives the SDK back the same ``twilio.http.response.Response``; the SDK
still builds every request and reads every answer.

Kept on purpose:
- Every request has the timeout (connect and read, each), and nothing is retried or redirected here: a retried POST
  could send twice (``shared.twilio_api``).
- Errors are ``shared.transport.TransportError``, whose ``sent`` lets ``shared.twilio_api.classify`` tell "never
  reached Twilio" (connection not made) from "may have been sent" (read timeout, connection lost after the request
  was written).
- Proxy and CA settings from ``shared.transport`` (read once per process), one pool per Twilio host.
- Form bodies as requests encodes them: lists become repeated keys, ``None`` values are left out.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit

from twilio.http import HttpClient
from twilio.http.response import Response

FORM = "application/x-www-form-urlencoded"
_JSON_TYPES = ("application/json", "application/scim+json")


def _pairs(values: Mapping[str, Any]) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        if value is None:
            continue
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if item is not None:
                pairs.append((key, item))
    return pairs


class PooledTwilioHttpClient(HttpClient):
    """``twilio.rest.Client(http_client=PooledTwilioHttpClient(timeout=…))``."""

    def __init__(self, *, timeout: float, logger: logging.Logger) -> None:
        super().__init__(logger, False, timeout)
        self._pools: dict[str, Any] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, params: Mapping[str, Any] | None = None,
                data: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        if timeout is None:
            timeout = self.timeout
        if timeout is None or timeout <= 0:
            raise ValueError(f"a Twilio request needs a positive timeout, not {timeout!r}")
        method = method.upper()
        if params:
            query = urlencode(_pairs(params))
            url = f"{url}{'&' if '?' in url else '?'}{query}" if query else url
        sent = dict(headers or {})
        body: bytes | None = None
        if data is not None and method not in ("GET", "HEAD", "DELETE"):
            if sent.get("Content-Type") in _JSON_TYPES:
                body = json.dumps(data).encode("utf-8")
            else:
                body = urlencode(_pairs(data)).encode("ascii")
                sent["Content-Type"] = FORM
        if auth:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("%s %s", method, url.split("?", 1)[0])
        pool = self._pool(url)
        answer = pool.request(method, url[len(pool.origin):] or "/", body=body, headers=sent, timeout_seconds=timeout)
        response = Response(int(answer.status), (answer.data or b"").decode("utf-8", "replace"), answer.headers)
        self._test_only_last_response = response
        return response

    def _pool(self, url: str) -> Any:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            from .transport import OriginPool

            with self._lock:
                pool = self._pools.get(origin) or self._pools.setdefault(
                    origin, OriginPool(url, timeout_seconds=float(self.timeout or 10)))
        return pool

    def close(self) -> None:
        """Close every pooled connection (tests point the app at a new fake)."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.clear()
