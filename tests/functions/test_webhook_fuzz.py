"""Property-based fuzz: nothing a caller can send makes a webhook answer 5xx (storage is down here, so a
STOP that reaches the opt-out table legitimately answers 503; that is the only 5xx allowed), and whatever a
signed request carries, the answer is a 4xx or TwiML that an XML 1.0 parser accepts."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import http_request, signed_form_request
from tests.twilio_signing import PUBLIC_BASE_URL, sign_json
from tests.webhook_checks import assert_refused_or_valid_twiml

ROUTES = {"voice": "/api/voice", "voice_menu": "/api/voice/menu", "voice_recorded": "/api/voice/recorded",
          "twiml_say": "/api/twiml/say", "sms": "/api/sms"}
names = st.sampled_from(sorted(ROUTES))
content_types = st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain", "",
                                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded; charset=latin-1",
                                 "application/json; charset=utf-8"])
header_text = st.text(alphabet=string.printable.strip() + " ", max_size=60)
param_names = st.sampled_from(["From", "To", "Body", "Digits", "NumMedia", "MediaUrl0", "Message", "Message[0]",
                               "Message[x]", "CallSid", "ApiVersion", "Voice", "Language", "RecordingUrl"])
params = st.dictionaries(param_names | st.text(max_size=10), st.text(max_size=40), max_size=8)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def allowed(status: int) -> bool:
    return status < 500


@FUZZ
@given(name=names, body=st.binary(max_size=400), content_type=content_types, signature=header_text,
       sig_settings=header_text, query=st.text(max_size=40))
def test_unsigned_garbage_never_yields_a_5xx(call_function, name, body, content_type, signature, sig_settings, query):
    headers = {"Content-Type": content_type, "X-Twilio-Signature": signature,
               "X-Twilio-Webhooks-Signature-Settings": sig_settings}
    method = "GET" if name == "twiml_say" and len(body) % 2 else "POST"
    response, inbound = call_function(name, http_request(method, ROUTES[name], body=body, query=query.replace("#", ""),
                                                         headers=headers))
    assert allowed(response.status_code), (response.status_code, response.get_body())
    if response.status_code >= 400:
        assert inbound.get() is None


# Any Unicode text, control characters and U+FFFE/U+FFFF included (surrogates cannot be form-encoded as UTF-8;
# the JSON fuzz below carries them).
any_text = st.text(st.characters(codec="utf-8"), max_size=40)
unicode_params = st.dictionaries(param_names | st.text(max_size=10), any_text, max_size=8)


@FUZZ
@given(name=names, form=unicode_params)
def test_validly_signed_arbitrary_unicode_parameters_give_a_4xx_or_twiml_that_parses(call_function, name, form):
    response, _ = call_function(name, signed_form_request(ROUTES[name], form))
    if response.status_code >= 500:
        # Only the opt-out keywords touch storage, which is deliberately unreachable in this test.
        assert name == "sms" and response.status_code == 503, response.get_body()
        return
    assert response.status_code in (200, 400), response.get_body()
    assert_refused_or_valid_twiml(response)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(st.characters(), max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3), max_leaves=8)


@FUZZ
@given(name=names, document=st.dictionaries(param_names | st.text(max_size=10), json_values, max_size=6))
def test_validly_signed_arbitrary_json_bodies_give_a_4xx_or_twiml_that_parses(call_function, name, document):
    body = json.dumps(document)  # lone surrogates travel as \udxxx escapes
    url, sig = sign_json(PUBLIC_BASE_URL + ROUTES[name], body)
    req = http_request("POST", ROUTES[name], body=body.encode(), query=url.split("?", 1)[1],
                       headers={"Content-Type": "application/json", "X-Twilio-Signature": sig})
    response, _ = call_function(name, req)
    assert_refused_or_valid_twiml(response, allow_storage_down=name == "sms")


nesting = st.builds(lambda depth, opener, tail: (opener * depth + tail).encode(),
                    st.integers(0, 60_000), st.sampled_from(["[", "{\"a\":", "[{\"a\":"]), st.text(max_size=20))
odd_queries = st.sampled_from(["", "bodySHA256=", "xbodySHA256=1", "bodySHA256", "bodySHA256=" + "a" * 64,
                               "bodySHA256=%00&bodySHA256=1", "code=x"])
any_content_type = content_types | st.text(max_size=30).map(lambda t: t.replace("\n", " "))


@FUZZ
@given(name=names, body=nesting | st.binary(max_size=2_000), content_type=any_content_type, query=odd_queries,
       signature=header_text | st.just("A" * 27 + "=") | st.just("A" * 43 + "="))
def test_unsigned_bodies_of_any_size_nesting_and_content_type_never_yield_a_5xx(call_function, name, body,
                                                                                content_type, query, signature):
    headers = {"Content-Type": content_type, "X-Twilio-Signature": signature}
    response, inbound = call_function(name, http_request("POST", ROUTES[name], body=body, query=query,
                                                         headers=headers))
    assert 400 <= response.status_code < 500, (response.status_code, response.get_body())
    assert inbound.get() is None
