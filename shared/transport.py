"""HTTP sessions for every outgoing call (Twilio, storage, Key Vault), with proxy and CA settings read once.

Every client is an official SDK's (twilio's ``TwilioHttpClient``, azure-core's ``RequestsTransport``) on a
``requests.Session`` made here; the SDKs keep their own request building, signing and retry policies.

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
import os
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
