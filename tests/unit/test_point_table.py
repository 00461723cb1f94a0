"""``shared.point_table``: the send path's table calls. Against a scripted peer: how it signs (account key, SAS,
bearer token from the app's credential), which failures it retries (as azure-core does: never a write whose
answer was lost), and that a long Retry-After goes back to the queue at once."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError, ServiceRequestError, ServiceResponseError)

from shared import storage, transport
from shared.point_table import (PointTableClient, TableAccount, UnsupportedConnectionError,
                                account_from_connection_string)
from shared.transport import OriginPool
from tests.peers.scripted_http import Reply, ScriptedHttpServer

KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedHttpServer]:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    transport.reset_http_environment()
    peer = ScriptedHttpServer()
    yield peer
    peer.stop()


@dataclass
class _Token:
    token: str
    expires_on: int


class CountingCredential:
    def __init__(self, lifetime: int = 3600) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.lifetime = lifetime

    def get_token(self, *scopes: str, **_: Any) -> _Token:
        self.calls.append(scopes)
        return _Token(f"token-{len(self.calls)}", int(time.time()) + self.lifetime)


def client(server: ScriptedHttpServer, account: TableAccount | None = None, *, retries: int = 3,
           sleeps: list[float] | None = None) -> PointTableClient:
    account = account or TableAccount(f"{server.url}/devstoreaccount1", "devstoreaccount1",
                                      key=base64.b64decode(KEY))
    record = sleeps if sleeps is not None else []
    return PointTableClient(account, "sends", pool=OriginPool(account.endpoint, timeout_seconds=2), retries=retries,
                            backoff_seconds=0.5, backoff_max_seconds=4, retry_after_max_seconds=10,
                            sleep=record.append)


def row(**values: Any) -> bytes:
    return json.dumps({"odata.metadata": "x", "PartitionKey": "p", "RowKey": "r", **values}).encode()


def test_account_key_signs_shared_key_lite_over_the_path_as_sent(server: ScriptedHttpServer) -> None:
    import hashlib
    import hmac

    server.script(Reply(body=row(status="sent"), headers={"ETag": 'W/"1"'}))
    client(server).get_entity("sms-0a", "o'brien+1:x")
    seen = server.seen[0]
    assert seen.path == "/devstoreaccount1/sends(PartitionKey='sms-0a',RowKey='o%27%27brien%2B1%3Ax')"
    signed = f"{seen.headers['x-ms-date']}\n/devstoreaccount1{seen.path}".encode()
    expected = base64.b64encode(hmac.new(b"k" * 32, signed, hashlib.sha256).digest()).decode()
    assert seen.headers["Authorization"] == f"SharedKeyLite devstoreaccount1:{expected}"


def test_a_sas_connection_string_sends_the_token_and_no_authorization(server: ScriptedHttpServer) -> None:
    account = account_from_connection_string(f"TableEndpoint={server.url}/acct;SharedAccessSignature=?sv=1&sig=abc")
    client(server, account).get_entity("p", "r")
    seen = server.seen[0]
    assert seen.path == "/acct/sends(PartitionKey='p',RowKey='r')?sv=1&sig=abc"
    assert "Authorization" not in seen.headers


def test_an_identity_sends_a_bearer_token_read_once_and_renewed_before_expiry(server: ScriptedHttpServer) -> None:
    credential = CountingCredential()
    account = TableAccount(server.url, "acct", credential=credential)
    table = client(server, account)
    for _ in range(3):
        table.get_entity("p", "r")
    assert [s.headers["Authorization"] for s in server.seen] == ["Bearer token-1"] * 3
    assert credential.calls == [("https://storage.azure.com/.default",)]
    credential.lifetime = 60  # the next token is within the renewal margin at once
    table._token = None
    table.get_entity("p", "r")
    table.get_entity("p", "r")
    assert len(credential.calls) == 3  # a token about to expire is never used


def test_connection_strings_without_a_key_or_sas_are_left_to_the_sdk() -> None:
    with pytest.raises(UnsupportedConnectionError):
        account_from_connection_string("DefaultEndpointsProtocol=https;AccountName=acct")
    parsed = account_from_connection_string("defaultendpointsprotocol=https;accountname=acct;accountkey=" + KEY +
                                            ";endpointsuffix=core.chinacloudapi.cn")
    assert parsed.endpoint == "https://acct.table.core.chinacloudapi.cn" and parsed.account == "acct"


def test_statuses_become_the_sdks_exceptions_with_the_service_error_code(server: ScriptedHttpServer) -> None:
    error = json.dumps({"odata.error": {"code": "EntityAlreadyExists",
                                        "message": {"value": "The specified entity already exists.\nRequestId:1"}}})
    server.script(Reply(404, b""), Reply(409, error.encode()),
                  Reply(412, b"", {"x-ms-error-code": "UpdateConditionNotSatisfied"}),
                  Reply(400, b"", {"x-ms-error-code": "InvalidInput"}))
    table = client(server)
    with pytest.raises(ResourceNotFoundError):
        table.get_entity("p", "r")
    with pytest.raises(ResourceExistsError) as exists:
        table.create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert exists.value.status_code == 409 and exists.value.error_code == "EntityAlreadyExists"
    assert str(exists.value).startswith("409 EntityAlreadyExists: The specified entity already exists.")
    with pytest.raises(ResourceModifiedError):
        table.update_entity({"PartitionKey": "p", "RowKey": "r", "a": 1}, etag='W/"1"',
                            match_condition=_if_not_modified())
    with pytest.raises(HttpResponseError) as bad:
        table.upsert_entity({"PartitionKey": "p", "RowKey": "r"})
    assert bad.value.status_code == 400 and bad.value.error_code == "InvalidInput"
    assert [s.headers.get("If-Match") for s in server.seen[2:]] == ['W/"1"', None]


def _if_not_modified() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def test_a_read_is_retried_on_503_after_the_retry_after_it_names(server: ScriptedHttpServer) -> None:
    sleeps: list[float] = []
    server.script(Reply(503, b"", {"Retry-After": "2"}), Reply(500, b""), Reply(body=row()))
    assert client(server, sleeps=sleeps).get_entity("p", "r")["RowKey"] == "r"
    assert len(server.seen) == 3 and sleeps == [2.0, 1.0]  # Retry-After, then azure-core's 0.5 * 2**1


def test_a_write_is_retried_on_503_but_not_on_429(server: ScriptedHttpServer) -> None:
    server.script(Reply(503, b""), Reply(204, b""))
    client(server).create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert len(server.seen) == 2
    server.script(Reply(429, b"", {"x-ms-error-code": "TooManyRequests"}))
    with pytest.raises(HttpResponseError) as info:
        client(server).create_entity({"PartitionKey": "p", "RowKey": "s"})
    assert info.value.status_code == 429 and len(server.seen) == 3
    assert storage.transient_reason(info.value) == "storage busy: 429 TooManyRequests"


def test_a_retry_after_longer_than_a_thread_should_wait_fails_at_once(server: ScriptedHttpServer) -> None:
    sleeps: list[float] = []
    server.script(Reply(503, b"", {"Retry-After": "120", "x-ms-error-code": "ServerBusy"}))
    with pytest.raises(HttpResponseError) as info:
        client(server, sleeps=sleeps).get_entity("p", "r")
    assert sleeps == [] and len(server.seen) == 1
    assert storage.transient_reason(info.value) == "storage busy: 503 ServerBusy, Retry-After 120 s"


def test_a_write_whose_answer_was_lost_is_not_sent_again(server: ScriptedHttpServer) -> None:
    server.script(Reply(drop=True))
    with pytest.raises(ServiceResponseError):
        client(server).create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert len(server.seen) == 1


def test_a_read_whose_answer_was_lost_is_retried(server: ScriptedHttpServer) -> None:
    server.script(Reply(drop=True), Reply(body=row(n=1)))
    assert client(server).get_entity("p", "r")["n"] == 1 and len(server.seen) == 2


def test_an_unreachable_service_is_retried_then_reported_as_unreachable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    account = TableAccount(f"http://127.0.0.1:{port}/devstoreaccount1", "devstoreaccount1", key=b"k")
    table = PointTableClient(account, "sends", pool=OriginPool(account.endpoint, timeout_seconds=1), retries=3,
                             backoff_seconds=0.5, backoff_max_seconds=4, retry_after_max_seconds=10,
                             sleep=sleeps.append)
    with pytest.raises(ServiceRequestError) as info:
        table.create_entity({"PartitionKey": "p", "RowKey": "r"})
    assert sleeps == [0.0, 1.0, 2.0]  # never reached the service: a write is safe to retry
    assert storage.is_storage_error(info.value)
    assert storage.transient_reason(info.value) == "storage unavailable: ServiceRequestError"


def test_a_value_no_table_can_hold_is_refused_before_sending(server: ScriptedHttpServer) -> None:
    with pytest.raises(TypeError, match="'nested'"):
        client(server).create_entity({"PartitionKey": "p", "RowKey": "r", "nested": {"a": 1}})
    assert server.seen == []
