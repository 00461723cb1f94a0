"""Queue sends with their credentials in the (fake) Key Vault: through the indexed queue functions, Azurite, the
Twilio fake and the real SecretClient. Rotation on a Twilio 401, the vault down cold (retried, then sent) and warm
(the cached value)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared import secrets
from shared.sender import RetryLaterError
from tests.conftest import TEST_ACCOUNT_SID, VAULT_API_KEY_SECRET, VAULT_AUTH_TOKEN
from tests.outbound_helpers import put, sms_queue
from tests.peers.ports import wait_until
from tests.secret_scan import register_secret

ROTATED_TOKEN = register_secret("vault-auth-token-rotated-for-sends-77b2")
API_KEY_SID = "SK" + "5" * 32


@pytest.fixture
def vault_sends(keyvault: Any, outbound_env: Any) -> Any:
    """The vault holds the credentials the Twilio fake accepts; the environment holds none."""
    outbound_env.credentials.clear()
    outbound_env.credentials[TEST_ACCOUNT_SID] = VAULT_AUTH_TOKEN
    outbound_env.credentials[API_KEY_SID] = VAULT_API_KEY_SECRET
    return outbound_env


def send_sms(indexed_functions: dict[str, Any], ident: str, dequeue_count: int = 1) -> None:
    """Deliver one message to the indexed ``send_sms`` queue function, as the host does."""
    body = json.dumps({"id": ident, "to": "+14155550100", "body": "hello"}).encode()
    message = QueueMessage(id=str(uuid.uuid4()), body=body, dequeue_count=dequeue_count)
    indexed_functions["send_sms"].get_user_function()(msg=message)


def test_sends_use_the_vault_token(vault_sends, keyvault, indexed_functions):
    for i in range(3):
        send_sms(indexed_functions, f"kv-{uuid.uuid4().hex[:8]}-{i}")
    assert [r.answered for r in vault_sends.requests] == [201, 201, 201]
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1


def test_sends_use_the_vault_api_key_secret_when_an_api_key_is_set(vault_sends, keyvault, indexed_functions,
                                                                     set_env):
    set_env(TWILIO_API_KEY_SID=API_KEY_SID)
    send_sms(indexed_functions, f"kv-key-{uuid.uuid4().hex[:8]}")
    assert [(r.username, r.answered) for r in vault_sends.requests] == [(API_KEY_SID, 201)]
    assert keyvault.reads(secrets.API_KEY_SECRET) == 1 and keyvault.reads(secrets.AUTH_TOKEN) == 0


def test_send_after_rotation_gets_401_refreshes_from_the_vault_and_succeeds(vault_sends, keyvault,
                                                                           indexed_functions):
    send_sms(indexed_functions, f"rot-a-{uuid.uuid4().hex[:8]}")
    # Rotate: the vault and Twilio now hold the new token; the app still caches the old one.
    keyvault.set_secret(secrets.AUTH_TOKEN, ROTATED_TOKEN)
    vault_sends.credentials[TEST_ACCOUNT_SID] = ROTATED_TOKEN
    send_sms(indexed_functions, f"rot-b-{uuid.uuid4().hex[:8]}")
    assert [r.answered for r in vault_sends.requests] == [201, 401, 201]
    assert keyvault.reads(secrets.AUTH_TOKEN) == 2
    send_sms(indexed_functions, f"rot-c-{uuid.uuid4().hex[:8]}")
    assert [r.answered for r in vault_sends.requests][-1] == 201 and keyvault.reads(secrets.AUTH_TOKEN) == 2


def test_vault_down_at_cold_start_raises_so_the_queue_retries(vault_sends, keyvault, indexed_functions):
    keyvault.fail("503")
    with pytest.raises(RetryLaterError, match="secret twilio-auth-token unavailable"):
        send_sms(indexed_functions, f"cold-{uuid.uuid4().hex[:8]}")
    assert vault_sends.requests == []


def test_vault_down_at_cold_start_then_back_the_queued_message_is_sent(vault_sends, keyvault, standin_queues,
                                                                        secret_clock):
    keyvault.fail("503")
    ident = f"cold-{uuid.uuid4().hex[:8]}"
    put(sms_queue(), {"id": ident, "to": "+14155550100", "body": "hello"})
    host = standin_queues(visibility_timeout=1)
    wait_until(lambda: host.stats.failed >= 1, 20, "the first try to fail on the dead vault")
    assert vault_sends.requests == []
    keyvault.fail(None)
    secret_clock.advance(secrets.RETRY_AFTER_FAILURE_SECONDS + 1)  # the vault may be asked again
    wait_until(lambda: len(vault_sends.created("sms")) == 1, 20, "the retried message to be sent")
    wait_until(lambda: host.stats.succeeded == 1, 10, "the host to settle the message")
    assert host.stats.moved_to_poison == 0
    assert [r.send_id for r in vault_sends.created("sms")] == [ident]


def test_vault_down_when_warm_sends_with_the_cached_token(vault_sends, keyvault, indexed_functions, secret_clock):
    send_sms(indexed_functions, f"warm-a-{uuid.uuid4().hex[:8]}")
    keyvault.fail("drop")
    secret_clock.advance(10_000)
    send_sms(indexed_functions, f"warm-b-{uuid.uuid4().hex[:8]}")
    assert [r.answered for r in vault_sends.requests] == [201, 201]
