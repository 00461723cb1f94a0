"""TwiML always parses whatever text goes in; opt-out keywords are matched after Unicode normalisation."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from shared import twiml
from shared.inbound import keyword_of

FORBIDDEN = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\ufffe", "\uffff", "\ud800", "\udfff"]


@pytest.mark.parametrize("char", FORBIDDEN)
def test_characters_xml_forbids_are_dropped_from_every_say_and_the_document_parses(char):
    document = twiml.say([f"a{char}b", char], voice="alice", language="en-US")
    root = ET.fromstring(document.encode("utf-8"))
    assert [say.text for say in root] == ["ab", None]


@pytest.mark.parametrize("char", FORBIDDEN)
def test_characters_xml_forbids_are_dropped_from_spoken_api_version_and_sms_reply(char):
    ET.fromstring(twiml.menu_choice("1", f"2010{char}-04-01").encode("utf-8"))
    root = ET.fromstring(twiml.sms_reply(f"reply{char}").encode("utf-8"))
    assert root[0].text == "reply"


def test_tab_newline_carriage_return_and_astral_characters_are_kept():
    root = ET.fromstring(twiml.say(["a\tb\nc\rd 🎉"]).encode("utf-8"))
    assert root[0].text.replace("\r", "\n") in ("a\tb\nc\nd 🎉",)


def test_xml_markup_in_text_stays_text():
    root = ET.fromstring(twiml.say(["</Say><Dial>+19005550000</Dial>"]).encode("utf-8"))
    assert [child.tag for child in root] == ["Say"] and root[0].text == "</Say><Dial>+19005550000</Dial>"


@pytest.mark.parametrize("body, keyword", [
    ("STOP", "STOP"), ("ＳＴＯＰ", "STOP"), ("ST\u200bOP", "STOP"), ("\u200bstop\u200d", "STOP"), (" Stop! ", "STOP"),
    ("stop.", "STOP"), ("«STOP»", "STOP"), ("\u202eSTOP", "STOP"), ("\ufeffunsubscribe", "UNSUBSCRIBE"),
    ("Ｓｔａｒｔ。", "START"), ("help?", "HELP"), ("ＱＵＩＴ\n", "QUIT"), ("\tcancel\r\n", "CANCEL"),
])
def test_opt_out_keywords_match_after_nfkc_zero_width_case_and_punctuation_are_normalised(body, keyword):
    assert keyword_of(body) == keyword


@pytest.mark.parametrize("body", ["please stop", "stop it", "S T O P", "STOPP", "stop 🙏", "don't stop", "ST-OP",
                                  "STOP" + " " * 200 + "now", "", "...", "STOP STOP"])
def test_a_longer_message_is_never_a_keyword(body):
    assert keyword_of(body) == ""
