"""/api/health: version and reachability, never a secret."""

from __future__ import annotations

import json

from tests.conftest import http_request
from tests.twilio_signing import TEST_AUTH_TOKEN


def test_health_reports_storage_down_and_secrets_readable_without_the_value(call_function):
    response, _ = call_function("health", http_request("GET", "/api/health"))
    assert response.status_code == 200
    body = json.loads(response.get_body())
    assert body["storage"] is False and body["secrets"] is True and body["status"] == "degraded"
    assert TEST_AUTH_TOKEN not in response.get_body().decode()


def test_health_reports_secrets_unreadable_when_no_token(call_function, monkeypatch, set_env):
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    set_env()
    body = json.loads(call_function("health", http_request("GET", "/api/health"))[0].get_body())
    assert body["secrets"] is False
