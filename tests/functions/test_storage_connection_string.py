"""An ``AzureWebJobsStorage`` connection string no client can use (here: an AccountKey that is not base64) is
storage trouble like any other (issue 20, item 12): the STOP, status and AMD webhooks answer 503 (Twilio retries)
instead of an unlogged 500, a send is retried, and one clear log line names the setting, never its key."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import pytest
from azure.functions.queue import QueueMessage

from shared import sender, storage
from tests.conftest import TEST_ACCOUNT_SID, TEST_FROM, http_request, signed_form_request
from tests.secret_scan import register_secret

BAD_KEY = register_secret("not-base64!!")  # the session-wide scan fails the run if any record holds it
BAD_CONNECTION = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + BAD_KEY + ";"
                  "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;")
CALLER = "+14155550123"


def _stop_sms() -> tuple[str, Any]:
    return "sms", signed_form_request("/api/sms", {"From": CALLER, "To": TEST_FROM, "Body": "STOP",
                                                   "MessageSid": "SM" + "a" * 32, "AccountSid": TEST_ACCOUNT_SID})


def _status_callback() -> tuple[str, Any]:
    return "status_message", signed_form_request(
        "/api/status/message", {"MessageStatus": "delivered", "MessageSid": "SM" + "b" * 32,
                                "AccountSid": TEST_ACCOUNT_SID}, query="id=bad-key-1")


def _amd_callback() -> tuple[str, Any]:
    return "status_amd", signed_form_request(
        "/api/status/amd", {"AnsweredBy": "machine_end_beep", "CallSid": "CA" + "c" * 32,
                            "AccountSid": TEST_ACCOUNT_SID}, query="id=bad-key-2")


def _naming_the_setting(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    return [text for text in texts if "AzureWebJobsStorage" in text]


def test_stop_status_and_amd_webhooks_answer_503_and_one_log_line_names_the_setting_never_the_key(
        call_function: Callable[..., Any], set_env: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    set_env(AzureWebJobsStorage=BAD_CONNECTION)
    for name, request in (_stop_sms(), _status_callback(), _amd_callback(), _stop_sms()):
        response, _ = call_function(name, request)
        assert response.status_code == 503, (name, response.get_body())
    health, _ = call_function("health", http_request("GET", "/api/health"))
    assert health.status_code == 200 and json.loads(health.get_body())["storage"] is False
    [line] = _naming_the_setting(caplog)
    assert "AccountKey is not base64" in line
    assert all(BAD_KEY not in f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


def test_send_with_an_unusable_connection_string_is_retried_as_storage_trouble(
        indexed_functions: dict[str, Any], set_env: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    set_env(AzureWebJobsStorage=BAD_CONNECTION)
    body = json.dumps({"id": "bad-key-send", "to": CALLER, "body": "hi"}).encode()
    send = indexed_functions["send_sms"].get_user_function()
    with pytest.raises(sender.RetryLaterError, match="storage") as raised:
        send(msg=QueueMessage(id="q-bad-key", body=body, dequeue_count=1))
    assert storage.is_storage_error(raised.value.__cause__)
    assert isinstance(raised.value.__cause__, storage.StorageSettingError)
    assert len(_naming_the_setting(caplog)) == 1
    assert BAD_KEY not in caplog.text


ENDPOINTS = "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"


@pytest.mark.parametrize("connection,problem", [
    ("just-some-words-" + BAD_KEY, "not a list of Name=value pairs"),
    ("DefaultEndpointsProtocol=https;AccountKey=bm9uZQ==", "names no AccountName"),
    ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=;" + ENDPOINTS,
     "neither an AccountKey nor a SharedAccessSignature"),
])
def test_other_unusable_connection_strings_are_a_503_with_one_line_saying_why(
        call_function: Callable[..., Any], set_env: Callable[..., None], caplog: pytest.LogCaptureFixture,
        connection: str, problem: str) -> None:
    set_env(AzureWebJobsStorage=connection)
    for _ in range(2):
        response, _ = call_function(*_stop_sms())
        assert response.status_code == 503
    [line] = _naming_the_setting(caplog)
    assert problem in line and BAD_KEY not in caplog.text


@pytest.mark.parametrize("connection", [
    storage.DEVELOPMENT_CONNECTION,
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bm9uZQ==;EndpointSuffix=core.windows.net",
    "BlobEndpoint=https://acct.blob.core.windows.net/;" + ENDPOINTS + "SharedAccessSignature=sv=2022-11-02&sig=a%3D",
])
def test_usable_connection_strings_are_not_reported(connection: str) -> None:
    assert storage.connection_problem(connection) == ""
