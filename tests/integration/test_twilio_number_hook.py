"""The azd post-provision hook points the Twilio number at the deployed functions (against the Twilio fake).

Issue 20 items 3-4: the hook uses the standard library only (a system python3 has no `requests`); "configured"
means our URLs *and* POST; an application or trunk SID on the number (Twilio then ignores the URLs) is reported,
and cleared only with TWILIO_NUMBER_CLEAR_OVERRIDES=true; only the exact number is touched, though Twilio's list
filter matches partial numbers. tests/infra/test_hooks.py runs the hook through azure.yaml with a stripped PATH.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import sys
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
    assert code == 1 and "is not a number of the account" in out


def test_hook_imports_nothing_but_the_standard_library_and_reads_as_python_3_8() -> None:
    """A system python3 has no third-party packages, and may be older than the app's (macOS ships 3.9)."""
    tree = ast.parse(HOOK.read_text(), feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported and imported - {"__future__"} <= set(sys.stdlib_module_names), imported


@pytest.mark.parametrize("method_field", ["voice_method", "sms_method"])
def test_hook_reconfigures_a_number_whose_urls_match_but_whose_method_is_get(twilio_fake: Any,
                                                                           method_field: str) -> None:
    """Our routes answer POST only: a GET webhook would get 404 although the URL is right."""
    sid = twilio_fake.add_phone_number(TEST_FROM, voice_url=VOICE, sms_url=SMS, **{method_field: "GET"})
    code, out = run(azd_env(twilio_fake))
    assert code == 0 and "already points" not in out
    assert twilio_fake.phone_numbers[sid][method_field] == "POST"
    assert f"{method_field}: GET -> POST" in out
    assert (twilio_fake.phone_numbers[sid]["voice_url"], twilio_fake.phone_numbers[sid]["sms_url"]) == (VOICE, SMS)


OVERRIDES = {"voice_application_sid": "AP" + "1" * 32, "sms_application_sid": "AP" + "2" * 32,
             "trunk_sid": "TK" + "3" * 32}


@pytest.mark.parametrize("field", sorted(OVERRIDES))
def test_hook_says_when_an_application_or_trunk_makes_twilio_ignore_the_urls(twilio_fake: Any, field: str) -> None:
    sid = twilio_fake.add_phone_number(TEST_FROM, voice_url=VOICE, sms_url=SMS, **{field: OVERRIDES[field]})
    code, out = run(azd_env(twilio_fake))
    assert code == 1
    assert f"has {field} {OVERRIDES[field]}" in out and "TWILIO_NUMBER_CLEAR_OVERRIDES" in out
    assert twilio_fake.phone_numbers[sid][field] == OVERRIDES[field]  # not cleared without the flag


@pytest.mark.parametrize("field", sorted(OVERRIDES))
def test_hook_clears_an_application_or_trunk_only_when_asked(twilio_fake: Any, field: str) -> None:
    sid = twilio_fake.add_phone_number(TEST_FROM, voice_url=VOICE, sms_url=SMS, **{field: OVERRIDES[field]})
    code, out = run(azd_env(twilio_fake, TWILIO_NUMBER_CLEAR_OVERRIDES="true"))
    assert code == 0, out
    assert twilio_fake.phone_numbers[sid][field] is None
    assert f"{field}: {OVERRIDES[field]} -> (cleared" in out
    assert run(azd_env(twilio_fake, TWILIO_NUMBER_CLEAR_OVERRIDES="true"))[0] == 0  # and then it is configured


def test_hook_touches_only_the_exact_number_not_a_partial_match(twilio_fake: Any) -> None:
    """Twilio's PhoneNumber filter matches partial numbers: +1 + TEST_FROM's digits also contains them."""
    longer = "+1" + TEST_FROM[1:]
    other = twilio_fake.add_phone_number(longer)
    code, out = run(azd_env(twilio_fake))
    assert code == 1 and "is not a number of the account" in out and longer in out
    assert twilio_fake.phone_numbers[other]["voice_url"] is None

    mine = twilio_fake.add_phone_number(TEST_FROM)  # listed after the partial match
    code, out = run(azd_env(twilio_fake))
    assert code == 0, out
    assert twilio_fake.phone_numbers[mine]["voice_url"] == VOICE
    assert twilio_fake.phone_numbers[other]["voice_url"] is None


def test_fake_lists_partial_matches_as_twilio_does(twilio_fake: Any) -> None:
    import requests

    twilio_fake.add_phone_number(TEST_FROM)
    twilio_fake.add_phone_number("+14155550123")
    base = f"{twilio_fake.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/IncomingPhoneNumbers.json"
    listed = requests.get(base, params={"PhoneNumber": "555"}, auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN), timeout=5)
    assert sorted(n["phone_number"] for n in listed.json()["incoming_phone_numbers"]) == \
        sorted([TEST_FROM, "+14155550123"])


def test_hook_reports_twilio_unreachable_without_a_traceback(twilio_fake: Any) -> None:
    code, out = run(azd_env(twilio_fake, TWILIO_API_BASE_URL="http://127.0.0.1:9"))
    assert code == 1 and "Twilio unreachable (ConnectionRefusedError)" in out


def test_hook_reports_wrong_credentials_without_echoing_them(twilio_fake: Any) -> None:
    twilio_fake.add_phone_number(TEST_FROM)
    code, out = run(azd_env(twilio_fake, TWILIO_AUTH_TOKEN="wrong-token-123"))
    assert code == 1 and "HTTP 401" in out and "wrong-token-123" not in out


def test_fake_phone_number_answers_are_valid_against_the_spec(twilio_fake: Any) -> None:
    import requests

    from tests.integration.test_twilio_contract import validator

    sid = twilio_fake.add_phone_number(TEST_FROM, voice_application_sid=OVERRIDES["voice_application_sid"],
                                       sms_application_sid=OVERRIDES["sms_application_sid"],
                                       trunk_sid=OVERRIDES["trunk_sid"], voice_method="GET")
    auth = (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    base = f"{twilio_fake.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}"
    listed = requests.get(f"{base}/IncomingPhoneNumbers.json", params={"PhoneNumber": TEST_FROM}, auth=auth,
                          timeout=5).json()
    assert [n["sid"] for n in listed["incoming_phone_numbers"]] == [sid]
    for number in listed["incoming_phone_numbers"]:
        validator("api.v2010.account.incoming_phone_number").validate(number)
    updated = requests.post(f"{base}/IncomingPhoneNumbers/{sid}.json", data={"SmsUrl": SMS}, auth=auth, timeout=5)
    validator("api.v2010.account.incoming_phone_number").validate(updated.json())
    cleared = requests.post(f"{base}/IncomingPhoneNumbers/{sid}.json", auth=auth, timeout=5,
                            data={"VoiceApplicationSid": "", "SmsApplicationSid": "", "TrunkSid": ""}).json()
    assert (cleared["voice_application_sid"], cleared["sms_application_sid"], cleared["trunk_sid"]) == \
        (None, None, None)
    validator("api.v2010.account.incoming_phone_number").validate(cleared)
    sent = requests.post(f"{base}/Messages.json", data={"To": "+14155550100", "From": TEST_FROM, "Body": "x"},
                         auth=auth, timeout=5).json()
    fetched = requests.get(f"{base}/Messages/{sent['sid']}.json", auth=auth, timeout=5)
    assert fetched.status_code == 200
    validator("api.v2010.account.message").validate(fetched.json())
    assert requests.get(f"{base}/Calls/{sent['sid']}.json", auth=auth, timeout=5).status_code == 404
