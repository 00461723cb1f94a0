"""The Twilio fake answers like Twilio's OpenAPI spec says, and the app's requests pass Prism's spec checks."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema
import pytest
import requests
from referencing import Registry, Resource

from shared import twilio_api
from shared.outbound import validate
from tests.conftest import TEST_ACCOUNT_SID, TEST_FROM, twilio_oai_spec_path

TO = "+14155550100"


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    return json.loads(twilio_oai_spec_path().read_text())


def validator(schema_name: str) -> jsonschema.protocols.Validator:
    document = spec()
    registry = Registry().with_resource("urn:twilio-oai", Resource.opaque(document))
    # OpenAPI 3.0 "nullable" → JSON Schema: accept null wherever the spec says nullable.
    schema = {"$ref": f"urn:twilio-oai#/components/schemas/{schema_name}"}
    return _Nullable(schema, registry=registry)


_Nullable = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {"type": lambda v, types, instance, schema: None if instance is None and schema.get("nullable")
     else jsonschema.Draft202012Validator.VALIDATORS["type"](v, types, instance, schema)},
)


def test_fake_message_and_call_bodies_are_valid_against_the_spec(twilio_fake: Any) -> None:
    auth = (TEST_ACCOUNT_SID, twilio_fake.credentials[TEST_ACCOUNT_SID])
    base = f"{twilio_fake.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}"
    message = requests.post(f"{base}/Messages.json", auth=auth, timeout=5,
                            data={"To": TO, "From": TEST_FROM, "Body": "hi",
                                  "MediaUrl": ["https://e.com/a", "https://e.com/b"]})
    call = requests.post(f"{base}/Calls.json", auth=auth, timeout=5,
                         data={"To": TO, "From": TEST_FROM, "Url": "https://e.com/twiml"})
    assert message.status_code == call.status_code == 201
    validator("api.v2010.account.message").validate(message.json())
    validator("api.v2010.account.call").validate(call.json())
    assert message.json()["num_media"] == "2" and message.json()["sid"].startswith("MM")


def test_the_contract_check_can_fail(twilio_fake: Any) -> None:
    wrong = {"sid": "XX123", "status": "teleported", "error_code": "not-a-number", "account_sid": "AC1"}
    errors = list(validator("api.v2010.account.message").iter_errors(wrong))
    assert {e.path[0] for e in errors} == {"sid", "status", "error_code", "account_sid"}


def test_fake_rejects_wrong_credentials_like_twilio(twilio_fake: Any) -> None:
    response = requests.post(f"{twilio_fake.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json",
                             auth=(TEST_ACCOUNT_SID, "wrong"), data={"To": TO}, timeout=5)
    assert response.status_code == 401 and response.json()["code"] == 20003


# ---------------------------------------------------------------- Prism: the spec checks our real SDK requests


@pytest.fixture
def prism_sdk(prism_peer: str, set_env: Any) -> str:
    """The app's client pointed at Prism, as is (repeated form keys for arrays, as Twilio expects)."""
    set_env(TWILIO_API_BASE_URL=prism_peer, TWILIO_HTTP_TIMEOUT_SECONDS="10")
    return prism_peer


@pytest.fixture
def via_prism(prism_sdk: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Prism 5.14 reads form arrays qs-style only (``MediaUrl[]=a&MediaUrl[]=b``) and rejects Twilio's repeated keys
    (``MediaUrl=a&MediaUrl=b``, one or many) as "must be array". This rewrites list-valued fields to the bracket
    form on the wire to Prism only; every other byte of the SDK's request is checked against the spec."""
    client = twilio_api.get_client()
    original = client.http_client.request

    def request(method: str, url: str, params: Any = None, data: Any = None, **kwargs: Any) -> Any:
        if data:
            data = {(f"{k}[]" if isinstance(v, list) else k): v for k, v in data.items()}
        return original(method, url, params=params, data=data, **kwargs)

    monkeypatch.setattr(client.http_client, "request", request)
    return prism_sdk


@pytest.mark.parametrize("urls", [[], ["https://e.com/a.png"], ["https://e.com/a.png", "https://e.com/b.png"]])
def test_sms_through_the_sdk_is_accepted_by_prism(via_prism: str, urls: list[str]) -> None:
    message = validate("sms", {"id": "prism-1", "to": TO, "body": "hello", **({"media_urls": urls} if urls else {})})
    result = twilio_api.send_sms(message, from_=TEST_FROM, messaging_service_sid=None)  # type: ignore[arg-type]
    assert result.sid.startswith(("SM", "MM"))


def test_call_through_the_sdk_is_accepted_by_prism(via_prism: str) -> None:
    for doc in ({"to": TO, "say": "hello", "voice": "alice", "timeout": 30, "machine_detection": True},
                {"to": TO, "url": "https://e.com/twiml"}):
        message = validate("call", {"id": "prism-2", **doc})
        result = twilio_api.place_call(message, from_=TEST_FROM)  # type: ignore[arg-type]
        assert result.sid.startswith("CA")


def test_request_breaking_the_spec_is_rejected_by_prism_as_permanent(via_prism: str) -> None:
    from shared.outbound import SmsMessage

    # Bypasses our schema on purpose: MessagingServiceSid must match ^MG[0-9a-fA-F]{32}$.
    message = SmsMessage(id="prism-3", to=TO, from_=None, send_at=None, body="x")
    with pytest.raises(twilio_api.PermanentTwilioError) as info:
        twilio_api.send_sms(message, from_=None, messaging_service_sid="MGnot-a-sid")
    assert info.value.http_status == 422


@pytest.mark.parametrize("urls", [["https://e.com/a.png"], ["https://e.com/a.png", "https://e.com/b.png"]])
def test_prism_rejects_the_sdks_repeated_form_keys_as_not_an_array(prism_sdk: str, urls: list[str]) -> None:
    """Documents the Prism limitation ``via_prism`` works around (Twilio itself takes repeated keys)."""
    message = validate("sms", {"id": "prism-4", "to": TO, "media_urls": urls})
    with pytest.raises(twilio_api.PermanentTwilioError) as info:
        twilio_api.send_sms(message, from_=TEST_FROM, messaging_service_sid=None)  # type: ignore[arg-type]
    assert info.value.http_status == 422


# ---------------------------------------------------------------- channel parameters: WhatsApp, templates, AMD


def _create_params(resource: str) -> dict[str, Any]:
    path = f"/2010-04-01/Accounts/{{AccountSid}}/{resource}.json"
    body = spec()["paths"][path]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    return body["schema"]["properties"]


def test_the_fakes_channel_parameter_rules_are_the_specs() -> None:
    from tests.peers.twilio_fake import PARAMETER_RULES

    messages, calls = _create_params("Messages"), _create_params("Calls")
    assert messages["ContentSid"]["pattern"] == "^HX[0-9a-fA-F]{32}$"
    assert "ContentVariables" in messages and messages["To"]["description"].count("whatsapp:") >= 1
    assert "`Enable` or `DetectMessageEnd`" in calls["MachineDetection"]["description"]
    assert "`true` or `false`" in calls["AsyncAmd"]["description"]
    assert calls["AsyncAmdStatusCallback"]["format"] == "uri"
    assert calls["AsyncAmdStatusCallbackMethod"]["enum"] == ["GET", "POST"]
    assert set(PARAMETER_RULES) <= set(messages) | set(calls)
    ok = PARAMETER_RULES
    assert ok["ContentSid"]("HX" + "a" * 32) and not ok["ContentSid"]("HX" + "a" * 31)
    assert ok["MachineDetection"]("DetectMessageEnd") and not ok["MachineDetection"]("detectmessageend")
    assert ok["AsyncAmd"]("true") and not ok["AsyncAmd"]("True")
    assert ok["ContentVariables"]('{"1": "a"}') and not ok["ContentVariables"]('{"1": 2}')


@pytest.mark.parametrize(("name", "value"), [("ContentSid", "HX123"), ("ContentVariables", "[1]"),
                                             ("MachineDetection", "Yes"), ("AsyncAmd", "1")])
def test_the_fake_refuses_channel_parameters_outside_the_spec(twilio_fake: Any, name: str, value: str) -> None:
    auth = (TEST_ACCOUNT_SID, twilio_fake.credentials[TEST_ACCOUNT_SID])
    resource = "Messages" if name.startswith("Content") else "Calls"
    data = {"To": TO, "From": TEST_FROM, name: value, **({"ContentSid": "HX" + "a" * 32}
                                                         if name == "ContentVariables" else {})}
    if resource == "Calls":
        data["Url"] = "https://e.com/t"
    response = requests.post(f"{twilio_fake.base_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/{resource}.json",
                             auth=auth, data=data, timeout=5)
    assert response.status_code == 400 and twilio_fake.created() == []


def test_whatsapp_template_through_the_sdk_is_accepted_by_prism(via_prism: str) -> None:
    message = validate("sms", {"id": "prism-5", "to": "whatsapp:" + TO, "from": "whatsapp:" + TEST_FROM,
                               "content_sid": "HX" + "0a" * 16, "content_variables": {"1": "Ann"}})
    result = twilio_api.send_sms(message, from_="whatsapp:" + TEST_FROM, messaging_service_sid=None)  # type: ignore[arg-type]
    assert result.sid.startswith(("SM", "MM"))


def test_call_with_async_amd_and_voicemail_is_accepted_by_prism(via_prism: str) -> None:
    message = validate("call", {"id": "prism-6", "to": TO, "say": "hello", "machine_detection": True,
                                "voicemail": "Please call us back."})
    assert twilio_api.place_call(message, from_=TEST_FROM).sid.startswith("CA")  # type: ignore[arg-type]


def test_a_template_sid_breaking_the_spec_pattern_is_rejected_by_prism(via_prism: str) -> None:
    from shared.outbound import SmsMessage

    # Bypasses our schema on purpose: ContentSid must match ^HX[0-9a-fA-F]{32}$.
    message = SmsMessage(id="prism-7", to=TO, from_=None, send_at=None, content_sid="HXnot-a-template")
    with pytest.raises(twilio_api.PermanentTwilioError) as info:
        twilio_api.send_sms(message, from_=TEST_FROM, messaging_service_sid=None)
    assert info.value.http_status == 422


def test_the_voicemail_drop_through_the_sdk_is_accepted_by_prism(via_prism: str) -> None:
    from shared.outbound import voicemail_twiml

    message = validate("call", {"id": "prism-8", "to": TO, "say": "hi", "machine_detection": True,
                                "voicemail": "Please call us back."})
    result = twilio_api.drop_voicemail("CA" + "0a" * 16, voicemail_twiml(message))  # type: ignore[arg-type]
    assert result.sid.startswith("CA")
