"""Attacks on ``python -m shared.enqueue``, the reference producer: a bad message is refused before anything is
enqueued (exit 2, the rule on stderr), and storage trouble is one clear line within seconds, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared import enqueue
from tests.peers.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
TO = "+14155550100"
EMOJI = "\U0001F600"

# (argv, the rule stderr must name)
REFUSED: list[tuple[str, list[str], str]] = [
    ("to with trailing newline", ["sms", "--to", TO + "\n", "--body", "x"], "to: not an E.164 number"),
    ("to with trailing CR", ["sms", "--to", TO + "\r", "--body", "x"], "to: not an E.164 number"),
    ("to with leading space", ["sms", "--to", " " + TO, "--body", "x"], "to: not an E.164 number"),
    ("to in fullwidth digits", ["sms", "--to", "+１４１５５５５０１００", "--body", "x"], "to: not an E.164 number"),
    ("to in Arabic-Indic digits", ["sms", "--to", "+١٤١٥٥٥٥٠١٠٠", "--body", "x"], "to: not an E.164 number"),
    ("to with RTL override", ["sms", "--to", "\u202e" + TO, "--body", "x"], "to: not an E.164 number"),
    ("to with zero-width space", ["sms", "--to", "+1415\u200b5550100", "--body", "x"], "to: not an E.164 number"),
    ("to of 16 digits", ["sms", "--to", "+1" + "2" * 15, "--body", "x"], "to: not an E.164 number"),
    ("from with trailing newline", ["sms", "--to", TO, "--from", "+14155550111\n", "--body", "x"],
     "from: not an E.164 number"),
    ("id with trailing newline", ["sms", "--to", TO, "--id", "order-1\n", "--body", "x"], "id: must be 1-128"),
    ("id with slash", ["sms", "--to", TO, "--id", "a/b", "--body", "x"], "id: must be 1-128"),
    ("id with hash", ["sms", "--to", TO, "--id", "a#b", "--body", "x"], "id: must be 1-128"),
    ("id with question mark", ["sms", "--to", TO, "--id", "a?b", "--body", "x"], "id: must be 1-128"),
    ("id with backslash", ["sms", "--to", TO, "--id", "a\\b", "--body", "x"], "id: must be 1-128"),
    ("id with control char", ["sms", "--to", TO, "--id", "a\x01b", "--body", "x"], "id: must be 1-128"),
    ("id with C1 control", ["sms", "--to", TO, "--id", "a\x85b", "--body", "x"], "id: must be 1-128"),
    ("id of 129 chars", ["sms", "--to", TO, "--id", "i" * 129, "--body", "x"], "id: must be 1-128"),
    ("body of 1601 units", ["sms", "--to", TO, "--body", "a" * 1601], "body: 1601 UTF-16 units > 1600"),
    ("body of 801 emoji", ["sms", "--to", TO, "--body", EMOJI * 801], "body: 1602 UTF-16 units > 1600"),
    ("body of 1600 emoji", ["sms", "--to", TO, "--body", EMOJI * 1600], "body: 3200 UTF-16 units > 1600"),
    ("body from undecodable argv bytes", ["sms", "--to", TO, "--body", "a\udcffb"], "body: contains a lone surrogate"),
    ("no body, no media", ["sms", "--to", TO], "body: body or media_urls is required"),
    ("11 media URLs", ["sms", "--to", TO] + sum((["--media-url", f"https://ex.com/{i}"] for i in range(11)), []),
     "media_urls: 11 URLs > 10"),
    ("media over http", ["sms", "--to", TO, "--media-url", "http://ex.com/a.png"], "media_urls[0]: not an https URL"),
    ("media with space", ["sms", "--to", TO, "--media-url", "https://ex.com/a b"], "media_urls[0]: not an https URL"),
    ("media with newline", ["sms", "--to", TO, "--media-url", "https://ex.com/a\n"], "media_urls[0]: not an https"),
    ("messaging service with newline", ["sms", "--to", TO, "--body", "x", "--messaging-service-sid",
                                        "MG" + "a" * 32 + "\n"], "messaging_service_sid: must be MG"),
    ("send_at not UTC", ["sms", "--to", TO, "--body", "x", "--at", "2030-01-01T09:00:00+01:00"], "send_at: must be UTC"),
    ("send_at garbage", ["sms", "--to", TO, "--body", "x", "--at", "soon"], "send_at: not an ISO-8601 time"),
    ("say with NUL", ["call", "--to", TO, "--say", "a\x00b"], "say: contains U+0000, a character XML 1.0"),
    ("say with BEL", ["call", "--to", TO, "--say", "a\x07b"], "say: contains U+0007"),
    ("say with U+FFFF", ["call", "--to", TO, "--say", "a\uffffb"], "say: contains U+FFFF"),
    ("say blank", ["call", "--to", TO, "--say", "  "], "say: must be 1-4000 chars"),
    ("say whose TwiML is too long", ["call", "--to", TO, "--say", "<" * 1000], "say: TwiML built from it is over"),
    ("twiml with DOCTYPE", ["call", "--to", TO, "--twiml", "<!DOCTYPE x><Response/>"], "twiml: must not declare"),
    ("twiml with entity", ["call", "--to", TO, "--twiml", "<Response>&e;</Response>"], "twiml: not well-formed XML"),
    ("twiml with char ref to NUL", ["call", "--to", TO, "--twiml", "<Response>&#0;</Response>"],
     "twiml: not well-formed XML"),
    ("twiml with raw BEL", ["call", "--to", TO, "--twiml", "<Response>\x07</Response>"], "twiml: contains U+0007"),
    ("twiml root Dial", ["call", "--to", TO, "--twiml", "<Dial>+1</Dial>"], "twiml: root element must be <Response>"),
    ("twiml of 4001 chars", ["call", "--to", TO, "--twiml", "<Response>" + "a" * 3980 + "</Response>"],
     "twiml: 4001 chars > 4000"),
    ("url over http", ["call", "--to", TO, "--url", "http://ex.com/t"], "url: not an https URL"),
    ("url javascript", ["call", "--to", TO, "--url", "javascript:alert(1)"], "url: not an https URL"),
    ("voice with newline", ["call", "--to", TO, "--say", "x", "--voice", "alice\n"], "voice: must be a voice name"),
    ("voice with quote", ["call", "--to", TO, "--say", "x", "--voice", 'a" b="c'], "voice: must be a voice name"),
    ("language with newline", ["call", "--to", TO, "--say", "x", "--language", "en-US\n"], "language: must be"),
    ("voice without say", ["call", "--to", TO, "--url", "https://ex.com/t", "--voice", "alice"],
     "voice: only applies with say"),
    ("timeout too short", ["call", "--to", TO, "--say", "x", "--timeout", "4"], "timeout: 4 s is outside 5-600 s"),
    ("timeout too long", ["call", "--to", TO, "--say", "x", "--timeout", "601"], "timeout: 601 s is outside"),
    # WhatsApp and Content templates
    ("whatsapp to with trailing newline", ["sms", "--to", "whatsapp:" + TO + "\n", "--body", "x"],
     "to: not a whatsapp:+E.164 address"),
    ("whatsapp prefix in capitals", ["sms", "--to", "WhatsApp:" + TO, "--body", "x"],
     "to: not a whatsapp:+E.164 address"),
    ("whatsapp without plus", ["sms", "--to", "whatsapp:14155550100", "--body", "x"],
     "to: not a whatsapp:+E.164 address"),
    ("whatsapp to, sms from", ["sms", "--to", "whatsapp:" + TO, "--from", "+14155550111", "--body", "x"],
     "from: to and from must both be whatsapp: addresses or both phone numbers"),
    ("sms to, whatsapp from", ["sms", "--to", TO, "--from", "whatsapp:+14155550111", "--body", "x"],
     "from: to and from must both be whatsapp"),
    ("content sid with trailing newline", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32 + "\n"],
     "content_sid: must be HX followed by 32 hex digits"),
    ("content sid of a message service", ["sms", "--to", TO, "--content-sid", "MG" + "a" * 32],
     "content_sid: must be HX"),
    ("content sid with body", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32, "--body", "x"],
     "body: a template (content_sid) replaces body and media_urls"),
    ("content sid with media", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32, "--media-url",
                                "https://ex.com/a.png"], "media_urls: a template (content_sid) replaces"),
    ("content variables without sid", ["sms", "--to", TO, "--body", "x", "--content-variables", '{"1": "a"}'],
     "content_variables: only applies with content_sid"),
    ("content variables not JSON", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32, "--content-variables",
                                    "{1: a}"], "content_variables: not valid JSON"),
    ("to too short for its country", ["sms", "--to", "+1415555", "--body", "x"],
     "to: not a possible phone number: 6 digits after +1 is too short for US"),
    ("to with no country code", ["sms", "--to", "+999123456789", "--body", "x"],
     "to: not a possible phone number: it starts with no country code"),
    ("whatsapp to too long", ["sms", "--to", "whatsapp:+1" + "2" * 14, "--body", "x"],
     "to: not a possible phone number: 14 digits after +1 is too long for US"),
    ("content variables NaN", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32, "--content-variables",
                               '{"1": NaN}'], "content_variables: not valid JSON"),
    ("content variables a list", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32, "--content-variables",
                                  '["a"]'], "content_variables: must be a JSON object of strings, not array"),
    ("content variable a number", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32, "--content-variables",
                                   '{"1": 5}'], "content_variables.1: must be a string, not number"),
    ("content variable nested", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32, "--content-variables",
                                 '{"1": {"x": "y"}}'], "content_variables.1: must be a string, not object"),
    ("content variable name with brace", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32,
                                          "--content-variables", '{"{{1}}": "a"}'], "must be 1-64 of [A-Za-z0-9_]"),
    ("content variable lone surrogate", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32,
                                         "--content-variables", '{"1": "\\ud800"}'],
     "content_variables.1: contains a lone surrogate"),
    ("content variables too large", ["sms", "--to", TO, "--content-sid", "HX" + "a" * 32, "--content-variables",
                                     "{" + ",".join(f'"v{i}": "{"x" * 1500}"' for i in range(6)) + "}"],
     "content_variables: 9"),
    ("call to whatsapp", ["call", "--to", "whatsapp:" + TO, "--say", "x"],
     "to: calls cannot be placed to or from a whatsapp: address"),
    ("call from whatsapp", ["call", "--to", TO, "--from", "whatsapp:+14155550111", "--say", "x"],
     "from: calls cannot be placed to or from a whatsapp: address"),
    ("voicemail without machine detection", ["call", "--to", TO, "--say", "x", "--voicemail", "call us back"],
     "voicemail: only applies with machine_detection: true"),
    ("voicemail with BEL", ["call", "--to", TO, "--say", "x", "--machine-detection", "--voicemail", "a\x07"],
     "voicemail: contains U+0007"),
    ("voicemail blank", ["call", "--to", TO, "--say", "x", "--machine-detection", "--voicemail", " "],
     "voicemail: must be 1-4000 chars"),
    ("voicemail whose TwiML is too long", ["call", "--to", TO, "--say", "x", "--machine-detection", "--voicemail",
                                           "&" * 900], "voicemail: TwiML built from it is over"),
    # issue 27: an empty id is refused, not replaced; no control character anywhere in a URL
    ("empty id", ["sms", "--to", TO, "--id", "", "--body", "x"], "id: must be 1-128"),
    ("media with NUL", ["sms", "--to", TO, "--media-url", "https://ex.com/a\x00.png"],
     "media_urls[0]: not an https URL: contains control character U+0000"),
    ("media with BEL", ["sms", "--to", TO, "--media-url", "https://ex.com/a\x07.png"], "control character U+0007"),
    ("media with ESC", ["sms", "--to", TO, "--media-url", "https://ex.com/\x1b[2J.png"], "control character U+001B"),
    ("media with DEL", ["sms", "--to", TO, "--media-url", "https://ex.com/a\x7f.png"], "control character U+007F"),
    ("media with C1 CSI", ["sms", "--to", TO, "--media-url", "https://ex.com/a\x9b.png"], "control character U+009B"),
    ("media with NUL in the host", ["sms", "--to", TO, "--media-url", "https://ex.com\x00.evil/a.png"],
     "media_urls[0]: not an https URL: contains control character U+0000"),
    ("call url with NUL", ["call", "--to", TO, "--url", "https://ex.com/t\x00"],
     "url: not an https URL: contains control character U+0000"),
    ("priority in capitals", ["sms", "--to", TO, "--body", "x", "--priority", "HIGH"],
     "priority: must be high or normal (lower case)"),
    ("empty priority", ["sms", "--to", TO, "--body", "x", "--priority", ""], "priority: must be high or normal"),
    ("campaign with a space", ["sms", "--to", TO, "--body", "x", "--campaign", "spring sale"],
     "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
    ("campaign with ESC", ["call", "--to", TO, "--say", "x", "--campaign", "a\x1b[2J"],
     "campaign: must be 1-64 of [A-Za-z0-9._:-]"),
]


@pytest.mark.parametrize(("argv", "rule"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_cli_refuses_with_exit_2_naming_the_rule_and_enqueues_nothing(capsys: Any, monkeypatch: Any, argv: list[str],
                                                                      rule: str) -> None:
    touched: list[str] = []
    monkeypatch.setattr("shared.storage.short_lived_queue", lambda name, **_: touched.append(name))
    assert enqueue.main(argv) == enqueue.EXIT_INVALID
    err = capsys.readouterr().err
    assert rule in err and err.count("\n") == 1
    assert touched == []


@pytest.mark.parametrize(("argv", "rule"), [
    (["sms", "--to", "+14165550100", "--body", "x"], "to: region CA is not in ALLOWED_DESTINATIONS (US)"),
    (["sms", "--to", "whatsapp:+447911123456", "--body", "x"], "to: region GG is not in ALLOWED_DESTINATIONS (US)"),
    (["call", "--to", "+18765550100", "--say", "x"], "to: region JM is not in ALLOWED_DESTINATIONS (US)"),
    (["sms", "--to", "+882345678901", "--body", "x"], "to: non-geographic (no region) is not in ALLOWED_DESTINATIONS"),
], ids=["+1 but Canada", "whatsapp Guernsey", "call to Jamaica", "satellite number"])
def test_cli_refuses_a_region_outside_allowed_destinations_with_exit_2(capsys: Any, monkeypatch: Any,
                                                                       argv: list[str], rule: str) -> None:
    monkeypatch.setenv("ALLOWED_DESTINATIONS", "US")
    touched: list[str] = []
    monkeypatch.setattr("shared.storage.short_lived_queue", lambda name, **_: touched.append(name))
    assert enqueue.main(argv) == enqueue.EXIT_INVALID
    err = capsys.readouterr().err
    assert rule in err and err.count("\n") == 1
    assert touched == []


@pytest.mark.parametrize("argv", [["call", "--to", TO, "--say", "x", "--timeout", "30s"],
                                  ["call", "--to", TO, "--say", "x", "--url", "https://ex.com/t"],
                                  ["fax", "--to", TO], ["sms", "--body", "x"]],
                         ids=["timeout not an integer", "say and url together", "unknown kind", "no --to"])
def test_cli_usage_errors_exit_2(capsys: Any, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        enqueue.main(argv)
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


def _run_cli(storage_setting: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    env.update(AzureWebJobsStorage=storage_setting, PYTHONPATH=str(ROOT))
    # Bounded: today's client waited ~88 s; the CLI must answer within seconds, well inside this bound.
    return subprocess.run([sys.executable, "-m", "shared.enqueue", "sms", "--to", TO, "--body", "hi"], env=env,
                          cwd=ROOT / "tests", capture_output=True, text=True, timeout=30)


def test_cli_with_storage_unreachable_prints_one_line_and_exits_3() -> None:
    port = free_port()  # nothing listens there
    done = _run_cli("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=bm9uZQ==;"
                    f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    assert done.returncode == enqueue.EXIT_STORAGE and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"storage unreachable at http://127.0.0.1:{port}: ")
    assert "Traceback" not in done.stderr and "bm9uZQ" not in done.stderr


@pytest.mark.parametrize("setting", ["not a connection string", "DefaultEndpointsProtocol=http;;;===;",
                                     "AccountName=x;AccountKey=secretkeyvalue;QueueEndpoint=http://127.0.0.1:9/x;"])
def test_cli_with_malformed_storage_setting_prints_one_line_and_exits_2(setting: str) -> None:
    done = _run_cli(setting)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("AzureWebJobsStorage is malformed")
    assert "Traceback" not in done.stderr and "secretkeyvalue" not in done.stderr


@pytest.mark.parametrize(("content", "problem"), [
    ("[]", 'must be a JSON object with "Values", not an array'),
    ('"UseDevelopmentStorage=true"', "must be a JSON object"),
    ('{"Values": []}', '"Values" must be an object of settings, not an array'),
    ('{"Values": "AzureWebJobsStorage=x"}', '"Values" must be an object of settings, not a string'),
    ("{not json", "not valid JSON"),
], ids=["an array", "a string", "Values a list", "Values a string", "not JSON"])
def test_a_local_settings_file_of_the_wrong_shape_is_one_line_naming_the_file_exit_2(
        tmp_path: Path, monkeypatch: Any, capsys: Any, content: str, problem: str) -> None:
    (tmp_path / "local.settings.json").write_text(content)
    monkeypatch.chdir(tmp_path)
    touched: list[str] = []
    monkeypatch.setattr("shared.storage.short_lived_queue", lambda name, **_: touched.append(name))
    assert enqueue.main(["sms", "--to", TO, "--body", "x"]) == enqueue.EXIT_INVALID
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "local.settings.json") in err and problem in err
    assert touched == []
