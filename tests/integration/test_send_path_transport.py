"""The send path on the official SDKs: whether a request may have reached Twilio is read from the exceptions
requests (under twilio's ``TwilioHttpClient``) and azure-core (under the tables SDK) raise, against a peer that
breaks the exchange at each point; proxy and CA settings work through the library path.

Never reached (retried at once): refused, the TLS handshake, an untrusted certificate, a proxy that refuses the
tunnel, a TLS refusal behind the proxy. May have been sent (reconciled): anything once the connection was up.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from shared import storage, twilio_api, transport
from shared.outbound import validate
from shared.twilio_api import TransientTwilioError
from tests.conftest import TEST_FROM
from tests.peers.fault_peer import FaultPeer
from tests.peers.keyvault import make_certificate

TO = "+14155550100"


def _send() -> Any:
    return twilio_api.send_sms(validate("sms", {"id": "t-1", "to": TO, "body": "x"}),  # type: ignore[arg-type]
                               from_=TEST_FROM, messaging_service_sid=None)


@pytest.fixture
def peer() -> Iterator[Any]:
    made: list[FaultPeer] = []

    def make(mode: str, **options: Any) -> FaultPeer:
        made.append(FaultPeer(mode, **options))
        return made[-1]

    yield make
    for p in made:
        p.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("mode", ["close_on_accept", "close_after_request", "hang_after_request", "partial_answer"])
def test_a_twilio_connection_broken_after_it_was_made_may_have_sent_the_message(peer: Any, set_env: Any,
                                                                                mode: str) -> None:
    fault = peer(mode)
    set_env(TWILIO_API_BASE_URL=fault.url, TWILIO_HTTP_TIMEOUT_SECONDS="1")
    with pytest.raises(TransientTwilioError) as info:
        _send()
    assert info.value.maybe_sent is True, info.value.reason


def test_a_read_timeout_says_twilio_may_have_accepted_it(peer: Any, set_env: Any) -> None:
    fault = peer("hang_after_request")
    set_env(TWILIO_API_BASE_URL=fault.url, TWILIO_HTTP_TIMEOUT_SECONDS="1")
    with pytest.raises(TransientTwilioError, match="no answer within 1 s"):
        _send()
    assert fault.requests == 1


def test_a_refused_connection_never_reached_twilio(set_env: Any) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    set_env(TWILIO_API_BASE_URL=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientTwilioError) as info:
        _send()
    assert info.value.maybe_sent is False and info.value.reason.startswith("cannot connect")


def test_a_failed_tls_handshake_never_reached_twilio(peer: Any, set_env: Any) -> None:
    fault = peer("not_tls")
    set_env(TWILIO_API_BASE_URL=f"https://127.0.0.1:{fault.port}")
    with pytest.raises(TransientTwilioError) as info:
        _send()
    assert info.value.maybe_sent is False and fault.requests == 0


def test_an_untrusted_certificate_never_reached_twilio(peer: Any, set_env: Any, certificate: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    fault = peer("answer", cert=certificate)
    set_env(TWILIO_API_BASE_URL=fault.url)
    with pytest.raises(TransientTwilioError) as info:
        _send()
    assert info.value.maybe_sent is False and fault.requests == 0


def test_connect_timeout_and_dns_failure_as_requests_raises_them_never_reached_twilio() -> None:
    # A connect timeout or a DNS failure cannot be provoked on loopback alone: these are the exceptions requests
    # raises for them (urllib3's reason inside MaxRetryError), classified as the send path classifies them.
    import requests
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError

    timeout = requests.exceptions.ConnectTimeout(MaxRetryError(None, "/x", ConnectTimeoutError(None, "timed out")))
    dns = requests.exceptions.ConnectionError(MaxRetryError(None, "/x", NameResolutionError("api.twilio.com", None,
                                                                                            OSError("no such host"))))
    assert twilio_api.classify(timeout).maybe_sent is False
    assert twilio_api.classify(dns).maybe_sent is False


def test_twilio_requests_use_the_sdks_client_with_no_retries_a_timeout_and_a_pool_per_thread(twilio_fake: Any,
                                                                                              set_env: Any) -> None:
    from twilio.http.http_client import TwilioHttpClient

    set_env(PYTHON_THREADPOOL_THREAD_COUNT="7")
    client = twilio_api.get_client().http_client
    assert type(client) is TwilioHttpClient and client.timeout == 2.0
    adapter = client.session.get_adapter(twilio_fake.base_url)
    assert adapter.max_retries.total == 0 and adapter._pool_maxsize == 7
    _send()
    assert len(twilio_fake.created()) == 1


# ---------------------------------------------------------------- proxy and CA, through the library path


def test_a_proxy_refusing_the_tunnel_never_reached_twilio(proxy: Any, set_env: Any) -> None:
    set_env(TWILIO_API_BASE_URL="https://api.twilio.com")  # the test proxy refuses every host but 127.0.0.1
    with pytest.raises(TransientTwilioError) as info:
        _send()
    assert info.value.maybe_sent is False and proxy.tunnels == ["api.twilio.com:443"]


def test_a_tls_refusal_behind_https_proxy_never_reached_twilio(proxy: Any, peer: Any, set_env: Any) -> None:
    fault = peer("not_tls")
    set_env(TWILIO_API_BASE_URL=f"https://127.0.0.1:{fault.port}")
    with pytest.raises(TransientTwilioError) as info:
        _send()
    assert info.value.maybe_sent is False and fault.requests == 0
    assert proxy.tunnels == [f"127.0.0.1:{fault.port}"]


def test_requests_ca_bundle_file_verifies_twilio_through_the_proxy(proxy: Any, peer: Any, set_env: Any,
                                                                   certificate: Any) -> None:
    fault = peer("answer", cert=certificate)
    set_env(TWILIO_API_BASE_URL=fault.url, REQUESTS_CA_BUNDLE=str(certificate[0]))
    assert _send().sid.startswith("SM") and fault.requests == 1
    assert proxy.tunnels == [f"127.0.0.1:{fault.port}"]


def test_requests_ca_bundle_may_be_a_directory_of_certificates(peer: Any, set_env: Any, certificate: Any,
                                                               tmp_path: Path) -> None:
    directory = tmp_path / "cas"
    directory.mkdir()
    (directory / "switchboard-test.pem").write_bytes(certificate[0].read_bytes())
    subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True, timeout=30)
    fault = peer("answer", cert=certificate)
    set_env(TWILIO_API_BASE_URL=fault.url, REQUESTS_CA_BUNDLE=str(directory))
    assert transport.http_environment().ca_bundle == str(directory)
    assert _send().sid.startswith("SM") and fault.requests == 1


# ---------------------------------------------------------------- storage: azure-core says which side it broke on


@pytest.mark.parametrize("mode,error", [("not_tls", "ServiceRequestError"), ("close_after_request",
                                                                            "ServiceResponseError"),
                                        ("hang_after_request", "ServiceResponseError")])
def test_table_operations_report_whether_the_request_was_sent(peer: Any, set_env: Any, mode: str,
                                                              error: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.core import exceptions

    monkeypatch.setattr(storage, "STORAGE_TIMEOUT_SECONDS", 1)
    monkeypatch.setattr(storage, "STORAGE_RETRIES", 0)
    fault = peer(mode)
    scheme = "https" if mode == "not_tls" else "http"
    set_env(AzureWebJobsStorage=f"DefaultEndpointsProtocol={scheme};AccountName=devstoreaccount1;"
                                f"AccountKey=bm9uZQ==;TableEndpoint={scheme}://127.0.0.1:{fault.port}/devstoreaccount1;")
    with pytest.raises(getattr(exceptions, error)):
        storage.table("sends")
