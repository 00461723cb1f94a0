"""Within one cache TTL, a burst of webhooks costs exactly one Key Vault read of the auth token.

Run with ``-s`` to see the measured counts:
``.venv/bin/python -m pytest tests/integration/test_keyvault_load.py -q -s``
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from shared import secrets
from tests.conftest import VAULT_AUTH_TOKEN, signed_form_request

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


def test_a_thousand_webhooks_in_one_ttl_read_the_token_once(keyvault, call_function):
    requests = [WEBHOOKS[i % len(WEBHOOKS)] for i in range(1000)]

    def invoke(item):
        name, path, params = item
        response, _ = call_function(name, signed_form_request(path, params, token=VAULT_AUTH_TOKEN))
        return response.status_code

    with ThreadPoolExecutor(16) as pool:  # the Functions worker runs sync functions in a thread pool
        statuses = list(pool.map(invoke, requests))
    report("1,000 webhooks", keyvault)
    assert statuses == [200] * 1000
    assert keyvault.reads(secrets.AUTH_TOKEN) == 1
    assert keyvault.reads(secrets.API_KEY_SECRET) == 0  # webhooks only need the auth token
