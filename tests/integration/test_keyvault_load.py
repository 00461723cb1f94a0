"""Within one cache TTL, a burst of webhooks costs exactly one Key Vault read of the auth token.

Run with ``-s`` to see the measured counts:
``.venv/bin/python -m pytest tests/integration/test_keyvault_load.py -q -s``
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared import secrets
from tests.conftest import TEST_ACCOUNT_SID, VAULT_API_KEY_SECRET, VAULT_AUTH_TOKEN, signed_form_request
from tests.outbound_helpers import put, sms_queue
from tests.peers.ports import wait_until

ACCOUNT = "AC" + "0123456789abcdef" * 2
CALL = {"CallSid": "CA" + "2" * 32, "AccountSid": ACCOUNT, "From": "+15005550006", "To": "+15005550001",
        "ApiVersion": "2010-04-01"}
WEBHOOKS = [
    ("voice", "/api/voice", CALL),
    ("voice_menu", "/api/voice/menu", {**CALL, "Digits": "1"}),
    ("twiml_say", "/api/twiml/say", {**CALL, "Message": "hello"}),
    ("sms", "/api/sms", {"MessageSid": "SM" + "3" * 32, "AccountSid": ACCOUNT, "From": "+15005550006",
                         "To": "+15005550001", "Body": "hello there", "NumMedia": "0"}),
]


def report(label: str, keyvault) -> str:
    line = (f"vault reads after {label}: {secrets.AUTH_TOKEN}={keyvault.reads(secrets.AUTH_TOKEN)} "
            f"{secrets.API_KEY_SECRET}={keyvault.reads(secrets.API_KEY_SECRET)} (401 challenges: {keyvault.challenges})")
    print("\n" + line)
    return line


def webhooks(call_function, count: int) -> list[int]:
    def invoke(item):
        name, path, params = item
        response, _ = call_function(name, signed_form_request(path, params, token=VAULT_AUTH_TOKEN))
        return response.status_code

    with ThreadPoolExecutor(16) as pool:  # the Functions worker runs sync functions in a thread pool
        return list(pool.map(invoke, [WEBHOOKS[i % len(WEBHOOKS)] for i in range(count)]))


def test_a_thousand_webhooks_in_one_ttl_read_the_token_once(keyvault, call_function):
    statuses = webhooks(call_function, 1000)
    report("1,000 webhooks", keyvault)
    assert statuses == [200] * 1000
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1
    assert keyvault.reads(secrets.API_KEY_SECRET) == 0  # webhooks only need the auth token


@pytest.mark.parametrize("api_key", [False, True], ids=["auth-token-sends", "api-key-sends"])
def test_a_thousand_webhooks_and_200_queue_sends_in_one_ttl_read_each_secret_once(
        keyvault, outbound_env, standin_queues, call_function, set_env, api_key, caplog):
    api_key_sid = "SK" + "6" * 32
    outbound_env.credentials.clear()
    outbound_env.credentials[TEST_ACCOUNT_SID] = VAULT_AUTH_TOKEN
    outbound_env.credentials[api_key_sid] = VAULT_API_KEY_SECRET
    # The fixture's 1 s Twilio timeout is for its slow-answer faults; under this load a dropped SYN on the fake's
    # small listen backlog costs a 1 s TCP retransmit, which is not what this test measures.
    set_env(TWILIO_HTTP_TIMEOUT_SECONDS="10", **({"TWILIO_API_KEY_SID": api_key_sid} if api_key else {}))
    run = uuid.uuid4().hex[:8]
    for i in range(200):
        put(sms_queue(), {"id": f"load-{run}-{i}", "to": "+14155550100", "body": f"message {i}"})
    host = standin_queues()  # sends run on the host's threads while the webhooks run on ours
    statuses = webhooks(call_function, 1000)
    wait_until(lambda: len(outbound_env.created("sms")) == 200, 60, "200 sends to reach the Twilio fake")
    wait_until(lambda: host.stats.succeeded == 200, 20, "the host to settle 200 messages")
    report(f"1,000 webhooks + 200 queue sends ({'API key' if api_key else 'auth token'})", keyvault)
    assert statuses == [200] * 1000
    problems = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING
                or r.name == "devhost.queues"]
    problems = [p for p in problems if "Connection pool is full" not in p]
    assert host.stats.failed == 0 and len(outbound_env.requests) == 200, problems[:10]
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1
    assert keyvault.reads(secrets.API_KEY_SECRET) == (1 if api_key else 0)
