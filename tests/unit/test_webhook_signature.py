"""Signature checking on the public URL (shared.webhooks.verify), unit level."""

from __future__ import annotations

import json
import logging

import pytest

from shared.webhooks import (
    MalformedRequestError,
    NotConfiguredError,
    SignatureInvalidError,
    WebhookRequest,
    public_url_for,
    verify,
)
from tests.twilio_signing import PUBLIC_BASE_URL, TEST_AUTH_TOKEN, TEST_SHARED_KEY, form_body, sign_form, sign_json

# Twilio's published test vector (token 12345). Note: the vector's Caller/From are +14158675309; with any other
# number (e.g. +12349013030) these parameters do not produce RSOYDt4T1cUTdK1PDd93/VVr8B8=.
TWILIO_VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def form_request(path: str, params: dict, signature: str, query: str = "", extra: dict | None = None):
    headers = {**FORM, "X-Twilio-Signature": signature, **(extra or {})}
    return WebhookRequest("POST", path, query, headers, form_body(params))


def test_twilios_published_vector_is_accepted(set_env):
    set_env(PUBLIC_BASE_URL="https://mycompany.com", TWILIO_AUTH_TOKEN="12345")
    req = form_request("/myapp.php", TWILIO_VECTOR_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", query="foo=1&bar=2")
    assert verify(req).first("Digits") == "1234"


def test_published_vector_with_one_param_changed_is_rejected(set_env):
    set_env(PUBLIC_BASE_URL="https://mycompany.com", TWILIO_AUTH_TOKEN="12345")
    tampered = {**TWILIO_VECTOR_PARAMS, "Digits": "1235"}
    with pytest.raises(SignatureInvalidError):
        verify(form_request("/myapp.php", tampered, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", query="foo=1&bar=2"))


def test_signature_is_checked_on_public_base_url_not_the_request_host():
    params = {"From": "+14155552345", "Body": "hi"}
    public = PUBLIC_BASE_URL + "/api/sms"
    assert verify(form_request("/api/sms", params, sign_form(public, params))).first("Body") == "hi"
    internal = "http://localhost:7071/api/sms"
    with pytest.raises(SignatureInvalidError):
        verify(form_request("/api/sms", params, sign_form(internal, params)))


def test_function_key_in_query_is_part_of_the_signed_url():
    params = {"From": "+14155552345"}
    signed = sign_form(PUBLIC_BASE_URL + "/api/sms?code=abc%3D%3D", params)
    assert verify(form_request("/api/sms", params, signed, query="code=abc%3D%3D"))
    with pytest.raises(SignatureInvalidError):
        verify(form_request("/api/sms", params, signed, query=""))


@pytest.mark.parametrize("headers", [{}, {"X-Twilio-Signature": ""}, {"X-Twilio-Signature": "bm9wZQ=="}])
def test_missing_or_forged_signature_is_rejected(headers):
    req = WebhookRequest("POST", "/api/sms", "", {**FORM, **headers}, form_body({"From": "+14155552345"}))
    with pytest.raises(SignatureInvalidError):
        verify(req)


def test_signature_from_another_token_is_rejected():
    params = {"From": "+14155552345"}
    with pytest.raises(SignatureInvalidError):
        verify(form_request("/api/sms", params, sign_form(PUBLIC_BASE_URL + "/api/sms", params, token="other")))


SHARED_SHA256 = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"}


def test_sha256_signature_with_the_shared_key_named_in_settings_header_is_accepted():
    params = {"From": "+14155552345", "Body": "sha"}
    url = PUBLIC_BASE_URL + "/api/sms"
    sig = sign_form(url, params, TEST_SHARED_KEY, algorithm="HMAC_SHA256")
    assert verify(form_request("/api/sms", params, sig, extra=SHARED_SHA256)).first("Body") == "sha"
    # The same SHA-256 signature without the header is checked as SHA-1 with the auth token and fails.
    with pytest.raises(SignatureInvalidError):
        verify(form_request("/api/sms", params, sig))


def test_settings_header_means_the_shared_key_not_the_auth_token():
    params = {"From": "+14155552345"}
    url = PUBLIC_BASE_URL + "/api/sms"
    with_token = sign_form(url, params, TEST_AUTH_TOKEN, algorithm="HMAC_SHA256")
    with pytest.raises(SignatureInvalidError):
        verify(form_request("/api/sms", params, with_token, extra=SHARED_SHA256))


def test_shared_key_with_sha1_named_in_settings_header_is_accepted():
    params = {"From": "+14155552345"}
    sig = sign_form(PUBLIC_BASE_URL + "/api/sms", params, TEST_SHARED_KEY, algorithm="HMAC_SHA1")
    header = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA1"}
    assert verify(form_request("/api/sms", params, sig, extra=header))


def test_unknown_algorithm_in_settings_header_is_rejected():
    params = {"From": "+14155552345"}
    sig = sign_form(PUBLIC_BASE_URL + "/api/sms", params, TEST_SHARED_KEY, algorithm="HMAC_SHA256")
    header = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA512"}
    with pytest.raises(SignatureInvalidError):
        verify(form_request("/api/sms", params, sig, extra=header))


def test_shared_key_signed_request_without_a_shared_key_configured_is_403_with_one_warning(monkeypatch, set_env,
                                                                                          caplog):
    """A signature made with a key this app does not have cannot be valid: 403, and a forger sending the
    settings header in a flood gets one warning line, not an ERROR per request (issue 9, defect 8)."""
    monkeypatch.delenv("TWILIO_WEBHOOK_SHARED_KEY")
    set_env()
    params = {"From": "+14155552345"}
    sig = sign_form(PUBLIC_BASE_URL + "/api/sms", params, TEST_SHARED_KEY, algorithm="HMAC_SHA256")
    for _ in range(20):
        with pytest.raises(SignatureInvalidError):
            verify(form_request("/api/sms", params, sig, extra=SHARED_SHA256))
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "TWILIO_WEBHOOK_SHARED_KEY" in lines[0].getMessage()
    # Requests signed with the auth token still work.
    assert verify(form_request("/api/sms", params, sign_form(PUBLIC_BASE_URL + "/api/sms", params)))


def test_json_body_signed_with_body_sha256_is_accepted_and_tampering_is_not():
    body = json.dumps({"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered"})
    url, sig = sign_json(PUBLIC_BASE_URL + "/api/sms", body)
    query = url.split("?", 1)[1]
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": sig}
    params = verify(WebhookRequest("POST", "/api/sms", query, headers, body.encode()))
    assert params.first("MessageStatus") == "delivered"
    tampered = body.replace("delivered", "failed")
    with pytest.raises(SignatureInvalidError):
        verify(WebhookRequest("POST", "/api/sms", query, headers, tampered.encode()))


def test_json_body_without_body_hash_in_url_is_rejected():
    body = '{"a": "b"}'
    sig = sign_form(PUBLIC_BASE_URL + "/api/sms", {})
    with pytest.raises(SignatureInvalidError):
        verify(WebhookRequest("POST", "/api/sms", "", {"Content-Type": "application/json",
                                                      "X-Twilio-Signature": sig}, body.encode()))


def test_get_request_is_signed_over_url_with_its_query():
    url = PUBLIC_BASE_URL + "/api/twiml/say?Message=hello"
    sig = sign_form(url, {})
    params = verify(WebhookRequest("GET", "/api/twiml/say", "Message=hello", {"X-Twilio-Signature": sig}))
    assert params.getlist("Message") == ["hello"]


@pytest.mark.parametrize("body, content_type, reason", [
    (b"\xff\xfe", "application/x-www-form-urlencoded", "not UTF-8"),
    (b"<xml/>", "text/xml", "unsupported Content-Type"),
])
def test_unreadable_form_body_is_a_named_400(body, content_type, reason):
    req = WebhookRequest("POST", "/api/sms", "", {"Content-Type": content_type,
                                                  "X-Twilio-Signature": "A" * 27 + "="}, body)
    with pytest.raises(MalformedRequestError, match=reason):
        verify(req)


@pytest.mark.parametrize("body, reason", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be an object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"Body": "\\ud800"}', "lone surrogate"),
])
def test_unreadable_signed_json_body_is_a_named_400(body, reason):
    url, sig = sign_json(PUBLIC_BASE_URL + "/api/sms", body)
    req = WebhookRequest("POST", "/api/sms", url.split("?", 1)[1], {"Content-Type": "application/json",
                                                                    "X-Twilio-Signature": sig}, body.encode())
    with pytest.raises(MalformedRequestError, match=reason):
        verify(req)


@pytest.mark.parametrize("query", ["", "xbodySHA256=1", "bodySHA256=", "bodySHA256", "bodySHA256=zz",
                                   "bodySHA256=" + "a" * 64 + "&bodySHA256=" + "b" * 64])
@pytest.mark.parametrize("body", ['{"a": "b"}', "[" * 5000 + "]" * 5000, "{" * 5000])
def test_unsigned_json_is_refused_403_before_it_is_parsed(query, body, monkeypatch):
    """Issue 9, defect 3: deep nesting or an odd bodySHA256 used to reach json.loads / the validator → 500."""
    import shared.webhooks as webhooks

    def no_parsing(text):
        raise AssertionError("an unsigned JSON body was parsed")

    monkeypatch.setattr(webhooks, "_json_params", no_parsing)
    req = WebhookRequest("POST", "/api/sms", query, {"Content-Type": "application/json",
                                                     "X-Twilio-Signature": "A" * 27 + "="}, body.encode())
    with pytest.raises(SignatureInvalidError):
        verify(req)


def test_missing_auth_token_is_not_configured_and_logged_once_by_name(set_env, monkeypatch, caplog):
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    set_env()
    for _ in range(3):
        with pytest.raises(NotConfiguredError):
            verify(form_request("/api/sms", {"From": "+1"}, "A" * 27 + "="))
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "TWILIO_AUTH_TOKEN" in errors[0]


def test_missing_public_base_url_is_not_configured(monkeypatch, set_env, caplog):
    monkeypatch.delenv("PUBLIC_BASE_URL")
    set_env()
    with pytest.raises(NotConfiguredError, match="PUBLIC_BASE_URL"):
        verify(form_request("/api/sms", {"From": "+1"}, "A" * 27 + "="))
    with pytest.raises(NotConfiguredError):
        verify(form_request("/api/sms", {"From": "+1"}, "A" * 27 + "="))
    assert caplog.text.count("PUBLIC_BASE_URL is not set") == 1


def test_public_url_for_joins_base_path_and_raw_query():
    assert public_url_for("/api/sms", "code=a%2Fb&x=1", "https://h.example/") == "https://h.example/api/sms?code=a%2Fb&x=1"
    assert public_url_for("api/voice", "", "https://h.example") == "https://h.example/api/voice"
