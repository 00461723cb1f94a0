"""shared.secrets without a network: environment mode, the cache, single flight, stale fallback, refresh limits,
and how the vault client and managed-identity credential are built (SDK classes replaced by recorders).

The same behaviour through the real SecretClient and an HTTPS fake vault is in tests/integration/test_keyvault*.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from shared import secrets
from tests.conftest import ROOT
from tests.peers.ports import wait_until
from tests.secret_scan import register_secret
from tests.twilio_signing import TEST_AUTH_TOKEN

VAULT = "https://switchboard-kv.vault.azure.net"
VALUE_1 = register_secret("unit-vault-value-one-91c3")
VALUE_2 = register_secret("unit-vault-value-two-4e7a")


class StubVault:
    """Stands in for ``_read_vault``: counts reads, can fail, can block until released."""

    def __init__(self, *values: str) -> None:
        self.values = list(values) or [VALUE_1]
        self.calls = 0
        self.failing: str | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, name: str, vault_url: str, client_id: str) -> str:
        with self._lock:
            self.calls += 1
            index = min(self.calls, len(self.values)) - 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test never released the stub vault"
        if self.failing:
            raise secrets.SecretUnavailableError(name, self.failing)
        return self.values[index]


@pytest.fixture
def stub_vault(monkeypatch, set_env, secret_clock) -> StubVault:
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    set_env(KEY_VAULT_URL=VAULT, SECRET_CACHE_SECONDS="300")
    stub = StubVault(VALUE_1, VALUE_2)
    monkeypatch.setattr(secrets, "_read_vault", stub)
    return stub


# ---------------------------------------------------------------- environment mode (no KEY_VAULT_URL)


def test_without_a_vault_the_token_comes_from_the_environment():
    assert secrets.get_secret(secrets.AUTH_TOKEN) == TEST_AUTH_TOKEN


def test_without_a_vault_a_missing_variable_is_unavailable_naming_the_setting(monkeypatch, set_env):
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    set_env()
    with pytest.raises(secrets.SecretUnavailableError) as caught:
        secrets.get_secret(secrets.AUTH_TOKEN)
    assert caught.value.name == secrets.AUTH_TOKEN
    assert "TWILIO_AUTH_TOKEN" in caught.value.reason and "KEY_VAULT_URL" in caught.value.reason


def test_without_a_vault_a_changed_variable_is_seen_at_once(monkeypatch):
    new = register_secret("rotated-env-token-55aa77")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", new)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == new


def test_env_names_map_each_secret_to_its_variable():
    assert secrets.ENV_NAMES == {"twilio-auth-token": "TWILIO_AUTH_TOKEN",
                                 "twilio-api-key-secret": "TWILIO_API_KEY_SECRET",
                                 "twilio-webhook-shared-key": "TWILIO_WEBHOOK_SHARED_KEY"}


# ---------------------------------------------------------------- refresh rate limit


def test_refresh_is_rate_limited_per_secret(secret_clock):
    assert secrets.refresh_secret(secrets.AUTH_TOKEN, min_interval=60) is True
    assert secrets.refresh_secret(secrets.AUTH_TOKEN, min_interval=60) is False
    assert secrets.refresh_secret(secrets.API_KEY_SECRET, min_interval=60) is True
    secret_clock.advance(59.9)
    assert secrets.refresh_secret(secrets.AUTH_TOKEN, min_interval=60) is False
    secret_clock.advance(0.2)
    assert secrets.refresh_secret(secrets.AUTH_TOKEN, min_interval=60) is True


def test_refresh_without_min_interval_always_refreshes():
    assert all(secrets.refresh_secret(secrets.AUTH_TOKEN) for _ in range(3))


# ---------------------------------------------------------------- cache


def test_vault_value_is_cached_for_the_ttl_then_read_again(stub_vault, secret_clock):
    assert [secrets.get_secret(secrets.AUTH_TOKEN) for _ in range(100)] == [VALUE_1] * 100
    assert stub_vault.calls == 1
    secret_clock.advance(299)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VALUE_1 and stub_vault.calls == 1
    secret_clock.advance(2)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VALUE_2 and stub_vault.calls == 2


def test_cache_ttl_follows_secret_cache_seconds(stub_vault, secret_clock, set_env):
    set_env(SECRET_CACHE_SECONDS="10")
    secrets.get_secret(secrets.AUTH_TOKEN)
    secret_clock.advance(11)
    secrets.get_secret(secrets.AUTH_TOKEN)
    assert stub_vault.calls == 2


def test_each_secret_is_cached_separately(stub_vault):
    secrets.get_secret(secrets.AUTH_TOKEN)
    secrets.get_secret(secrets.API_KEY_SECRET)
    secrets.get_secret(secrets.AUTH_TOKEN)
    assert stub_vault.calls == 2


def test_refresh_makes_the_next_read_go_to_the_vault(stub_vault):
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VALUE_1
    assert secrets.refresh_secret(secrets.AUTH_TOKEN)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VALUE_2
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VALUE_2
    assert stub_vault.calls == 2


def test_reset_forgets_cached_values(stub_vault):
    secrets.get_secret(secrets.AUTH_TOKEN)
    secrets.reset_secrets()
    secrets.get_secret(secrets.AUTH_TOKEN)
    assert stub_vault.calls == 2


# ---------------------------------------------------------------- vault failures


def test_vault_failure_with_nothing_cached_is_unavailable_with_the_reason(stub_vault):
    stub_vault.failing = "Key Vault error: HTTP 503 ServiceUnavailable"
    with pytest.raises(secrets.SecretUnavailableError) as caught:
        secrets.get_secret(secrets.AUTH_TOKEN)
    assert caught.value.reason == "Key Vault error: HTTP 503 ServiceUnavailable"
    assert str(caught.value) == f"secret {secrets.AUTH_TOKEN} unavailable: Key Vault error: HTTP 503 ServiceUnavailable"


def test_vault_failure_serves_the_expired_value_and_warns_without_it(stub_vault, secret_clock, caplog):
    caplog.set_level(logging.DEBUG, logger="switchboard.secrets")
    secrets.get_secret(secrets.AUTH_TOKEN)
    secret_clock.advance(3600)
    stub_vault.failing = "Key Vault unreachable or credential unavailable: ServiceRequestError: refused"
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VALUE_1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "twilio-auth-token" in warnings[0].getMessage() and "ServiceRequestError" in warnings[0].getMessage()
    assert all(VALUE_1 not in r.getMessage() for r in caplog.records)


def test_after_a_failure_the_vault_is_not_asked_again_until_the_retry_delay(stub_vault, secret_clock):
    stub_vault.failing = "down"
    for _ in range(50):
        with pytest.raises(secrets.SecretUnavailableError):
            secrets.get_secret(secrets.AUTH_TOKEN)
    assert stub_vault.calls == 1
    secret_clock.advance(secrets.RETRY_AFTER_FAILURE_SECONDS + 0.1)
    stub_vault.failing = None
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VALUE_2
    assert stub_vault.calls == 2


def test_refresh_lifts_the_retry_delay_after_a_failure(stub_vault):
    stub_vault.failing = "down"
    with pytest.raises(secrets.SecretUnavailableError):
        secrets.get_secret(secrets.AUTH_TOKEN)
    stub_vault.failing = None
    assert secrets.refresh_secret(secrets.AUTH_TOKEN)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VALUE_2


def test_unexpected_client_errors_become_unavailable_without_details_of_the_body(monkeypatch, set_env):
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    set_env(KEY_VAULT_URL=VAULT)
    assert secrets._describe(ServiceRequestError("connection refused")).startswith(
        "Key Vault unreachable or credential unavailable: ServiceRequestError: connection refused")
    not_found = ResourceNotFoundError(message="gone")
    not_found.status_code = 404
    assert secrets._describe(not_found) == "not found in Key Vault: HTTP 404"
    busy = HttpResponseError(message="busy")
    busy.status_code = 503
    assert secrets._describe(busy) == "Key Vault error: HTTP 503"


# ---------------------------------------------------------------- single flight


def test_concurrent_misses_share_one_vault_read(stub_vault):
    stub_vault.gate = threading.Event()
    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(secrets.get_secret, secrets.AUTH_TOKEN) for _ in range(64)]
        wait_until(stub_vault.entered.is_set, 5, "the first vault read")
        stub_vault.gate.set()
        results = [f.result(timeout=10) for f in futures]
    assert results == [VALUE_1] * 64
    assert stub_vault.calls == 1


def test_concurrent_misses_share_one_failed_read(stub_vault):
    stub_vault.gate = threading.Event()
    stub_vault.failing = "Key Vault error: HTTP 503"
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(secrets.get_secret, secrets.AUTH_TOKEN) for _ in range(32)]
        wait_until(stub_vault.entered.is_set, 5, "the first vault read")
        stub_vault.gate.set()
        errors = [f.exception(timeout=10) for f in futures]
    assert all(isinstance(e, secrets.SecretUnavailableError) and e.reason == "Key Vault error: HTTP 503"
               for e in errors)
    assert stub_vault.calls == 1


def test_a_read_started_before_a_refresh_is_not_reused_after_it(stub_vault):
    stub_vault.gate = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        before = pool.submit(secrets.get_secret, secrets.AUTH_TOKEN)
        wait_until(stub_vault.entered.is_set, 5, "the first vault read")
        assert secrets.refresh_secret(secrets.AUTH_TOKEN)
        after = pool.submit(secrets.get_secret, secrets.AUTH_TOKEN)
        stub_vault.gate.set()
        assert before.result(timeout=10) == VALUE_1
        assert after.result(timeout=10) == VALUE_2
    assert stub_vault.calls == 2


# ---------------------------------------------------------------- client and credential construction


class Recorder:
    """Replaces an SDK class: records each construction."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return SimpleNamespace(args=args, kwargs=kwargs, close=lambda: None,
                               get_secret=lambda name: SimpleNamespace(
                                   value=VALUE_1, properties=SimpleNamespace(version="v1")))


@pytest.fixture
def sdk_recorders(monkeypatch, set_env):
    import azure.identity
    import azure.keyvault.secrets

    credential, client = Recorder(), Recorder()
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", credential)
    monkeypatch.setattr(azure.keyvault.secrets, "SecretClient", client)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    return credential, client


def test_user_assigned_identity_is_passed_to_default_azure_credential_once(sdk_recorders, set_env):
    credential, client = sdk_recorders
    set_env(KEY_VAULT_URL=VAULT, AZURE_CLIENT_ID="11111111-2222-3333-4444-555555555555")
    for _ in range(20):
        secrets.get_secret(secrets.AUTH_TOKEN)
        secrets.get_secret(secrets.API_KEY_SECRET)
        secrets.refresh_secret(secrets.AUTH_TOKEN)
    assert credential.calls == [((), {"managed_identity_client_id": "11111111-2222-3333-4444-555555555555"})]
    assert len(client.calls) == 1
    (vault_url, used_credential), options = client.calls[0]
    assert vault_url == VAULT and used_credential.kwargs["managed_identity_client_id"].startswith("1111")
    transport = options.pop("transport")  # connection options travel in the once-configured transport
    config = transport.connection_config
    assert (config.timeout, config.read_timeout) == (secrets.CLIENT_OPTIONS["connection_timeout"],
                                                     secrets.CLIENT_OPTIONS["read_timeout"])
    assert options == {k: v for k, v in secrets.CLIENT_OPTIONS.items()
                       if k not in ("connection_timeout", "read_timeout")}


def test_without_a_client_id_default_azure_credential_gets_no_identity(sdk_recorders, set_env):
    credential, _ = sdk_recorders
    set_env(KEY_VAULT_URL=VAULT)
    secrets.get_secret(secrets.AUTH_TOKEN)
    assert credential.calls == [((), {})]


def test_no_vault_client_or_credential_until_a_secret_is_needed(sdk_recorders, set_env, call_function):
    from tests.conftest import http_request

    credential, client = sdk_recorders
    set_env(KEY_VAULT_URL=VAULT)
    call_function("twiml_say", http_request("POST", "/api/twiml/say", body=b""))  # 403 before any secret
    secrets.refresh_secret(secrets.AUTH_TOKEN)
    assert credential.calls == [] and client.calls == []


def test_client_budget_keeps_a_dead_vault_from_hanging_a_request():
    options = secrets.CLIENT_OPTIONS
    assert options["retry_total"] <= 3
    assert options["connection_timeout"] <= 5 and options["read_timeout"] <= 5
    # Twilio gives a webhook 15 s; one read (retries included) must end well before that.
    assert options["timeout"] <= 10


def test_injected_credential_factory_and_options_reach_the_client(sdk_recorders, set_env):
    _, client = sdk_recorders
    marker = object()
    secrets.set_credential_factory(lambda: marker, connection_verify="/tmp/cert.pem", retry_total=0)
    try:
        set_env(KEY_VAULT_URL=VAULT)
        secrets.get_secret(secrets.AUTH_TOKEN)
    finally:
        secrets.set_credential_factory(None)
    (_, used_credential), options = client.calls[0]
    assert used_credential is marker
    assert options["transport"].connection_config.verify == "/tmp/cert.pem" and options["retry_total"] == 0


def test_importing_the_app_with_a_vault_configured_loads_no_identity_or_vault_sdk():
    code = ("import json, sys, function_app; from shared import secrets, routes; "
            "secrets.refresh_secret(secrets.AUTH_TOKEN); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('azure.identity', 'azure.keyvault')))))")
    env = {"PATH": "/usr/bin:/bin", "KEY_VAULT_URL": VAULT, "AZURE_CLIENT_ID": "x"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True, env=env)
    assert json.loads(out.stdout) == []


# ---------------------------------------------------------------- health helper


def test_secrets_readable_checks_the_api_key_secret_only_when_an_api_key_is_configured(monkeypatch, set_env):
    assert secrets.secrets_readable() is True
    set_env(TWILIO_API_KEY_SID="SK" + "0" * 32)
    assert secrets.secrets_readable() is False
    set_env(TWILIO_API_KEY_SECRET=register_secret("unit-api-key-secret-0f0f0f"))
    assert secrets.secrets_readable() is True


def test_waiters_are_released_even_if_the_read_fails_unexpectedly(stub_vault, monkeypatch):
    gate, entered = threading.Event(), threading.Event()

    def broken(name, vault_url, client_id):
        entered.set()
        gate.wait(10)
        raise RuntimeError("bug in the reader")

    monkeypatch.setattr(secrets, "_read_vault", broken)
    with ThreadPoolExecutor(8) as pool:
        leader = pool.submit(secrets.get_secret, secrets.AUTH_TOKEN)
        wait_until(entered.is_set, 5, "the read to start")
        followers = [pool.submit(secrets.get_secret, secrets.AUTH_TOKEN) for _ in range(8)]
        wait_until(lambda: secrets._flights.get(secrets.AUTH_TOKEN) is not None, 5, "the flight to exist")
        gate.set()
        assert isinstance(leader.exception(timeout=10), RuntimeError)
        for follower in followers:
            error = follower.exception(timeout=10)
            assert isinstance(error, (secrets.SecretUnavailableError, RuntimeError))  # none hangs
