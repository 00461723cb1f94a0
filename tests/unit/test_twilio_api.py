"""The Twilio client: one per process, pointed at TWILIO_API_BASE_URL, a timeout on every request, and errors
classified into what the sender may do next."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from shared import twilio_api
from shared.outbound import validate
from shared.twilio_api import AuthFailedError, PermanentTwilioError, TransientTwilioError, classify
from tests.conftest import TEST_FROM

TO = "+14155550100"


@pytest.mark.parametrize("status,code,cls,maybe_sent", [
    (400, 21211, PermanentTwilioError, None), (400, 21610, PermanentTwilioError, None),
    (400, 21614, PermanentTwilioError, None), (400, 21408, PermanentTwilioError, None),
    (404, 20404, PermanentTwilioError, None), (401, 20003, AuthFailedError, None),
    (403, 20003, AuthFailedError, None), (429, 20429, TransientTwilioError, False),
    (500, None, TransientTwilioError, True), (503, 20503, TransientTwilioError, True),
    (502, None, TransientTwilioError, True), (504, None, TransientTwilioError, True),
])
def test_rest_errors_are_classified(status: int, code: int | None, cls: type, maybe_sent: bool | None) -> None:
    error = classify(TwilioRestException(status, "https://api.twilio.com/x", "msg to +14155550100", code, "POST"))
    assert type(error) is cls and error.http_status == status and error.code == code
    assert "+14155550100" not in error.reason  # numbers are masked in stored reasons
    if maybe_sent is not None:
        assert error.maybe_sent is maybe_sent


def test_one_client_per_process_with_the_base_url(twilio_fake: Any) -> None:
    first = twilio_api.get_client()
    assert twilio_api.get_client() is first and first.api.base_url == twilio_fake.base_url


def test_every_request_carries_the_timeout(twilio_fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    seen: list[Any] = []
    real_send = requests.Session.send

    def send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("timeout"))
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    message = validate("sms", {"id": "t1", "to": TO, "body": "x"})
    twilio_api.send_sms(message, from_=TEST_FROM, messaging_service_sid=None)  # type: ignore[arg-type]
    twilio_api.place_call(validate("call", {"id": "t2", "to": TO, "url": "https://e.com/x"}),  # type: ignore[arg-type]
                          from_=TEST_FROM)
    assert seen == [2.0, 2.0]


def test_slow_twilio_times_out_as_maybe_sent(twilio_fake: Any) -> None:
    twilio_fake.fail_next("slow")
    with pytest.raises(TransientTwilioError) as info:
        twilio_api.send_sms(validate("sms", {"id": "t3", "to": TO, "body": "x"}),  # type: ignore[arg-type]
                            from_=TEST_FROM, messaging_service_sid=None)
    assert info.value.maybe_sent is True and "no answer within 2 s" in info.value.reason


def test_connection_refused_is_not_sent(set_env: Any) -> None:
    set_env(TWILIO_API_BASE_URL="http://127.0.0.1:9", TWILIO_HTTP_TIMEOUT_SECONDS="2")
    with pytest.raises(TransientTwilioError) as info:
        twilio_api.send_sms(validate("sms", {"id": "t4", "to": TO, "body": "x"}),  # type: ignore[arg-type]
                            from_=TEST_FROM, messaging_service_sid=None)
    assert info.value.maybe_sent is False


def test_importing_the_module_loads_no_sdk() -> None:
    import subprocess

    code = ("import sys, shared.twilio_api, shared.sender, shared.ledger; "
            "print([m for m in sys.modules if m.startswith(('twilio.rest', 'azure.data', 'azure.storage'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(__import__('tests.conftest', fromlist=['ROOT']).ROOT))
    assert out.stdout.strip() == "[]", out.stderr
