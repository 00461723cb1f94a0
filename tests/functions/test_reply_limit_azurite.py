"""AUTO_REPLY_MIN_INTERVAL_SECONDS through the indexed /api/sms function against Azurite: a flood of inbound
texts from one sender gets one paid reply per interval; every inbound message still reaches the inbound queue."""

from __future__ import annotations

import json
import random
import threading
import xml.etree.ElementTree as ET
from typing import Any

from tests.conftest import signed_form_request


def sms_from(sender: str, body: str = "Hello there") -> dict[str, str]:
    return {"MessageSid": "SM" + "%032x" % random.getrandbits(128), "AccountSid": "AC" + "0" * 32, "From": sender,
            "To": "+15005550006", "Body": body, "NumMedia": "0"}


def fresh_sender() -> str:
    return f"+1773{random.randrange(2_000_000, 9_999_999)}"


def replies(response: Any) -> list[str]:
    assert response.status_code == 200
    return [m.text or "" for m in ET.fromstring(response.get_body()).findall("Message")]


def test_a_flood_from_one_sender_gets_one_auto_reply_per_interval(call_function: Any, azurite: Any,
                                                                 set_env: Any) -> None:
    set_env(SMS_AUTO_REPLY="Thanks!", AUTO_REPLY_MIN_INTERVAL_SECONDS="3600")
    sender, other = fresh_sender(), fresh_sender()
    answers, events = [], []
    for body in ["one", "two", "HELP", "three"]:
        response, inbound = call_function("sms", signed_form_request("/api/sms", sms_from(sender, body)))
        answers.append(replies(response))
        events.append(json.loads(inbound.get()))
    assert answers == [["Thanks!"], [], [], []]  # HELP is a reply too: limited the same way
    assert [e["body"] for e in events] == ["one", "two", "HELP", "three"]  # every message still queued
    assert [e["reply_limited"] for e in events] == [False, True, True, True]
    response, _ = call_function("sms", signed_form_request("/api/sms", sms_from(other)))
    assert replies(response) == ["Thanks!"]  # per sender


def test_sms_and_whatsapp_from_one_number_share_the_interval(call_function: Any, azurite: Any,
                                                           set_env: Any) -> None:
    set_env(SMS_AUTO_REPLY="Thanks!", AUTO_REPLY_MIN_INTERVAL_SECONDS="3600")
    number = fresh_sender()
    first, _ = call_function("sms", signed_form_request("/api/sms", sms_from(number)))
    second, _ = call_function("sms", signed_form_request("/api/sms", sms_from("whatsapp:" + number)))
    assert (replies(first), replies(second)) == (["Thanks!"], [])


def test_a_whatsapp_opt_out_is_confirmed_even_inside_the_interval_but_a_repeated_stop_is_limited(
        call_function: Any, azurite: Any, set_env: Any) -> None:
    set_env(SMS_AUTO_REPLY="Thanks!", AUTO_REPLY_MIN_INTERVAL_SECONDS="3600")
    address = "whatsapp:" + fresh_sender()
    hello, _ = call_function("sms", signed_form_request("/api/sms", sms_from(address)))
    stop, _ = call_function("sms", signed_form_request("/api/sms", sms_from(address, "STOP")))
    again, inbound = call_function("sms", signed_form_request("/api/sms", sms_from(address, "stop")))
    assert replies(hello) == ["Thanks!"]
    assert len(replies(stop)) == 1 and "no more WhatsApp messages" in replies(stop)[0]
    assert replies(again) == [] and json.loads(inbound.get())["keyword"] == "STOP"


def test_without_the_setting_every_message_is_answered(call_function: Any, azurite: Any, set_env: Any) -> None:
    set_env(SMS_AUTO_REPLY="Thanks!")
    sender = fresh_sender()
    for _ in range(3):
        response, _ = call_function("sms", signed_form_request("/api/sms", sms_from(sender)))
        assert replies(response) == ["Thanks!"]


def test_8_webhooks_racing_for_one_sender_get_one_reply(call_function: Any, azurite: Any, set_env: Any) -> None:
    set_env(SMS_AUTO_REPLY="Thanks!", AUTO_REPLY_MIN_INTERVAL_SECONDS="60")
    sender = fresh_sender()
    requests = [signed_form_request("/api/sms", sms_from(sender, f"m{i}")) for i in range(8)]
    answers: list[list[str]] = []
    barrier = threading.Barrier(len(requests))

    def run(request: Any) -> None:
        barrier.wait()
        response, _ = call_function("sms", request)
        answers.append(replies(response))

    threads = [threading.Thread(target=run, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answers) == [[]] * 7 + [["Thanks!"]]


def test_an_unusable_interval_setting_means_no_replies_and_the_event_is_still_queued(call_function: Any,
                                                                                    azurite: Any,
                                                                                    set_env: Any) -> None:
    set_env(SMS_AUTO_REPLY="Thanks!", AUTO_REPLY_MIN_INTERVAL_SECONDS="soon")
    response, inbound = call_function("sms", signed_form_request("/api/sms", sms_from(fresh_sender())))
    assert replies(response) == [] and json.loads(inbound.get())["reply_limited"] is True
