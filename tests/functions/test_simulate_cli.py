"""``python -m devhost.simulate`` against the local host: what it signs is what it sends (issue 27, item 3)."""

from __future__ import annotations

from typing import Any

import pytest

from devhost import simulate
from tests.twilio_signing import PUBLIC_BASE_URL, TEST_AUTH_TOKEN


def _simulate(host: Any, *argv: str) -> int:
    return simulate.main(["--base-url", host.base_url, "--public-url", PUBLIC_BASE_URL, "--token", TEST_AUTH_TOKEN,
                          *argv])


@pytest.mark.parametrize("send_id", ["order 1", "order#1", "100%", "commande-é", "a&id=b"],
                         ids=["space", "hash", "percent", "non-ASCII", "ampersand"])
def test_a_status_callback_for_an_id_that_needs_url_encoding_is_signed_as_sent(standin_http: Any, capsys: Any,
                                                                                send_id: str) -> None:
    code = _simulate(standin_http, "status", "message", "--id", send_id, "--status", "delivered")
    out = capsys.readouterr().out
    # The app checked the signature and then judged the id itself (no send id has these characters): not a 403.
    assert "<- 400" in out and "not a valid send id" in out, out
    assert code == simulate.EXIT_REJECTED


def test_a_status_callback_for_a_plain_id_reaches_the_ledger_lookup(standin_http: Any, capsys: Any) -> None:
    code = _simulate(standin_http, "status", "message", "--id", "no-such-send-1", "--status", "delivered")
    assert "<- 404" in capsys.readouterr().out and code == simulate.EXIT_REJECTED


@pytest.mark.parametrize("argv, named", [(["sms", "\udcff"], "the SMS body"),
                                         (["--from", "+1415\udce9", "sms", "hi"], "--from"),
                                         (["sms", "look", "--media", "https://ex.com/\udcff.png"], "--media"),
                                         (["status", "message", "--id", "a\udcffb", "--status", "sent"], "--id")],
                         ids=["body", "from", "media", "status id"])
def test_bytes_that_are_not_utf8_on_the_command_line_are_one_line_naming_the_argument(capsys: Any, argv: list[str],
                                                                                       named: str) -> None:
    # As `python -m devhost.simulate sms $'\xff'` arrives: Python keeps the byte as a lone surrogate.
    code = simulate.main(["--public-url", "http://127.0.0.1:9", "--token", TEST_AUTH_TOKEN, *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"{named} is not valid UTF-8 text (byte 0x")
