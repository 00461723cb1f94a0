"""End to end over real HTTP: a client posts signed form bodies to the stand-in host and gets TwiML back;
inbound events land on the inbound queue in Azurite."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import requests
from azure.storage.queue import QueueClient

from tests.peers.ports import wait_until
from tests.twilio_signing import PUBLIC_BASE_URL, form_body, sign_form

pytestmark = pytest.mark.e2e


def post_signed(host, path: str, params: dict, query: str = "") -> requests.Response:
    public = PUBLIC_BASE_URL + path + (f"?{query}" if query else "")
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sign_form(public, params)}
    url = host.base_url + path + (f"?{query}" if query else "")
    return requests.post(url, data=form_body(params), headers=headers, timeout=10)


def received(connection_string: str, queue: str, count: int) -> list[dict]:
    client = QueueClient.from_connection_string(connection_string, queue)
    got: list[dict] = []

    def drain() -> bool:
        for message in client.receive_messages(messages_per_page=32, visibility_timeout=30):
            got.append(json.loads(message.content))
            client.delete_message(message)
        return len(got) >= count

    wait_until(drain, 15, f"{count} message(s) on {queue}")
    return got


def test_signed_call_flow_over_http_gets_twiml(standin_http):
    call = {"CallSid": "CA" + "3" * 32, "From": "+14155552345", "To": "+15005550006", "ApiVersion": "2010-04-01"}
    first = post_signed(standin_http, "/api/voice", call)
    assert first.status_code == 200
    assert first.headers["Content-Type"].startswith("text/xml")
    gather = ET.fromstring(first.content).find("Gather")
    menu = post_signed(standin_http, gather.get("action"), {**call, "Digits": "1"})
    assert "2010-04-01" in ET.fromstring(menu.content).find("Say").text


def test_forged_request_over_http_gets_403_and_no_twiml(standin_http):
    response = requests.post(standin_http.base_url + "/api/sms", data={"From": "+14155552345", "Body": "hi"},
                             headers={"X-Twilio-Signature": "Zm9yZ2Vk"}, timeout=10)
    assert response.status_code == 403
    assert b"<Response" not in response.content


def test_wrong_method_and_unknown_route_are_404_with_an_empty_body_as_the_real_host_answers(standin_http):
    wrong_method = requests.get(standin_http.base_url + "/api/sms", timeout=10)
    unknown = requests.post(standin_http.base_url + "/api/nope", timeout=10)
    assert (wrong_method.status_code, wrong_method.content) == (404, b"")
    assert (unknown.status_code, unknown.content) == (404, b"")


def test_inbound_sms_and_voicemail_land_on_the_inbound_queue(standin_http, azurite, unique_queues):
    sms = {"MessageSid": "SM" + "c" * 32, "From": "+14155552345", "To": "+15005550006", "Body": "hello queue",
           "NumMedia": "1", "MediaUrl0": "https://api.twilio.com/media/1", "MediaContentType0": "image/gif"}
    assert post_signed(standin_http, "/api/sms", sms).status_code == 200
    voicemail = {"CallSid": "CA" + "4" * 32, "From": "+14155552345", "To": "+15005550006",
                 "RecordingUrl": "https://api.twilio.com/rec/RE1", "RecordingDuration": "4"}
    assert post_signed(standin_http, "/api/voice/recorded", voicemail).status_code == 200
    events = received(azurite.connection_string, unique_queues["INBOUND_QUEUE"], 2)
    by_type = {e["type"]: e for e in events}
    assert by_type["sms"]["body"] == "hello queue"
    assert by_type["sms"]["media"][0]["url"] == "https://api.twilio.com/media/1"
    assert by_type["voicemail"]["recording_url"] == "https://api.twilio.com/rec/RE1"


def test_rejected_sms_puts_nothing_on_the_inbound_queue(standin_http, azurite, unique_queues):
    response = requests.post(standin_http.base_url + "/api/sms", data={"From": "+14155552345"},
                             headers={"X-Twilio-Signature": "bad"}, timeout=10)
    assert response.status_code == 403
    client = QueueClient.from_connection_string(azurite.connection_string, unique_queues["INBOUND_QUEUE"])
    client.create_queue()
    assert list(client.peek_messages(max_messages=5)) == []


def test_health_over_http_reports_storage_and_secrets_without_values(standin_http):
    response = requests.get(standin_http.base_url + "/api/health", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["storage"] is True and body["secrets"] is True and body["version"]
    from tests.twilio_signing import TEST_AUTH_TOKEN

    assert TEST_AUTH_TOKEN not in response.text
