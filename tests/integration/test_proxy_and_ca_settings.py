"""HTTPS_PROXY, NO_PROXY and REQUESTS_CA_BUNDLE keep working for Twilio, storage and Key Vault, read once.

The proxy is a tiny CONNECT proxy on 127.0.0.1 that records every tunnel asked of it and opens tunnels only to
127.0.0.1 (any other target gets 502), so nothing leaves the machine: for Twilio and storage the test proves
the proxy was asked for their host; for Key Vault (the fake is on 127.0.0.1) the read goes through the tunnel.
"""

from __future__ import annotations

from typing import Any

import pytest

from azure.core.exceptions import ServiceRequestError

from shared import secrets, storage, twilio_api, transport
from shared.outbound import parse
from tests.conftest import VAULT_AUTH_TOKEN
from tests.peers.connect_proxy import ConnectProxy
from tests.peers.keyvault import FakeCredential


def test_https_proxy_carries_twilio_requests(proxy: ConnectProxy, set_env: Any) -> None:
    set_env(TWILIO_API_BASE_URL="https://api.twilio.com")
    message, _ = parse("sms", b'{"id": "proxy-1", "to": "+14155550100", "body": "hi"}', "qm-1")
    with pytest.raises(twilio_api.TransientTwilioError):
        twilio_api.send_sms(message, from_="+15005550006", messaging_service_sid=None)
    assert proxy.tunnels == ["api.twilio.com:443"]


def test_https_proxy_carries_storage_requests(proxy: ConnectProxy, set_env: Any) -> None:
    set_env(AzureWebJobsStorage="DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bm9uZQ==;"
                                "TableEndpoint=https://acct.table.core.windows.net;")
    assert storage.storage_reachable() is False  # the proxy refuses to go further
    assert proxy.tunnels == ["acct.table.core.windows.net:443"]


def test_https_proxy_carries_key_vault_reads(proxy: ConnectProxy, keyvault: Any) -> None:
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN
    assert proxy.tunnels == [keyvault.url.removeprefix("https://").rstrip("/")]


def test_no_proxy_hosts_bypass_the_proxy(proxy: ConnectProxy, keyvault: Any, set_env: Any) -> None:
    set_env(NO_PROXY="localhost,127.0.0.1")
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN
    assert proxy.tunnels == []


def test_requests_ca_bundle_verifies_key_vault_tls(keyvault: Any, set_env: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # No certificate handed to the client: only REQUESTS_CA_BUNDLE can make the self-signed vault trusted.
    secrets.set_credential_factory(FakeCredential, verify_challenge_resource=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    set_env(KEY_VAULT_URL=keyvault.url)
    with pytest.raises(secrets.SecretUnavailableError, match="SSL|certificate"):
        secrets.get_secret(secrets.AUTH_TOKEN)

    set_env(REQUESTS_CA_BUNDLE=str(keyvault.cert_path))
    assert transport.http_environment().ca_bundle == str(keyvault.cert_path)
    assert secrets.get_secret(secrets.AUTH_TOKEN) == VAULT_AUTH_TOKEN


def test_https_proxy_carries_table_operations_and_nothing_is_sent(proxy: ConnectProxy, set_env: Any) -> None:
    set_env(AzureWebJobsStorage="DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bm9uZQ==;"
                                "TableEndpoint=https://acct.table.core.windows.net;")
    with pytest.raises(ServiceRequestError):  # the proxy refuses to go further: nothing was sent
        storage.table("sends").get_entity("sms-00", "id-1")
    assert set(proxy.tunnels) == {"acct.table.core.windows.net:443"}
