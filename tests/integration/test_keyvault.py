"""Secrets through the real SecretClient against the HTTPS Key Vault fake: challenge, cache, failures, rotation,
and the webhooks and health route that depend on them (called through the indexed functions)."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared import secrets
from tests.conftest import VAULT_API_KEY_SECRET, VAULT_AUTH_TOKEN, http_request, signed_form_request
from tests.peers.keyvault import TENANT_ID, TEST_BEARER_TOKEN
from tests.peers.ports import wait_until
from tests.secret_scan import register_secret

ROTATED_TOKEN = register_secret("vault-auth-token-rotated-d41f0c99e3")
register_secret(TEST_BEARER_TOKEN)
CALL = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "0123456789abcdef" * 2, "From": "+15005550006",
        "To": "+15005550001", "ApiVersion": "2010-04-01"}


def voice_call(call_function, token: str):
    response, _ = call_function("voice", signed_form_request("/api/voice", CALL, token=token))
    return response


# ---------------------------------------------------------------- the SecretClient against the fake


def test_secret_is_read_from_the_vault_through_the_bearer_challenge(keyvault):
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN
    assert secrets.get_secret(secrets.API_KEY_SECRET) == VAULT_API_KEY_SECRET
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1 and keyvault.reads(secrets.API_KEY_SECRET) == 1


def test_the_credential_is_asked_for_the_vault_scope_and_the_challenge_tenant(keyvault, keyvault_peer):
    seen = []
    from tests.peers.keyvault import FakeCredential

    class Recording(FakeCredential):
        def get_token_info(self, *scopes, options=None):
            seen.append((scopes, dict(options or {})))
            return super().get_token_info(*scopes, options=options)

    secrets.set_credential_factory(Recording, verify_challenge_resource=False,
                                   connection_verify=str(keyvault_peer.cert_path))
    # The SDK caches a vault's challenge per process; forget it so this client meets the 401 itself.
    from azure.keyvault.secrets._shared.http_challenge_cache import clear

    clear()
    secrets.get_secret(secrets.AUTH_TOKEN)
    assert seen[0][0] == ("https://vault.azure.net/.default",)
    assert seen[0][1].get("tenant_id") == TENANT_ID
    assert keyvault.challenges == 1


def test_a_secret_missing_from_the_vault_is_unavailable_with_a_404_reason(keyvault):
    keyvault.delete_secret(secrets.AUTH_TOKEN)
    with pytest.raises(secrets.SecretUnavailableError) as caught:
        secrets.get_secret(secrets.AUTH_TOKEN)
    assert caught.value.reason == "not found in Key Vault: HTTP 404 SecretNotFound"


def test_a_token_the_vault_rejects_is_unavailable_with_an_auth_reason(keyvault):
    keyvault.accepted_tokens = {"some-other-token"}
    with pytest.raises(secrets.SecretUnavailableError) as caught:
        secrets.get_secret(secrets.AUTH_TOKEN)
    assert caught.value.reason.startswith("Key Vault refused the identity") and "401" in caught.value.reason


def test_concurrent_cold_misses_make_one_vault_read(keyvault):
    keyvault.slow(0.3)
    with ThreadPoolExecutor(32) as pool:
        values = list(pool.map(lambda _: secrets.get_secret(secrets.AUTH_TOKEN), range(64)))
    assert values == [VAULT_AUTH_TOKEN] * 64
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1


def test_values_are_cached_for_the_ttl_then_read_again(keyvault, secret_clock):
    for _ in range(200):
        secrets.get_secret(secrets.AUTH_TOKEN)
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1
    secret_clock.advance(301)
    secrets.get_secret(secrets.AUTH_TOKEN)
    assert keyvault.reads(secrets.AUTH_TOKEN) == 2


@pytest.mark.parametrize("fault", ["503", "drop"])
def test_a_failing_vault_at_cold_start_is_unavailable_within_the_budget(keyvault, fault):
    keyvault.fail(fault)
    started = time.monotonic()
    with pytest.raises(secrets.SecretUnavailableError) as caught:
        secrets.get_secret(secrets.AUTH_TOKEN)
    assert time.monotonic() - started < 5
    assert ("503" in caught.value.reason) if fault == "503" else ("unreachable" in caught.value.reason)


def test_a_hung_vault_costs_one_read_at_most_the_client_budget(keyvault):
    keyvault.slow(60)
    started = time.monotonic()
    with pytest.raises(secrets.SecretUnavailableError) as caught:
        secrets.get_secret(secrets.AUTH_TOKEN)
    elapsed = time.monotonic() - started
    assert elapsed < secrets.CLIENT_OPTIONS["timeout"] + secrets.CLIENT_OPTIONS["read_timeout"] + 1
    assert "Timeout" in caught.value.reason or "timed out" in caught.value.reason
    # The next request within the retry delay fails at once instead of waiting on the vault again.
    started = time.monotonic()
    with pytest.raises(secrets.SecretUnavailableError):
        secrets.get_secret(secrets.AUTH_TOKEN)
    assert time.monotonic() - started < 0.5


def test_vault_down_when_warm_serves_the_cached_value_and_warns_without_it(keyvault, secret_clock, caplog):
    caplog.set_level(logging.DEBUG)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN
    keyvault.fail("503")
    secret_clock.advance(3600)  # long expired
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN
    warnings = [r.getMessage() for r in caplog.records if r.name == "switchboard.secrets"
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 503" in warnings[0] and "cached value" in warnings[0]
    assert not any(VAULT_AUTH_TOKEN in f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


def test_rotation_is_seen_after_one_refresh_without_a_restart(keyvault):
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN
    keyvault.set_secret(secrets.AUTH_TOKEN, ROTATED_TOKEN)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN  # cached until refreshed or expired
    assert secrets.refresh_secret(secrets.AUTH_TOKEN)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == ROTATED_TOKEN
    assert keyvault.reads(secrets.AUTH_TOKEN) == 2


def test_refresh_with_the_vault_down_keeps_the_old_value(keyvault):
    secrets.get_secret(secrets.AUTH_TOKEN)
    keyvault.fail("drop")
    assert secrets.refresh_secret(secrets.AUTH_TOKEN)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN


# ---------------------------------------------------------------- webhooks and health


def test_webhook_signed_with_the_vault_token_is_accepted(keyvault, call_function):
    response = voice_call(call_function, VAULT_AUTH_TOKEN)
    assert response.status_code == 200 and b"<Gather" in response.get_body()


def test_webhook_signed_with_the_rotated_token_is_accepted_after_one_refresh(keyvault, call_function):
    assert voice_call(call_function, VAULT_AUTH_TOKEN).status_code == 200
    keyvault.set_secret(secrets.AUTH_TOKEN, ROTATED_TOKEN)
    keyvault.reset_counts()
    # Twilio now signs with the new token: the first check fails, the token is re-read once, the check passes.
    assert voice_call(call_function, ROTATED_TOKEN).status_code == 200
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1
    assert voice_call(call_function, ROTATED_TOKEN).status_code == 200
    # The old token is refused now that the new one is cached, and refusing it costs no vault read (rate limit).
    response = voice_call(call_function, VAULT_AUTH_TOKEN)
    assert response.status_code == 403 and VAULT_AUTH_TOKEN.encode() not in response.get_body()
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1


def test_forged_webhook_flood_reads_the_vault_at_most_once_a_minute(keyvault, call_function, secret_clock):
    assert voice_call(call_function, VAULT_AUTH_TOKEN).status_code == 200
    keyvault.reset_counts()
    forged = register_secret("forger-guess-token-0000aaaa")

    def flood(count: int) -> list[int]:
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda _: voice_call(call_function, forged).status_code, range(count)))

    assert set(flood(300)) == {403}
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1
    secret_clock.advance(30)
    assert set(flood(100)) == {403}
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1
    secret_clock.advance(31)
    assert set(flood(100)) == {403}
    assert keyvault.reads(secrets.AUTH_TOKEN) == 2


def test_vault_down_at_cold_start_answers_webhooks_503_then_recovers(keyvault, call_function, secret_clock):
    keyvault.fail("503")
    response = voice_call(call_function, VAULT_AUTH_TOKEN)
    assert response.status_code == 503 and b"<Response" not in response.get_body()
    keyvault.fail(None)
    secret_clock.advance(secrets.RETRY_AFTER_FAILURE_SECONDS + 1)
    assert voice_call(call_function, VAULT_AUTH_TOKEN).status_code == 200


def test_vault_down_when_warm_keeps_webhooks_working(keyvault, call_function, secret_clock):
    assert voice_call(call_function, VAULT_AUTH_TOKEN).status_code == 200
    keyvault.fail("drop")
    secret_clock.advance(10_000)
    assert voice_call(call_function, VAULT_AUTH_TOKEN).status_code == 200


def test_health_reports_vault_secrets_readable_without_the_value(keyvault, call_function):
    response, _ = call_function("health", http_request("GET", "/api/health"))
    body = json.loads(response.get_body())
    assert response.status_code == 200 and body["secrets"] is True
    assert VAULT_AUTH_TOKEN not in response.get_body().decode()


def test_health_reports_secrets_unreadable_when_the_vault_is_down_cold(keyvault, call_function):
    keyvault.fail("503")
    response, _ = call_function("health", http_request("GET", "/api/health"))
    assert response.status_code == 200 and json.loads(response.get_body())["secrets"] is False


def test_health_checks_do_not_read_the_vault_each_time(keyvault, call_function):
    for _ in range(20):
        call_function("health", http_request("GET", "/api/health"))
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1


def test_no_secret_value_in_any_error_the_app_raises(keyvault):
    secrets.get_secret(secrets.AUTH_TOKEN)
    for fault in ("503", "drop"):
        keyvault.fail(fault)
        secrets.reset_secrets()
        with pytest.raises(secrets.SecretUnavailableError) as caught:
            secrets.get_secret(secrets.AUTH_TOKEN)
        assert VAULT_AUTH_TOKEN not in str(caught.value) and VAULT_AUTH_TOKEN not in repr(caught.value.args)


def test_fake_vault_answers_the_versioned_and_trailing_slash_forms(keyvault):
    import requests

    version = keyvault.set_secret("probe-secret", register_secret("probe-secret-value-1234abcd"))
    headers = {"Authorization": f"Bearer {TEST_BEARER_TOKEN}"}
    verify = str(keyvault.cert_path)
    for path in ("/secrets/probe-secret", "/secrets/probe-secret/", f"/secrets/probe-secret/{version}"):
        reply = requests.get(f"{keyvault.url}{path}?api-version=7.5", headers=headers, verify=verify, timeout=5)
        assert reply.status_code == 200 and reply.json()["id"].endswith(f"/secrets/probe-secret/{version}")
    unauthenticated = requests.get(f"{keyvault.url}/secrets/probe-secret?api-version=7.5", verify=verify, timeout=5)
    assert unauthenticated.status_code == 401
    assert 'resource="https://vault.azure.net"' in unauthenticated.headers["WWW-Authenticate"]
    missing = requests.get(f"{keyvault.url}/secrets/probe-secret/0000?api-version=7.5", headers=headers,
                           verify=verify, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "SecretNotFound"
    wait_until(lambda: keyvault.reads("probe-secret") == 4, 5, "the fake to count 4 reads")


# ---------------------------------------------------------------- Webhook Rules: the SharedKey from the vault

VAULT_SHARED_KEY = register_secret("vault-webhook-shared-key-5a7c2e91b0")


def test_webhook_signed_with_the_shared_key_is_checked_with_the_vaults_shared_key(keyvault, call_function):
    keyvault.set_secret(secrets.WEBHOOK_SHARED_KEY, VAULT_SHARED_KEY)
    for _ in range(3):
        req = signed_form_request("/api/voice", CALL, token=VAULT_SHARED_KEY, algorithm="HMAC_SHA256",
                                  shared_key=True)
        assert call_function("voice", req)[0].status_code == 200
    # Signed with the auth token but claiming a Webhook Rule: the shared key decides, so it is forged.
    forged = signed_form_request("/api/voice", CALL, token=VAULT_AUTH_TOKEN, algorithm="HMAC_SHA256", shared_key=True)
    assert call_function("voice", forged)[0].status_code == 403
    assert keyvault.reads(secrets.WEBHOOK_SHARED_KEY) <= 2  # one read, plus at most one rate-limited refresh
    assert keyvault.reads(secrets.AUTH_TOKEN) == 0


def test_shared_key_signed_webhook_without_the_secret_in_the_vault_is_403(keyvault, call_function):
    """No SharedKey in the vault (404): a signature claiming one cannot be valid, so it is forged (403), not 503."""
    req = signed_form_request("/api/voice", CALL, token=VAULT_SHARED_KEY, algorithm="HMAC_SHA256", shared_key=True)
    assert call_function("voice", req)[0].status_code == 403


def test_shared_key_signed_webhook_with_the_vault_down_is_503(keyvault, call_function):
    """The vault unreachable is an outage, not a forgery: 503, so Twilio retries or uses the fallback URL."""
    keyvault.fail("503")
    req = signed_form_request("/api/voice", CALL, token=VAULT_SHARED_KEY, algorithm="HMAC_SHA256", shared_key=True)
    assert call_function("voice", req)[0].status_code == 503
