"""The outbound functions as the host indexes them: bindings, the queue adapters, status callbacks, bad input."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared import ledger
from tests.conftest import signed_form_request
from tests.outbound_helpers import poison, row, sms_queue, twilio_unreachable

TO = "+14155550100"


def bindings(indexed_functions: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return json.loads(indexed_functions[name].get_function_json())["bindings"]


@pytest.mark.parametrize("name,queue", [("send_sms", "%SMS_QUEUE%"), ("place_call", "%CALL_QUEUE%")])
def test_queue_functions_bind_to_the_queue_settings(indexed_functions: dict[str, Any], name: str, queue: str) -> None:
    [binding] = bindings(indexed_functions, name)
    assert binding == {"name": "msg", "type": "queueTrigger", "direction": "IN", "queueName": queue,
                       "connection": "AzureWebJobsStorage"} | {k: v for k, v in binding.items()
                                                                    if k not in ("name", "type", "direction",
                                                                                 "queueName", "connection")}


@pytest.mark.parametrize("name,route", [("status_message", "status/message"), ("status_call", "status/call")])
def test_status_routes_are_post_only(indexed_functions: dict[str, Any], name: str, route: str) -> None:
    trigger = next(b for b in bindings(indexed_functions, name) if b["type"] == "httpTrigger")
    assert trigger["route"] == route and [m.lower() for m in trigger["methods"]] == ["post"]


def invoke_queue(indexed_functions: dict[str, Any], name: str, body: bytes, *, qid: str = "qid-1",
                 dequeue_count: int = 1) -> None:
    fn = indexed_functions[name].get_user_function()
    fn(msg=QueueMessage(id=qid, body=body, dequeue_count=dequeue_count))


def test_queue_function_sends_through_shared(indexed_functions: dict[str, Any], outbound_env: Any) -> None:
    invoke_queue(indexed_functions, "send_sms", json.dumps({"id": "fn-1", "to": TO, "body": "hi"}).encode())
    assert [r.send_id for r in outbound_env.created()] == ["fn-1"]


def test_queue_function_raises_on_transient_so_the_host_retries(indexed_functions: dict[str, Any],
                                                               outbound_env: Any) -> None:
    with twilio_unreachable(), pytest.raises(Exception, match="cannot connect"):  # observed not sent
        invoke_queue(indexed_functions, "send_sms", json.dumps({"id": "fn-2", "to": TO, "body": "x"}).encode())
    invoke_queue(indexed_functions, "send_sms", json.dumps({"id": "fn-2", "to": TO, "body": "x"}).encode(),
                 dequeue_count=2)
    assert len(outbound_env.created()) == 1


# ---------------------------------------------------------------- status callbacks


def callback(call_function: Any, path: str, query: str, params: dict[str, str]) -> Any:
    response, _ = call_function(path.strip("/").replace("/", "_").replace("api_", ""),
                                signed_form_request(path, params, query=query))
    return response


def test_status_callback_updates_the_row_and_answers_204(call_function: Any, outbound_env: Any) -> None:
    from shared import sender

    sid = sender.process_sms(json.dumps({"id": "cb-1", "to": TO, "body": "x"}), "q", 1).sid
    for status in ("sent", "delivered"):
        response = callback(call_function, "/api/status/message", "id=cb-1",
                            {"MessageSid": sid, "MessageStatus": status, "To": TO})
        assert response.status_code == 204 and response.get_body() == b""
    assert row("sms", "cb-1").status == "delivered"


def test_late_sent_callback_does_not_overwrite_delivered(call_function: Any, outbound_env: Any) -> None:
    ledger.try_claim("sms", "cb-2")
    for status in ("delivered", "sent", "queued"):
        callback(call_function, "/api/status/message", "id=cb-2", {"MessageSid": "SM" + "1" * 32,
                                                                  "MessageStatus": status})
    stored = row("sms", "cb-2")
    assert stored.status == "delivered" and stored.sid == "SM" + "1" * 32


def test_call_status_callback_records_error_code(call_function: Any, outbound_env: Any) -> None:
    ledger.try_claim("call", "cb-3")
    for status in ("initiated", "ringing", "failed"):
        callback(call_function, "/api/status/call", "id=cb-3",
                 {"CallSid": "CA" + "2" * 32, "CallStatus": status, **({"ErrorCode": "13224"} if status == "failed"
                                                                        else {})})
    stored = row("call", "cb-3")
    assert stored.status == "failed" and stored.fields["error_code"] == "13224"


@pytest.mark.parametrize("query,status", [("", 400), ("id=", 400), ("id=no%20such", 400), ("id=never-sent", 404)])
def test_status_callback_without_a_known_id_is_4xx(call_function: Any, outbound_env: Any, query: str,
                                                   status: int) -> None:
    response = callback(call_function, "/api/status/message", query, {"MessageStatus": "sent"})
    assert response.status_code == status


def test_status_callback_with_a_bad_signature_is_403(call_function: Any, outbound_env: Any) -> None:
    ledger.try_claim("sms", "cb-4")
    request = signed_form_request("/api/status/message", {"MessageStatus": "delivered"}, query="id=cb-4",
                                  token="wrong-token")
    response, _ = call_function("status_message", request)
    assert response.status_code == 403 and row("sms", "cb-4").status == "claimed"


# ---------------------------------------------------------------- bad input corpus


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode()).decode().encode()


OK = {"to": TO, "body": "x"}
BAD_SMS: list[bytes] = [
    b"", b" ", b"\n", b"null", b"true", b"42", b'"a string"', b"[]", b"[{}]", b"{", b'{"to": }', b"{'to': 1}",
    b"\xff\xfe\xfd", b'{"to": "\xc3\x28"}', b"\x00\x01\x02", b"bm90IGpzb24=", b"====", b"YWJj*", _b64("[1]"),
    base64.b64encode(b"\xff\xfe"),
    json.dumps({}).encode(), json.dumps({"body": "x"}).encode(), json.dumps({"to": None, "body": "x"}).encode(),
    json.dumps({"to": ["+14155550100"], "body": "x"}).encode(), json.dumps({"to": "+1", "body": "x"}).encode(),
    json.dumps({"to": "+1415555010012345", "body": "x"}).encode(), json.dumps({"to": "tel:+14155550100",
                                                                             "body": "x"}).encode(),
    json.dumps({"to": TO, "body": 5}).encode(), json.dumps({"to": TO, "body": "x" * 1601}).encode(),
    json.dumps({"to": TO, "media_urls": ["https://e.com/a"] * 11}).encode(),
    json.dumps({"to": TO, "media_urls": ["javascript:alert(1)"]}).encode(),
    json.dumps({"to": TO, "media_urls": [{"url": "https://e.com"}]}).encode(),
    json.dumps({**OK, "extra": 1}).encode(), json.dumps({**OK, "From": "+15005550006"}).encode(),
    json.dumps({**OK, "id": ""}).encode(), json.dumps({**OK, "id": 7}).encode(),
    json.dumps({**OK, "id": "a/b"}).encode(), json.dumps({**OK, "send_at": 1700000000}).encode(),
    json.dumps({**OK, "send_at": "2030-13-01T00:00:00Z"}).encode(), json.dumps({**OK, "from": "me"}).encode(),
    json.dumps({**OK, "twiml": "<Response/>"}).encode(), _b64(json.dumps({**OK, "to": "123"})),
    json.dumps({**OK, "body": "x" * 70000}).encode(), b"{" * 5000 + b"}" * 5000, b"[" * 100000,
]
BAD_CALL: list[bytes] = [
    json.dumps({"to": TO}).encode(), json.dumps({"to": TO, "say": "x", "twiml": "<Response/>"}).encode(),
    json.dumps({"to": TO, "twiml": "<Response/>", "url": "https://e.com"}).encode(),
    json.dumps({"to": TO, "twiml": "<!DOCTYPE x [<!ENTITY a 'b'>]><Response>&a;</Response>"}).encode(),
    json.dumps({"to": TO, "say": ""}).encode(), json.dumps({"to": TO, "say": "x", "timeout": 601}).encode(),
    json.dumps({"to": TO, "url": "http://e.com"}).encode(), json.dumps({"to": TO, "say": "x", "body": "y"}).encode(),
]


def test_bad_input_corpus_is_dead_lettered_with_reasons_and_never_sent(indexed_functions: dict[str, Any],
                                                                      outbound_env: Any) -> None:
    assert len(BAD_SMS) + len(BAD_CALL) >= 40
    for i, body in enumerate(BAD_SMS):
        invoke_queue(indexed_functions, "send_sms", body, qid=f"bad-sms-{i}")  # must not raise
    for i, body in enumerate(BAD_CALL):
        invoke_queue(indexed_functions, "place_call", body, qid=f"bad-call-{i}")
    assert outbound_env.requests == []
    import os

    for queue, corpus in ((sms_queue(), BAD_SMS), (os.environ["CALL_QUEUE"], BAD_CALL)):
        letters = poison(queue)
        assert len(letters) == len(corpus)
        for letter in letters:
            assert letter["error"]["code"] == "invalid_message"
            assert ": " in letter["error"]["reason"] and letter["error"]["field"]
        originals = sorted(base64.b64decode(e["message"]) if e.get("message_base64") else
                           e["message"].encode() for e in letters if not e.get("message_truncated"))
        assert originals == sorted(b for b in corpus if len(b) < 50000)


@pytest.mark.parametrize("suffix", ["%0A", "%0D%0A", "%00", "%2F", "%23", "%3F", "%5C", "%C2%85", "%20"])
def test_status_callback_id_must_fully_match_the_id_pattern(call_function: Any, outbound_env: Any,
                                                            suffix: str) -> None:
    ident = f"cb-5-{abs(hash(suffix)) % 10 ** 6}"
    ledger.try_claim("sms", ident)
    response = callback(call_function, "/api/status/message", f"id={ident}{suffix}",
                        {"MessageSid": "SM" + "3" * 32, "MessageStatus": "delivered"})
    assert response.status_code == 400 and row("sms", ident).status == "claimed"
