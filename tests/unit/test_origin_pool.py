"""``shared.transport.OriginPool``: the keep-alive connections every send's table and Twilio calls go through. It
must reuse a live connection, never write a request on one the server closed, and say exactly whether a failed
request may have been written (the sender's "may have been sent" classification rests on it)."""

from __future__ import annotations

import socket
from typing import Any, Iterator

import pytest

from shared import transport
from shared.transport import OriginPool, TransportError
from tests.peers.scripted_http import Reply, ScriptedHttpServer


@pytest.fixture
def server() -> Iterator[ScriptedHttpServer]:
    peer = ScriptedHttpServer()
    yield peer
    peer.stop()


@pytest.fixture
def direct(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    transport.reset_http_environment()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sequential_requests_share_one_kept_alive_connection(server: ScriptedHttpServer, direct: None) -> None:
    pool = OriginPool(server.url, timeout_seconds=2)
    answers = [pool.request("GET", f"/x/{i}", headers={}) for i in range(5)]
    assert [a.status for a in answers] == [200] * 5
    assert {s.connection for s in server.seen} == {1}


def test_a_connection_the_server_closed_is_never_reused(server: ScriptedHttpServer, direct: None) -> None:
    pool = OriginPool(server.url, timeout_seconds=2)
    server.script(Reply(close_after=True), Reply(status=201))
    assert pool.request("POST", "/first", body=b"a", headers={}).status == 200
    server.wait_closed(1)  # the server has closed its end of the kept-alive connection
    second = pool.request("POST", "/second", body=b"b", headers={})  # not an error: a fresh connection
    assert second.status == 201
    assert [s.connection for s in server.seen] == [1, 2] and [s.body for s in server.seen] == [b"a", b"b"]


def test_a_refused_connection_was_not_sent(direct: None) -> None:
    pool = OriginPool(f"http://127.0.0.1:{_free_port()}", timeout_seconds=2)
    with pytest.raises(TransportError) as info:
        pool.request("POST", "/x", body=b"a", headers={})
    assert info.value.sent is False


def test_no_answer_within_the_timeout_may_have_been_sent(server: ScriptedHttpServer, direct: None) -> None:
    pool = OriginPool(server.url, timeout_seconds=5)
    server.script(Reply(delay=1.0))
    with pytest.raises(TransportError) as info:
        pool.request("POST", "/slow", body=b"a", headers={}, timeout_seconds=0.2)
    assert info.value.sent is True and info.value.timed_out is True
    assert [s.body for s in server.seen] == [b"a"]  # the peer did get it


def test_a_connection_dropped_after_the_request_may_have_been_sent(server: ScriptedHttpServer,
                                                                    direct: None) -> None:
    pool = OriginPool(server.url, timeout_seconds=2)
    server.script(Reply(drop=True))
    with pytest.raises(TransportError) as info:
        pool.request("POST", "/x", body=b"a", headers={})
    assert info.value.sent is True and info.value.timed_out is False
    assert pool.request("GET", "/after", headers={}).status == 200  # the broken connection was not pooled


def test_headers_body_and_answer_pass_through_unchanged(server: ScriptedHttpServer, direct: None) -> None:
    pool = OriginPool(server.url, timeout_seconds=2)
    server.script(Reply(status=412, body=b'{"x": 1}', headers={"ETag": 'W/"datetime\'1\'"', "X-Ms-Error-Code": "Busy"}))
    answer = pool.request("PATCH", "/t(PartitionKey='a',RowKey='b')?$select=x", body=b"\xe2\x82\xac",
                          headers={"If-Match": "*", "Content-Type": "application/json"})
    assert (answer.status, answer.data) == (412, b'{"x": 1}')
    assert answer.headers.get("etag") == 'W/"datetime\'1\'"' and answer.headers["x-ms-error-code"] == "Busy"
    seen = server.seen[0]
    assert (seen.method, seen.path, seen.body) == ("PATCH", "/t(PartitionKey='a',RowKey='b')?$select=x",
                                                   b"\xe2\x82\xac")
    assert seen.headers["If-Match"] == "*"


def test_https_is_verified_against_requests_ca_bundle(keyvault: Any, monkeypatch: pytest.MonkeyPatch,
                                                      direct: None) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    transport.reset_http_environment()
    with pytest.raises(TransportError) as untrusted:  # certifi does not know the fake's CA
        OriginPool(keyvault.url, timeout_seconds=2).request("GET", "/secrets/x", headers={})
    assert untrusted.value.sent is False  # the TLS handshake failed before anything was written
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(keyvault.cert_path))
    transport.reset_http_environment()
    answer = OriginPool(keyvault.url, timeout_seconds=2).request("GET", "/secrets/x", headers={})
    assert 200 <= answer.status < 500  # an answer over verified TLS (the fake wants a token: 401)
