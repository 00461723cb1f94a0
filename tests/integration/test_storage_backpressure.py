"""Storage backpressure (503 Server Busy, 500 Operation Timeout) is transient: retried, after ``Retry-After`` when
Storage sends one, and never turned into a second Twilio send. Azurite sits behind a proxy that injects them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Iterator

import pytest

from shared import ledger, sender, storage
from shared.sender import RetryLaterError
from tests.peers.azurite import ACCOUNT, KEY
from tests.peers.storage_proxy import StorageProxy


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sms(ident: str) -> str:
    return json.dumps({"id": ident, "to": "+14155550100", "body": "hello"})


def sends_insert(method: str, path: str) -> bool:
    return method == "POST" and path.split("?")[0].endswith("/sends")


def row_update(ident: str) -> Callable[[str, str], bool]:
    return lambda method, path: method in ("PATCH", "MERGE") and ident in path


@pytest.fixture
def throttled(outbound_env: Any, azurite: Any, set_env: Callable[..., None]) -> Iterator[StorageProxy]:
    proxy = StorageProxy(azurite.table_port).start()
    set_env(AzureWebJobsStorage=(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:{proxy.port}/{ACCOUNT};"))
    storage.reset_clients()
    storage.table(ledger.TABLE)  # tables exist before faults are injected
    yield proxy
    proxy.stop()


def test_a_503_with_retry_after_is_retried_after_that_delay_and_the_send_goes_out_once(
        throttled: StorageProxy, outbound_env: Any) -> None:
    ident = uid("busy")
    throttled.fail(sends_insert, status=503, code="ServerBusy", retry_after="1", times=1)
    assert sender.process_sms(sms(ident), "q", 1).result == "sent"
    inserts = [s for s in throttled.seen if sends_insert(s.method, s.path)]
    assert inserts[0].status == 503 and inserts[1].status in (201, 204)  # 204: inserted, no body asked for
    assert inserts[1].at - inserts[0].at >= 1.0  # Retry-After honoured, not the 0.5 s back-off
    assert len(outbound_env.created()) == 1


def test_storage_busy_on_the_claim_is_retried_later_and_nothing_reaches_twilio(
        throttled: StorageProxy, outbound_env: Any) -> None:
    ident = uid("timeout")
    throttled.fail(sends_insert, status=500, code="OperationTimedOut")
    with pytest.raises(RetryLaterError) as raised:
        sender.process_sms(sms(ident), "q", 1)
    assert raised.value.reason.startswith("storage busy: 500 OperationTimedOut")
    assert outbound_env.created() == []
    throttled.heal()
    assert sender.process_sms(sms(ident), "q", 2).result == "sent"
    assert len(outbound_env.created()) == 1


def test_a_retry_after_longer_than_a_thread_should_wait_goes_back_to_the_queue_at_once(
        throttled: StorageProxy, outbound_env: Any) -> None:
    throttled.fail(sends_insert, status=503, code="ServerBusy", retry_after="120")
    started = time.monotonic()
    with pytest.raises(RetryLaterError) as raised:
        sender.process_sms(sms(uid("long")), "q", 1)
    assert time.monotonic() - started < storage.STORAGE_RETRY_AFTER_MAX_SECONDS
    assert raised.value.reason == "storage busy: 503 ServerBusy, Retry-After 120 s"
    assert len([s for s in throttled.seen if sends_insert(s.method, s.path)]) == 1
    assert outbound_env.created() == []


def test_a_send_twilio_accepted_is_not_sent_again_when_recording_it_hits_storage_backpressure(
        throttled: StorageProxy, outbound_env: Any) -> None:
    ident = uid("recorded")
    throttled.fail(row_update(ident), status=503, code="ServerBusy", retry_after="0")
    assert sender.process_sms(sms(ident), "q", 1).result == "sent"  # it went out: acknowledged
    assert len(outbound_env.created()) == 1
    throttled.heal()
    with pytest.raises(RetryLaterError):  # a redelivery finds the claim in flight, never sends blindly
        sender.process_sms(sms(ident), "q", 2)
    assert len(outbound_env.created()) == 1
    assert ledger.get("sms", ident).status == "claimed"


@pytest.mark.parametrize("mode", ["refused", "close_after_request", "hang_after_request"])
def test_tables_unreachable_on_the_last_try_dead_letters_with_the_reason_while_the_queue_works(
        outbound_env: Any, set_env: Any, monkeypatch: Any, mode: str) -> None:
    """The tables down (refused, reset mid-request, or silent), the queues up: on the last try the message goes to
    poison with our reason (the host never poisons it itself), and nothing is sent."""
    import socket

    from tests.outbound_helpers import poison, sms_queue
    from tests.peers.fault_peer import FaultPeer

    if mode == "refused":
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
    else:
        peer = FaultPeer(mode)
        monkeypatch.setattr(peer, "mode", mode)
        port = peer.port
    connection = storage.connection_string().replace(f"127.0.0.1:{_table_port()}", f"127.0.0.1:{port}")
    monkeypatch.setattr(storage, "STORAGE_TIMEOUT_SECONDS", 1)
    monkeypatch.setattr(storage, "STORAGE_RETRIES", 0)
    set_env(AzureWebJobsStorage=connection)
    last = sender.queue_settings().max_dequeue_count
    ident = f"tables-down-{mode}"
    outcome = sender.process_sms(json.dumps({"id": ident, "to": "+14155550100", "body": "x"}), "q", last)
    assert outcome.result == "dead_lettered" and outcome.code == "retries_exhausted"
    [letter] = poison(sms_queue())
    assert letter["error"]["reason"].startswith("storage") and letter["error"]["id"] == ident
    assert outbound_env.created() == []


def _table_port() -> int:
    import re

    from shared import storage

    return int(re.search(r"TableEndpoint=http://127\.0\.0\.1:(\d+)/", storage.connection_string()).group(1))
