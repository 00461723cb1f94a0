"""HTTP sessions for every outgoing call (Twilio, storage, Key Vault), with proxy and CA settings read once.

Why: ``requests`` with ``trust_env`` on re-reads the proxy environment (``HTTPS_PROXY``, ``NO_PROXY``…) and
``REQUESTS_CA_BUNDLE`` on every request; on an Azure worker, with its many variables, that was a sixth of the CPU
a send costs. Here the environment is read once per process (:func:`http_environment`), the proxy decision is
made once per scheme and host, and sessions are made with ``trust_env=False`` so requests does not read it again.
The same settings keep working: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` (any case), ``NO_PROXY``
(host, domain suffix, ``*``), and ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` for TLS verification.

Connection pools hold as many connections as the worker has threads (``PYTHON_THREADPOOL_THREAD_COUNT``): with
the default pool of 10, 16 threads keep opening and discarding connections.
"""

from __future__ import annotations

import functools
import http.client
import os
import select
import ssl
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter


@dataclass(frozen=True)
class HttpEnvironment:
    """Proxy and CA settings as read from the environment once: ``proxies`` by scheme, ``no_proxy``, CA bundle."""

    proxies: dict[str, str]
    no_proxy: str
    ca_bundle: str

    def proxies_for(self, url: str) -> dict[str, str]:
        """The proxy map requests should use for ``url`` ({} = connect directly), decided once per host."""
        key = _scheme_host(url)
        found = _decided.get(key)
        if found is None:
            found = _decided.setdefault(key, self._decide(*key))
        return found

    def _decide(self, scheme: str, netloc: str) -> dict[str, str]:
        proxy = self.proxies.get(scheme) or self.proxies.get("all")
        if not proxy:
            return {}
        if self.no_proxy and urllib.request.proxy_bypass_environment(netloc, {"no": self.no_proxy}):
            return {}
        return {scheme: proxy}


_decided: dict[tuple[str, str], dict[str, str]] = {}


@functools.lru_cache(maxsize=1)
def http_environment() -> HttpEnvironment:
    """The process's proxy and CA settings (read on first use; settings do not change while a worker runs)."""
    found = urllib.request.getproxies_environment()  # lower case wins, as in requests and curl
    proxies = {scheme: found[scheme] for scheme in ("http", "https", "all") if found.get(scheme)}
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or ""
    return HttpEnvironment(proxies, found.get("no", ""), ca_bundle)


def reset_http_environment() -> None:
    """Read the environment again on next use (tests change it between cases)."""
    http_environment.cache_clear()
    _decided.clear()


def _scheme_host(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class ResolvedEnvAdapter(HTTPAdapter):
    """An adapter that applies the once-read proxy and CA settings to requests that do not name their own."""

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: bool | str = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        env = http_environment()
        if not proxies:
            proxies = env.proxies_for(request.url or "")
        if verify is True and env.ca_bundle:
            verify = env.ca_bundle
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


# The worker accepts any thread count of at least 1 (no upper bound); connections kept idle per origin stop here
# (urllib3 pre-fills a pool's queue with one slot per connection, so a count of 10**9 would exhaust memory).
MAX_POOLED_CONNECTIONS = 1024


def pool_size() -> int:
    """Connections kept per host: one per worker thread (``PYTHON_THREADPOOL_THREAD_COUNT`` as the worker reads
    it: its default, min(32, cores + 4), when unset or invalid), at most ``MAX_POOLED_CONNECTIONS``."""
    from .config import get_settings

    return min(get_settings().thread_count, MAX_POOLED_CONNECTIONS)


def new_session(max_retries: Any = 0) -> requests.Session:
    """A ``requests.Session`` that never reads the environment itself and pools one connection per thread."""
    session = requests.Session()
    session.trust_env = False
    adapter = ResolvedEnvAdapter(pool_connections=4, pool_maxsize=pool_size(), max_retries=max_retries)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def azure_transport(**options: Any) -> Any:
    """An azure-core ``RequestsTransport`` on :func:`new_session` (the client closes it with itself).

    ``options`` are azure-core connection options (``connection_timeout``, ``read_timeout``,
    ``connection_verify``); retries stay azure-core's job (its RetryPolicy), so the adapter retries nothing.
    """
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    session = new_session(max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    return RequestsTransport(session=session, session_owner=True, **options)





class TransportError(OSError):
    """An HTTP exchange with no complete answer. ``sent`` says whether the request may have been written:
    False only when the connection itself could not be made (refused, DNS, connect timeout, TLS handshake, proxy
    unreachable), so a retry cannot duplicate anything."""

    def __init__(self, message: str, *, sent: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.timed_out = timed_out


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer: status, reason, headers (case-insensitive ``get`` / ``[]``), body."""

    status: int
    reason: str
    headers: Any
    data: bytes


class OriginPool:
    """Pooled keep-alive connections to one origin (``scheme://host:port``) for the app's own lean clients
    (``shared.point_table``, ``shared.twilio_http``), which make every send's five HTTP calls.

    Why not urllib3 or requests: per call they cost 2-3x the CPU of the standard library's ``http.client`` (URL
    re-parsing, header re-validation and copying, pool bookkeeping), which was a fifth of a send's CPU. This pool
    does only what those calls need: TLS verified against ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` or certifi's
    bundle (as requests does), one idle connection kept per worker thread, a connection the server closed is never
    reused, a connect and a read timeout, no retries and no redirects (whether a request may be sent again is the
    caller's decision: :class:`TransportError` says whether it may have been written). An origin the environment
    sends through a proxy goes through urllib3's ``ProxyManager`` instead (CONNECT tunnels, proxy credentials)."""

    def __init__(self, url: str, *, timeout_seconds: float, max_connections: int | None = None) -> None:
        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.timeout_seconds = timeout_seconds
        self._https = parts.scheme.lower() == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._max_idle = max_connections or pool_size()
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        env = http_environment()
        self._ca_bundle = env.ca_bundle or (_certifi_bundle() if self._https else "")
        self._tls: Any = None
        proxy = next(iter(env.proxies_for(url).values()), "")
        self._proxied = _ProxiedOrigin(self.origin, proxy, self._ca_bundle, self._max_idle) if proxy else None

    def request(self, method: str, target: str, *, body: bytes | None = None, headers: dict[str, str],
                timeout_seconds: float | None = None) -> Answer:
        """Send ``method`` ``target`` (path and query) and read the whole answer. Raises :class:`TransportError`."""
        timeout = timeout_seconds or self.timeout_seconds
        if self._proxied is not None:
            return self._proxied.request(method, target, body=body, headers=headers, timeout_seconds=timeout)
        conn = self._connection(timeout)
        try:
            conn.sock.settimeout(timeout)
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            timed_out = isinstance(exc, TimeoutError)
            raise TransportError(f"{type(exc).__name__} after the request: {exc}", sent=True,
                                 timed_out=timed_out) from exc
        if response.will_close:
            conn.close()
        else:
            self._release(conn)
        return Answer(response.status, response.reason or "", response.headers, data)

    def _connection(self, timeout: float) -> Any:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _still_open(conn):
                    return conn
                conn.close()
        try:
            if self._https:
                if self._tls is None:
                    self._tls = ssl.create_default_context(cafile=self._ca_bundle)
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._tls)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            conn.connect()
        except OSError as exc:  # refused, DNS, connect timeout, TLS handshake: nothing was written
            raise TransportError(f"cannot connect to {self.origin}: {type(exc).__name__}: {exc}", sent=False,
                                 timed_out=isinstance(exc, TimeoutError)) from exc
        return conn

    def _release(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._proxied is not None:
            self._proxied.clear()


def _still_open(conn: Any) -> bool:
    """An idle keep-alive connection is reusable only while its socket has nothing to read: readable means the
    server closed it (or broke the protocol), and a request written there would fail after being sent."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class _ProxiedOrigin:
    """The proxied path of :class:`OriginPool`: urllib3's ``ProxyManager``, its errors as :class:`TransportError`."""

    def __init__(self, origin: str, proxy: str, ca_bundle: str, max_connections: int) -> None:
        import urllib3

        self.origin = origin
        options: dict[str, Any] = {"maxsize": max_connections, "retries": False}
        if ca_bundle:
            options.update(cert_reqs="CERT_REQUIRED", ca_certs=ca_bundle)
        self._manager = urllib3.ProxyManager(proxy, num_pools=2, **options)

    def request(self, method: str, target: str, *, body: bytes | None, headers: dict[str, str],
                timeout_seconds: float) -> Answer:
        import urllib3
        from urllib3.exceptions import ConnectTimeoutError, HTTPError, ProxyError, ReadTimeoutError

        try:
            response = self._manager.urlopen(method, self.origin + target, body=body, headers=headers,
                                             retries=False, redirect=False,
                                             timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds))
        except (ConnectTimeoutError, ProxyError) as exc:  # NewConnectionError is a ConnectTimeoutError
            raise TransportError(f"cannot connect through the proxy to {self.origin}: {type(exc).__name__}",
                                 sent=False, timed_out=type(exc) is ConnectTimeoutError) from exc
        except HTTPError as exc:
            raise TransportError(f"{type(exc).__name__} after the request: {exc}", sent=True,
                                 timed_out=isinstance(exc, ReadTimeoutError)) from exc
        return Answer(response.status, response.reason or "", response.headers, response.data or b"")

    def clear(self) -> None:
        self._manager.clear()


def _certifi_bundle() -> str:
    import certifi

    return certifi.where()
