"""What the Functions host indexes: routes, methods, auth level, queue names as %SETTING% expressions."""

from __future__ import annotations

import json

import pytest

EXPECTED_HTTP = {
    "voice": ("voice", ["POST"]),
    "voice_menu": ("voice/menu", ["POST"]),
    "voice_node": ("voice/node", ["POST"]),
    "voice_recorded": ("voice/recorded", ["POST"]),
    "twiml_say": ("twiml/say", ["GET", "POST"]),
    "sms": ("sms", ["POST"]),
    "health": ("health", ["GET"]),
}


def bindings(indexed_functions, name):
    return json.loads(indexed_functions[name].get_function_json())["bindings"]


@pytest.mark.parametrize("name", sorted(EXPECTED_HTTP))
def test_http_function_route_methods_and_anonymous_auth(indexed_functions, name):
    trigger = next(b for b in bindings(indexed_functions, name) if b["type"] == "httpTrigger")
    route, methods = EXPECTED_HTTP[name]
    assert trigger["route"] == route
    assert sorted(trigger["methods"]) == sorted(methods)
    assert trigger["authLevel"] == "ANONYMOUS"


@pytest.mark.parametrize("name", ["sms", "voice_recorded"])
def test_inbound_events_go_to_the_queue_named_by_the_inbound_queue_setting(indexed_functions, name):
    out = [b for b in bindings(indexed_functions, name) if b["type"] == "queue"]
    assert out == [{"direction": "OUT", "type": "queue", "name": "inbound", "queueName": "%INBOUND_QUEUE%",
                    "connection": "AzureWebJobsStorage"}]


def test_host_json_queue_semantics_match_the_design():
    from tests.conftest import ROOT

    host = json.loads((ROOT / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["messageEncoding"] == "none"
    assert queues["maxDequeueCount"] == 5
    assert queues["visibilityTimeout"] == "00:00:30"
    assert queues["batchSize"] == 16
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
