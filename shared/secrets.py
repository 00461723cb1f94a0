"""Twilio credentials, from the environment (local runs) behind one call.

``get_secret(name)`` is the only way the app reads a credential, so the Key Vault backend can sit behind it
without touching callers. Values are never logged, never put in exception messages.
"""

from __future__ import annotations

import os
import threading
import time

AUTH_TOKEN = "twilio-auth-token"
API_KEY_SECRET = "twilio-api-key-secret"

# Environment variable that holds each secret when no vault is configured.
ENV_NAMES = {AUTH_TOKEN: "TWILIO_AUTH_TOKEN", API_KEY_SECRET: "TWILIO_API_KEY_SECRET"}


class SecretUnavailableError(RuntimeError):
    """A secret could not be read; ``name`` is the secret, ``reason`` says why (never the value)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"secret {name} unavailable: {reason}")
        self.name = name
        self.reason = reason


_lock = threading.Lock()
_last_refresh: dict[str, float] = {}


def get_secret(name: str) -> str:
    """Return the secret's current value or raise :class:`SecretUnavailableError`."""
    env_name = ENV_NAMES.get(name, name.upper().replace("-", "_"))
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise SecretUnavailableError(name, f"setting {env_name} is not set and KEY_VAULT_URL is empty")
    return value


def refresh_secret(name: str, *, min_interval: float = 0.0) -> bool:
    """Drop the cached value so the next read fetches it again; at most once per ``min_interval`` seconds.

    Returns whether a refresh happened (False = rate-limited).
    """
    now = time.monotonic()
    with _lock:
        last = _last_refresh.get(name)
        if last is not None and now - last < min_interval:
            return False
        _last_refresh[name] = now
    return True


def reset_secrets() -> None:
    """Forget cached values and refresh history (tests)."""
    with _lock:
        _last_refresh.clear()
