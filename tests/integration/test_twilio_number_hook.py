"""The azd post-provision hook points the Twilio number at the deployed functions (against the Twilio fake)."""

from __future__ import annotations

import importlib.util
import io
from typing import Any

import pytest

from tests.conftest import ROOT, TEST_ACCOUNT_SID, TEST_FROM
from tests.twilio_signing import TEST_AUTH_TOKEN

HOOK = ROOT / "infra" / "hooks" / "configure_twilio_number.py"
VOICE = "https://func-abc.azurewebsites.net/api/voice"
SMS = "https://func-abc.azurewebsites.net/api/sms"


def load_hook() -> Any:
    spec = importlib.util.spec_from_file_location("configure_twilio_number", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def azd_env(fake: Any, **extra: str) -> dict[str, str]:
    return {"TWILIO_FROM_NUMBER": TEST_FROM, "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
            "VOICE_WEBHOOK_URL": VOICE, "SMS_WEBHOOK_URL": SMS, "TWILIO_API_BASE_URL": fake.base_url, **extra}


def run(env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    return load_hook().configure(env, out), out.getvalue()


def test_hook_sets_voice_and_sms_urls_and_prints_the_change(twilio_fake: Any) -> None:
    sid = twilio_fake.add_phone_number(TEST_FROM, voice_url="https://old.example.com/voice")
    code, out = run(azd_env(twilio_fake))
    assert code == 0
    number = twilio_fake.phone_numbers[sid]
    assert (number["voice_url"], number["sms_url"], number["voice_method"], number["sms_method"]) == \
        (VOICE, SMS, "POST", "POST")
    assert f"voice_url: https://old.example.com/voice -> {VOICE}" in out
    assert f"sms_url: (none) -> {SMS}" in out
    assert TEST_AUTH_TOKEN not in out


def test_hook_is_idempotent_a_second_run_changes_nothing(twilio_fake: Any) -> None:
    twilio_fake.add_phone_number(TEST_FROM)
    assert run(azd_env(twilio_fake))[0] == 0
    updates = [r for r in twilio_fake.requests if r.kind == "number"]
    code, out = run(azd_env(twilio_fake))
    assert code == 0 and "already points at" in out
    assert [r for r in twilio_fake.requests if r.kind == "number"] == updates


@pytest.mark.parametrize("unset", ["TWILIO_FROM_NUMBER", "TWILIO_AUTH_TOKEN", "VOICE_WEBHOOK_URL"])
def test_hook_does_nothing_without_number_credentials_or_urls(twilio_fake: Any, unset: str) -> None:
    sid = twilio_fake.add_phone_number(TEST_FROM)
    code, out = run(azd_env(twilio_fake, **{unset: ""}))
    assert code == 0 and f"{unset}" in out and "not configured" in out
    assert twilio_fake.phone_numbers[sid]["voice_url"] is None


def test_hook_reports_a_number_the_account_does_not_have(twilio_fake: Any) -> None:
    code, out = run(azd_env(twilio_fake))
    assert code == 1 and "is not a number of account" in out


def test_hook_reports_wrong_credentials_without_echoing_them(twilio_fake: Any) -> None:
    twilio_fake.add_phone_number(TEST_FROM)
    code, out = run(azd_env(twilio_fake, TWILIO_AUTH_TOKEN="wrong-token-123"))
    assert code == 1 and "HTTP 401" in out and "wrong-token-123" not in out


def test_fake_phone_number_answers_are_valid_against_the_spec(twilio_fake: Any) -> None:
    import requests

    from tests.integration.test_twilio_contract import validator

    sid = twilio_fake.add_phone_number(TEST_FROM)
    auth = (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    base = f"{twilio_fake.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}"
    listed = requests.get(f"{base}/IncomingPhoneNumbers.json", params={"PhoneNumber": TEST_FROM}, auth=auth,
                          timeout=5).json()
    assert [n["sid"] for n in listed["incoming_phone_numbers"]] == [sid]
    for number in listed["incoming_phone_numbers"]:
        validator("api.v2010.account.incoming_phone_number").validate(number)
    updated = requests.post(f"{base}/IncomingPhoneNumbers/{sid}.json", data={"SmsUrl": SMS}, auth=auth, timeout=5)
    validator("api.v2010.account.incoming_phone_number").validate(updated.json())
    sent = requests.post(f"{base}/Messages.json", data={"To": "+14155550100", "From": TEST_FROM, "Body": "x"},
                         auth=auth, timeout=5).json()
    fetched = requests.get(f"{base}/Messages/{sent['sid']}.json", auth=auth, timeout=5)
    assert fetched.status_code == 200
    validator("api.v2010.account.message").validate(fetched.json())
    assert requests.get(f"{base}/Calls/{sent['sid']}.json", auth=auth, timeout=5).status_code == 404
