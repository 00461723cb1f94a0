"""``python -m shared.flows check``: what it refuses before a flow file can break a call, and that it says where.

Every case is a small file with one mistake; the check must name the mistake and its place, and a refused file
must never load. The shipped file (and the file ``FLOWS_FILE`` names, when set) must pass: that is the check
``make test`` runs on the team's own file.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared import flows
from tests.conftest import ROOT


def flow(**nodes: Any) -> dict[str, Any]:
    """A valid one-menu file, with ``nodes`` replacing or adding nodes."""
    base: dict[str, Any] = {
        "version": 1,
        "voice": {"start": "main", "nodes": {
            "main": {"steps": [{"gather": {"prompt": [{"say": "Press 1."}],
                                           "branches": [{"digits": "1", "goto": "bye"}]}}]},
            "bye": {"steps": [{"say": "Goodbye."}, {"hangup": True}]},
        }},
    }
    base["voice"]["nodes"].update(nodes)
    return base


def problems(document: Any) -> list[str]:
    found, listed = flows.parse(document)
    assert found is None, "the file should have been refused"
    return [f"{p.severity}: {p}" for p in listed]


def one_problem(document: Any, *fragments: str) -> str:
    listed = problems(document)
    matching = [p for p in listed if all(f in p for f in fragments)]
    assert matching, listed
    return matching[0]


def gather_node(**gather: Any) -> dict[str, Any]:
    return {"steps": [{"gather": {"branches": [{"digits": "1", "goto": "bye"}], **gather}}]}


# ---------------------------------------------------------------- the files that must pass


def test_the_shipped_flows_file_passes_the_check_from_the_command_line():
    out = subprocess.run([sys.executable, "-m", "shared.flows", "check"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"flows\.json: ok: 8 voice node\(s\) from 'welcome'", out.stdout)


@pytest.mark.skipif(not os.environ.get("FLOWS_FILE"), reason="FLOWS_FILE not set: the shipped file is checked above")
def test_the_file_flows_file_names_passes_the_check():
    path = flows.flows_path(os.environ["FLOWS_FILE"])
    lines: list[str] = []
    assert flows.check_file(path, lines.append) == 0, "\n".join(lines)


def test_a_minimal_menu_passes():
    found, listed = flows.parse(flow())
    assert found is not None and listed == []


# ---------------------------------------------------------------- references, reachability, loops


@pytest.mark.parametrize("where, document", [
    ("voice.start", {**flow(), "voice": {**flow()["voice"], "start": "mian"}}),
    ("branches[0].goto", flow(main=gather_node(branches=[{"digits": "1", "goto": "byee"}]))),
    ("gather.default", flow(main=gather_node(default="nowhere"))),
    ("gather.no_input", flow(main=gather_node(no_input="nowhere"))),
    ("voice.nodes.bye.next", flow(bye={"steps": [{"say": "Goodbye."}], "next": "nowhere"})),
    ("steps[1].redirect", flow(bye={"steps": [{"say": "Goodbye."}, {"redirect": "nowhere"}]})),
    ("dial.unavailable", flow(bye={"steps": [{"dial": {"number": "{setting:FORWARD_TO_NUMBER}",
                                                        "unavailable": "nowhere"}}]})),
])
def test_a_reference_to_a_node_that_does_not_exist_is_refused_where_it_is(where, document):
    assert where in one_problem(document, "unknown node")


def test_an_unreachable_node_is_a_warning_that_fails_the_check_but_not_the_load(tmp_path):
    document = flow(draft={"steps": [{"say": "Not yet."}]})
    found, listed = flows.parse(document)
    assert found is not None
    assert [str(p) for p in listed] == ["voice.nodes.draft: unreachable from the start node 'main'"]
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(document))
    lines: list[str] = []
    assert flows.check_file(path, lines.append) == 1
    assert any("warning: voice.nodes.draft: unreachable" in line for line in lines)


@pytest.mark.parametrize("document", [
    flow(bye={"steps": [{"say": "a"}], "next": "again"}, again={"steps": [{"say": "b"}], "next": "bye"}),
    flow(bye={"steps": [{"say": "a"}], "next": "bye"}),
    flow(bye={"steps": [{"say": "a"}, {"redirect": "again"}]}, again={"steps": [{"redirect": "bye"}]}),
    flow(bye={"steps": [{"dial": {"number": "{setting:FORWARD_TO_NUMBER}", "unavailable": "closed"}}]},
         closed={"steps": [{"say": "Closed."}, {"redirect": "bye"}]}),
    flow(main=gather_node(branches=[{"digits": "1", "goto": "main"}], no_input="main"),
         bye={"steps": [{"say": "unreachable"}, {"hangup": True}]}),
    flow(main=gather_node(branches=[{"digits": "1", "goto": "hold"}]),
         hold={"steps": [{"play": "https://example.com/hold.mp3"}, {"redirect": "hold"}]}),
], ids=["next ping-pong", "next to itself", "redirect ping-pong", "dial unavailable back to itself",
        "a menu whose every way leads back", "hold music forever"])
def test_a_loop_with_no_exit_is_refused(document):
    one_problem(document, "loop with no exit")


def test_a_menu_that_repeats_until_the_caller_chooses_an_exit_is_not_a_loop():
    document = flow(main=gather_node(branches=[{"digits": "1", "goto": "bye"}, {"digits": "9", "goto": "again"}],
                                     default="again", no_input="again"),
                    again={"steps": [{"say": "Once more."}], "next": "main"})
    assert flows.parse(document)[0] is not None


def test_a_redirect_after_a_dial_may_come_back_because_the_dial_is_a_way_out():
    document = flow(main=gather_node(branches=[{"digits": "1", "goto": "try"}]),
                    **{"try": {"steps": [{"dial": "+14155550100"}, {"redirect": "main"}]}})
    found, listed = flows.parse(document)
    assert found is not None, listed


# ---------------------------------------------------------------- gathers


@pytest.mark.parametrize("branches", [[], None, "1"])
def test_a_gather_with_no_branch_is_refused(branches):
    node = {"steps": [{"gather": {"branches": branches}}]} if branches is not None else {"steps": [{"gather": {}}]}
    one_problem(flow(main=node), "voice.nodes.main.steps[0].gather")


@pytest.mark.parametrize("gather, fragment", [
    ({"num_digits": 1, "branches": [{"digits": "12", "goto": "bye"}]}, "ends after num_digits"),
    ({"branches": [{"digits": "1#", "goto": "bye"}]}, "finish key"),
    ({"input": "dtmf", "branches": [{"words": ["one"], "goto": "bye"}]}, "speech never arrives"),
    ({"input": "speech", "branches": [{"digits": "#", "goto": "bye"}]}, "key presses never arrive"),
    ({"input": "dtmf speech", "branches": [{"words": ["one"], "goto": "bye"}, {"words": ["One!"], "goto": "bye"}]},
     "also a word of branch 0"),
    ({"branches": [{"digits": "1", "goto": "bye"}, {"digits": "1", "goto": "main"}]}, "also branch 0"),
    ({"branches": [{"goto": "bye"}]}, "needs digits, words or both"),
    ({"input": "speech", "branches": [{"words": ["..."], "goto": "bye"}]}, "no letters or digits"),
    ({"input": "voice", "branches": [{"digits": "1", "goto": "bye"}]}, "must be one of"),
])
def test_a_branch_the_gather_can_never_choose_is_refused(gather, fragment):
    one_problem(flow(main={"steps": [{"gather": gather}]}), fragment)


def test_steps_after_a_gather_hangup_or_redirect_never_play_and_are_refused():
    document = flow(bye={"steps": [{"hangup": True}, {"say": "never heard"}]})
    assert "voice.nodes.bye.steps[1]" in one_problem(document, "never plays")


# ---------------------------------------------------------------- text, numbers, placeholders


@pytest.mark.parametrize("text", ["a\x00b", "bell\x07", "\ufffe", "\udc00 lone surrogate", "x" * 4097, ""])
def test_say_text_twiml_cannot_carry_is_refused(text):
    one_problem(flow(bye={"steps": [{"say": text}, {"hangup": True}]}), "voice.nodes.bye.steps[0].say.text")


def test_a_lone_surrogate_written_as_a_json_escape_is_refused(tmp_path):
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(flow()).replace('"Goodbye."', '"Good\\ud800bye."'))
    with pytest.raises(flows.FlowFileError) as refused:
        flows.load(path)
    assert "U+D800" in str(refused.value)


@pytest.mark.parametrize("number", ["4155550100", "+0415555", "+1 415 555 0100", "+1415555010012345", "00441234",
                                    "+", "{param:Digits}", "{param:From}", "+1{setting:FLOW_X}", "sip:a@b.example",
                                    "{setting:FLOW_X|555}"])
@pytest.mark.parametrize("field", ["number", "caller_id"])
def test_a_number_that_is_not_e164_or_one_setting_is_refused(number, field):
    dial = {"number": "+14155550100", field: number, "unavailable": "bye"}
    document = flow(main=gather_node(branches=[{"digits": "1", "goto": "call"}]),
                    call={"steps": [{"dial": dial}]})
    one_problem(document, f"dial.{field}")


def test_a_number_from_a_setting_needs_a_node_for_when_it_is_empty():
    document = flow(main=gather_node(branches=[{"digits": "1", "goto": "call"}]),
                    call={"steps": [{"dial": "{setting:FORWARD_TO_NUMBER}"}]})
    one_problem(document, "dial.unavailable", "may be empty")


@pytest.mark.parametrize("text, fragment", [
    ("{setting:TWILIO_AUTH_TOKEN}", "cannot be echoed"),
    ("{setting:AzureWebJobsStorage}", "cannot be echoed"),
    ("{param:CallSid}", "cannot be echoed"),
    ("{param:ApiVersion", "unmatched"),
    ("a } b", "unmatched"),
    ("{env:HOME}", "is not a placeholder"),
    ("{app:version}", "only {app:name}"),
    ("{ setting:VOICE_GREETING }", "is not a placeholder"),
])
def test_a_placeholder_outside_the_whitelists_is_refused(text, fragment):
    one_problem(flow(bye={"steps": [{"say": text}, {"hangup": True}]}), fragment)


def test_placeholders_and_literal_braces_that_are_allowed_pass():
    text = "{setting:VOICE_GREETING} {setting:FLOW_CLINIC_NAME|the clinic} {param:From|a caller} {app:name} {{x}}"
    assert flows.parse(flow(bye={"steps": [{"say": text}, {"hangup": True}]}))[0] is not None


@pytest.mark.parametrize("url", ["http://example.com/a.mp3", "file:///etc/passwd", "https://", "/api/voice",
                                 "https://e.com/a b.mp3"])
def test_play_needs_an_https_url(url):
    one_problem(flow(bye={"steps": [{"play": url}, {"hangup": True}]}), "an https URL")


# ---------------------------------------------------------------- SMS keywords


@pytest.mark.parametrize("keyword", ["STOP", "stop", "ＳＴＯＰ", "Help!", "info", "START", "unsubscribe", "\u200bquit"])
def test_reserved_keywords_cannot_be_given_a_reply(keyword):
    one_problem({**flow(), "sms": {"keywords": {keyword: "Nope"}}}, "is reserved")


def test_two_keywords_that_match_the_same_message_are_refused():
    one_problem({**flow(), "sms": {"keywords": {"HOURS": "a", "hours!": "b"}}}, "already a keyword")


@pytest.mark.parametrize("reply, fragment", [
    ("x" * 1601, "1600"), ("🎉" * 801, "1600"), ("", "empty"), ("{param:From}", "cannot be used here"),
    ("a\x00", "cannot carry")])
def test_a_keyword_reply_twilio_cannot_send_is_refused(reply, fragment):
    one_problem({**flow(), "sms": {"keywords": {"HOURS": reply}}}, fragment)


# ---------------------------------------------------------------- the file itself


@pytest.mark.parametrize("text, fragment", [
    ('{"version": 1, "voice": {"start": "a", "nodes": {"a": {"steps": [{"hangup": true}]}, '
     '"a": {"steps": [{"hangup": true}]}}}}', "appears twice"),
    ("{", "not valid JSON"),
    ('{"version": 1, "voice": {"start": "a", "nodes": {"a": {"steps": [{"pause": NaN}]}}}}', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[]", "must be an object"),
    ('{"version": 2, "voice": {"start": "a", "nodes": {"a": {"steps": [{"hangup": true}]}}}}', "must be 1"),
    ('{"version": 1, "voice": {"start": "a", "nodes": {"a": {"steps": [{"hangup": true}]}}}, "extra": 1}',
     "unknown field"),
])
def test_a_file_that_is_not_a_flow_is_refused_with_the_reason(tmp_path, text, fragment):
    path = tmp_path / "flows.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(flows.FlowFileError) as refused:
        flows.load(path)
    assert fragment in str(refused.value)


def test_a_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(flows.FlowFileError) as refused:
        flows.load(tmp_path / "nope.json")
    assert "nope.json" in str(refused.value) and "cannot be read" in str(refused.value)


def test_the_check_lists_every_problem_with_its_place_and_exits_1(tmp_path):
    document = flow(main=gather_node(branches=[{"digits": "1", "goto": "byee"}]),
                    bye={"steps": [{"say": "a\x00"}, {"hangup": True}]})
    document["sms"] = {"keywords": {"STOP": "x"}}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    out = subprocess.run([sys.executable, "-m", "shared.flows", "check", str(path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any("error: voice.nodes.main.steps[0].gather.branches[0].goto: unknown node 'byee'" in x for x in lines)
    assert any("error: voice.nodes.bye.steps[0].say.text: holds U+0000" in x for x in lines)
    assert any("error: sms.keywords.STOP: STOP is reserved" in x for x in lines)
    assert lines[-1].endswith("refused (3 error(s)): calls would get the fallback (sorry, goodbye)")


def test_the_command_line_without_check_prints_its_usage_and_exits_2():
    out = subprocess.run([sys.executable, "-m", "shared.flows"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "usage: python -m shared.flows check" in out.stderr


# ---------------------------------------------------------------- the published schema agrees on shape


SHAPE_ERRORS = {
    "unknown step": flow(bye={"steps": [{"speak": "hi"}]}),
    "two verbs in one step": flow(bye={"steps": [{"say": "hi", "hangup": True}]}),
    "pause as text": flow(bye={"steps": [{"pause": "1"}]}),
    "hangup false": flow(bye={"steps": [{"hangup": False}]}),
    "bad node name": flow(**{"bad name": {"steps": [{"hangup": True}]}}),
    "gather without branches": flow(main={"steps": [{"gather": {}}]}),
    "dial not e164": flow(bye={"steps": [{"dial": "555-0100"}]}),
    "unknown gather field": flow(main=gather_node(action="https://evil.example/")),
    "keyword reply not text": {**flow(), "sms": {"keywords": {"HOURS": 9}}},
}


@pytest.fixture(scope="module")
def schema_validator() -> Any:
    import jsonschema

    schema = json.loads((ROOT / "flows.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", list(SHAPE_ERRORS))
def test_the_schema_and_the_check_both_refuse_a_file_of_the_wrong_shape(schema_validator, name):
    document = SHAPE_ERRORS[name]
    assert list(schema_validator.iter_errors(document)), "the schema accepted it"
    assert flows.parse(document)[0] is None, "the check accepted it"


def readme_example() -> dict[str, Any]:
    section = (ROOT / "README.md").read_text().split("\n## Phone menus and keywords\n", 1)[1].split("\n## ", 1)[0]
    return json.loads(section.split("```json\n", 1)[1].split("\n```", 1)[0])


def test_the_readme_clinic_example_passes_the_schema_and_the_check(schema_validator):
    document = readme_example()
    schema_validator.validate(document)
    found, listed = flows.parse(document)
    assert found is not None and listed == []
    assert set(found.keywords) == {"HOURS", "ADDRESS"}


def test_the_check_does_not_change_the_document_it_reads():
    document = readme_example()
    before = copy.deepcopy(document)
    flows.parse(document)
    assert document == before


def test_the_package_azd_deploys_ships_the_flow_file_and_its_schema():
    from bench.cold_start import _funcignore_patterns, _ignored

    patterns = _funcignore_patterns(ROOT)
    assert not _ignored("flows.json", False, patterns) and not _ignored("flows.schema.json", False, patterns)
    assert not _ignored("shared/flows.py", False, patterns)


def test_flows_file_setting_is_relative_to_the_app_not_the_working_directory(tmp_path):
    assert flows.flows_path("flows.json") == ROOT / "flows.json"
    assert flows.flows_path("config/clinic.json") == ROOT / "config" / "clinic.json"
    assert flows.flows_path(str(tmp_path / "x.json")) == tmp_path / "x.json"
    assert isinstance(flows.flows_path(""), Path)


def test_the_text_refused_is_exactly_what_xml_1_0_cannot_carry_over_every_code_point():
    def xml_char(point: int) -> bool:  # XML 1.0, production [2] Char
        return point in (0x9, 0xA, 0xD) or 0x20 <= point <= 0xD7FF or 0xE000 <= point <= 0xFFFD or point >= 0x10000

    everything = "".join(map(chr, range(0x110000)))
    assert flows.XML_FORBIDDEN.sub("", everything) == "".join(ch for ch in everything if xml_char(ord(ch)))
