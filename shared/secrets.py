"""Twilio credentials from Key Vault (managed identity) or, with no vault configured, the environment.

``get_secret(name)`` is the only way the app reads a credential. Values are never logged and never put in an
exception message or a response.

Why the app reads the vault itself: Key Vault references in app settings refresh only every 24 h and do not work
on Flex Consumption with a network-restricted vault, so a rotated token would need a restart.

- ``KEY_VAULT_URL`` set: ``SecretClient`` + ``DefaultAzureCredential`` (``managed_identity_client_id`` =
  ``AZURE_CLIENT_ID`` for a user-assigned identity), created once per process on first use. The SDKs are
  imported inside functions so that importing ``function_app`` stays light.
- ``KEY_VAULT_URL`` empty: the same secrets from the environment (``TWILIO_AUTH_TOKEN``, ...), for local runs.
- Vault values are cached for ``SECRET_CACHE_SECONDS``. One read per name at a time (single flight): concurrent
  misses wait for the same read. The client has a short timeout/retry budget (``CLIENT_OPTIONS``).
- Vault failing: the last value, even expired, is served (with a warning); with none,
  :class:`SecretUnavailableError`. After a failed read the vault is not asked again for
  ``RETRY_AFTER_FAILURE_SECONDS``, so a dead vault does not cost every request its timeout budget.
- Rotation: ``refresh_secret`` marks the cached value stale (kept as the fallback) so the next read goes to the
  vault; it is rate-limited per name by ``min_interval`` so forged webhooks cannot hammer the vault.
- Tests inject a credential and client options with :func:`set_credential_factory`, so no test ever lets
  ``DefaultAzureCredential`` talk to a managed-identity endpoint or Entra ID.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import get_settings
from .throttled_log import log_throttled

log = logging.getLogger("switchboard.secrets")

AUTH_TOKEN = "twilio-auth-token"
API_KEY_SECRET = "twilio-api-key-secret"
# Twilio signs with a SharedKey instead of the auth token when a Webhook Rule applies (then it sends
# X-Twilio-Webhooks-Signature-Settings); only needed by apps that configured one.
WEBHOOK_SHARED_KEY = "twilio-webhook-shared-key"

# Environment variable that holds each secret when no vault is configured.
ENV_NAMES = {AUTH_TOKEN: "TWILIO_AUTH_TOKEN", API_KEY_SECRET: "TWILIO_API_KEY_SECRET",
             WEBHOOK_SHARED_KEY: "TWILIO_WEBHOOK_SHARED_KEY"}

# A vault that is down or slow must not hold a webhook (Twilio waits 15 s) or a send for minutes: the SDK's
# defaults are 10 retries and 300 s socket timeouts. ``timeout`` bounds one read, retries included.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 2,
    "retry_backoff_factor": 0.25,
    "retry_backoff_max": 2,
    "connection_timeout": 3,
    "read_timeout": 3,
    "timeout": 6,
}
# After a failed vault read, answer from the fallback (or fail fast) for this long before asking again.
RETRY_AFTER_FAILURE_SECONDS = 5.0

# Monotonic clock; tests replace it to move time forward without sleeping.
_clock: Callable[[], float] = time.monotonic


class SecretUnavailableError(RuntimeError):
    """A secret could not be read; ``name`` is the secret, ``reason`` says why (never the value).

    ``missing`` means it is not configured at all (no such setting, or no such secret in the vault), as opposed
    to a vault that is unreachable now: a webhook signed with a key we do not have cannot be valid (403).
    """

    def __init__(self, name: str, reason: str, missing: bool = False) -> None:
        super().__init__(f"secret {name} unavailable: {reason}")
        self.name = name
        self.reason = reason
        self.missing = missing


@dataclass
class _Entry:
    value: str
    fetched_at: float
    generation: int


@dataclass
class _Flight:
    """One vault read in progress; threads missing the same name wait on it instead of reading again."""

    generation: int
    done: threading.Event = field(default_factory=threading.Event)
    value: str | None = None
    reason: str = ""
    missing: bool = False


_lock = threading.Lock()
_cache: dict[str, _Entry] = {}
_generation: dict[str, int] = {}
_flights: dict[str, _Flight] = {}
_failures: dict[str, tuple[float, str, bool]] = {}
_last_refresh: dict[str, float] = {}

_client_lock = threading.Lock()
_client: Any = None
_client_key: tuple[str, str] | None = None
_credential_factory: Callable[[], Any] | None = None
_client_overrides: dict[str, Any] = {}


# ---------------------------------------------------------------- public API


def get_secret(name: str) -> str:
    """Return the secret's current value or raise :class:`SecretUnavailableError`."""
    settings = get_settings()
    if not settings.key_vault_url:
        return _from_environment(name)
    return _from_vault(name, settings.key_vault_url, settings.azure_client_id, settings.secret_cache_seconds)


def refresh_secret(name: str, *, min_interval: float = 0.0) -> bool:
    """Drop the cached value so the next read fetches it again; at most once per ``min_interval`` seconds.

    The old value stays as the fallback for a vault that fails. Returns whether a refresh happened
    (False = rate-limited).
    """
    now = _clock()
    with _lock:
        last = _last_refresh.get(name)
        if last is not None and now - last < min_interval:
            return False
        _last_refresh[name] = now
        _generation[name] = _generation.get(name, 0) + 1
        _failures.pop(name, None)
    log.info("secret %s will be re-read on next use", name)
    return True


def reset_secrets() -> None:
    """Forget cached values, refresh history and the vault client (tests; the injected credential stays)."""
    global _client, _client_key
    with _lock:
        _cache.clear()
        _generation.clear()
        _flights.clear()
        _failures.clear()
        _last_refresh.clear()
    with _client_lock:
        client, _client, _client_key = _client, None, None
    if client is not None:
        client.close()


def secrets_readable() -> bool:
    """Whether the secrets the app needs can be read now (for ``/api/health``; never exposes a value)."""
    names = [AUTH_TOKEN] + ([API_KEY_SECRET] if get_settings().api_key_sid else [])
    try:
        for name in names:
            get_secret(name)
    except SecretUnavailableError:
        return False
    return True


def set_credential_factory(factory: Callable[[], Any] | None, **client_options: Any) -> None:
    """Use ``factory()`` instead of ``DefaultAzureCredential`` and add ``client_options`` to the SecretClient.

    For tests (a local fake vault: ``verify_challenge_resource=False``, ``connection_verify=<cert>``);
    ``set_credential_factory(None)`` restores the default. Drops the current client.
    """
    global _credential_factory, _client_overrides
    with _client_lock:
        _credential_factory = factory
        _client_overrides = dict(client_options) if factory is not None else {}
    reset_secrets()


# ---------------------------------------------------------------- environment (no vault)


def _from_environment(name: str) -> str:
    env_name = ENV_NAMES.get(name, name.upper().replace("-", "_"))
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise SecretUnavailableError(name, f"setting {env_name} is not set and KEY_VAULT_URL is empty", missing=True)
    return value


# ---------------------------------------------------------------- Key Vault, cached, single flight


def _from_vault(name: str, vault_url: str, client_id: str, ttl: float) -> str:
    while True:
        with _lock:
            now = _clock()
            entry = _cache.get(name)
            generation = _generation.get(name, 0)
            if entry is not None and entry.generation == generation and now - entry.fetched_at < ttl:
                return entry.value
            failure = _failures.get(name)
            if failure is not None and now - failure[0] < RETRY_AFTER_FAILURE_SECONDS:
                if entry is not None:
                    return entry.value  # the warning was logged when the read failed
                raise SecretUnavailableError(name, failure[1], failure[2])
            flight = _flights.get(name)
            leader = flight is None
            if leader:
                flight = _flights[name] = _Flight(generation)
        if leader:
            return _lead(name, flight, vault_url, client_id)
        flight.done.wait()  # the leader's read is bounded by the client's timeout budget
        if flight.generation != generation:
            continue  # that read started before a refresh: its value may be the rotated-out one
        if flight.value is not None:
            return flight.value
        raise SecretUnavailableError(name, flight.reason, flight.missing)


def _lead(name: str, flight: _Flight, vault_url: str, client_id: str) -> str:
    try:
        try:
            value = _read_vault(name, vault_url, client_id)
        except SecretUnavailableError as exc:
            reason = exc.reason
            with _lock:
                _failures[name] = (_clock(), reason, exc.missing)
                stale = _cache.get(name)
                age = _clock() - stale.fetched_at if stale else 0.0
            if stale is None:
                flight.reason, flight.missing = reason, exc.missing
                log_throttled(log, logging.ERROR, f"unavailable {name} {reason}",
                              "secret %s unavailable: %s", name, reason)
                raise SecretUnavailableError(name, reason, exc.missing) from None
            log_throttled(log, logging.WARNING, f"stale {name} {reason}",
                          "Key Vault read of secret %s failed (%s); using the cached value read %.0f s ago",
                          name, reason, age)
            flight.value = stale.value
            return stale.value
        with _lock:
            _cache[name] = _Entry(value, _clock(), flight.generation)
            _failures.pop(name, None)
        flight.value = value
        return value
    finally:
        if flight.value is None and not flight.reason:
            flight.reason = "the vault read failed unexpectedly"  # waiters must not hang on a bug
        with _lock:
            if _flights.get(name) is flight:
                del _flights[name]
        flight.done.set()


def _read_vault(name: str, vault_url: str, client_id: str) -> str:
    """One read through the SecretClient; every failure becomes :class:`SecretUnavailableError`."""
    try:
        secret = _vault_client(vault_url, client_id).get_secret(name)
    except Exception as exc:  # noqa: BLE001 - every SDK and credential failure maps to one error type
        from azure.core.exceptions import ResourceNotFoundError

        raise SecretUnavailableError(name, _describe(exc), isinstance(exc, ResourceNotFoundError)) from None
    if not secret.value:
        raise SecretUnavailableError(name, f"secret has no value in Key Vault {vault_url}", missing=True)
    log.info("read secret %s from Key Vault (version %s)", name, (secret.properties.version or "?"))
    return secret.value


def _describe(exc: Exception) -> str:
    """A reason for the log and the error: the failure's kind, status and Key Vault error code, no bodies."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    kind = type(exc).__name__
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        code = getattr(exc.error, "code", None) or ""
        if isinstance(exc, ResourceNotFoundError):
            what = "not found in Key Vault"
        elif isinstance(exc, ClientAuthenticationError):
            what = "Key Vault refused the identity (check the Key Vault Secrets User role)"
        else:
            what = "Key Vault error"
        return f"{what}: HTTP {exc.status_code}{' ' + code if code else ''}"
    message = " ".join(str(exc).split())[:200]
    return f"Key Vault unreachable or credential unavailable: {kind}: {message}"


def _vault_client(vault_url: str, client_id: str) -> Any:
    global _client, _client_key
    key = (vault_url, client_id)
    with _client_lock:
        if _client is None or _client_key != key:
            from azure.keyvault.secrets import SecretClient

            credential = _credential_factory() if _credential_factory is not None else _default_credential(client_id)
            old, _client = _client, SecretClient(vault_url, credential, **_with_transport(
                {**CLIENT_OPTIONS, **_client_overrides}))
            _client_key = key
            if old is not None:
                old.close()
        return _client


def _with_transport(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the connection ones moved into a transport that reads proxy/CA settings once."""
    from .transport import azure_transport

    connection = {k: options.pop(k) for k in ("connection_timeout", "read_timeout", "connection_verify")
                  if k in options}
    return {**options, "transport": azure_transport(**connection)}


def _default_credential(client_id: str) -> Any:
    from azure.identity import DefaultAzureCredential

    if client_id:
        log.info("Key Vault credential: DefaultAzureCredential, user-assigned identity %s", client_id)
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    log.info("Key Vault credential: DefaultAzureCredential (system-assigned or developer identity)")
    return DefaultAzureCredential()
