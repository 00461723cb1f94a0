"""What every webhook answer must be, whatever was sent: never a 5xx; a refusal carries no TwiML; a 200 with a
body is TwiML that an XML 1.0 parser (expat) accepts. Shared by the attack suite and the fuzz."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import azure.functions as func


def assert_refused_or_valid_twiml(response: func.HttpResponse, *, allow_storage_down: bool = False) -> ET.Element | None:
    """Return the parsed TwiML (None for a refusal or an empty answer)."""
    status, body = response.status_code, response.get_body()
    if allow_storage_down and status == 503:
        return None
    assert status < 500, (status, body[:300])
    if status >= 300:
        assert b"<Response" not in body, body[:300]
        return None
    if not body:
        return None
    root = ET.fromstring(body)  # raises ParseError on malformed XML
    assert root.tag == "Response"
    return root
