"""TwiML documents the webhooks answer with, built with twilio's TwiML classes (never by string pasting).

Every document leaves through :func:`render`, which drops the characters XML 1.0 cannot carry (C0 controls but
tab/CR/LF, U+FFFE/U+FFFF, lone surrogates) from every text and attribute: ElementTree escapes markup but writes
those as they are, and a parser (Twilio's) then refuses the whole document. Dropping them is right for spoken and
texted words (they are never speech); fields with a fixed vocabulary (voice, language) are validated by callers
and refused instead (:data:`SAY_ATTRIBUTE`).
"""

from __future__ import annotations

import re
from typing import Sequence

from twilio.twiml import TwiML
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from . import APP_NAME
from .flows import XML_FORBIDDEN, choice_for_speech

MENU_PATH = "/api/voice/menu"
NODE_PATH = "/api/voice/node"  # the walk of the flow file's nodes: ?node=NAME enters one, ?gather=NAME answers one
MENU_NODE = "menu"  # the flow node whose gather /api/voice/menu answers (numbers set up before flows keep working)
RECORDED_PATH = "/api/voice/recorded"
RECORDING_STATUS_PATH = "/api/status/recording"
MENU_PROMPT = (
    "Press 1 to hear about this line, 2 to leave a message, 0 to speak to someone. You can also say the number. "
)
# What a caller may say for each menu digit (besides the digit itself); also the Gather's speech hints.
SPEECH_CHOICES: dict[str, tuple[str, ...]] = {
    "1": ("1", "one", "about", "information", "info"),
    "2": ("2", "two", "message", "voicemail", "voice mail"),
    "0": ("0", "zero", "operator", "agent", "someone", "person", "representative"),
}
SPEECH_HINTS = ", ".join(dict.fromkeys(w for words in SPEECH_CHOICES.values() for w in words if not w.isdigit()))
NOT_AN_OPTION = "?"  # what unrecognised speech becomes: "not an option", unlike silence (goodbye)
GOODBYE = "Thank you for calling. Goodbye."
MAX_ECHO_CHARS = 64  # a caller-supplied ApiVersion is spoken back, but not at any length
MAX_RECORDING_SECONDS = 120
# Characters outside XML 1.0's Char production.
_NOT_XML_CHAR = XML_FORBIDDEN
# <Say voice="…" language="…">: names such as alice, Polly.Joanna-Neural, Google.en-US-Standard-A, en-US.
SAY_ATTRIBUTE_RULE = "1-64 of A-Z a-z 0-9 . _ -"
SAY_ATTRIBUTE = re.compile(r"[A-Za-z0-9._-]{1,64}")
UNAVAILABLE = "Sorry, this line cannot take your call right now. Please try again later. Goodbye."


def xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (see the module docstring)."""
    return _NOT_XML_CHAR.sub("", text)


def _clean(node: TwiML) -> None:
    if isinstance(node.value, str):
        node.value = xml_text(node.value)
    node.attrs = {k: xml_text(v) if isinstance(v, str) else v for k, v in node.attrs.items()}
    node.verbs = [xml_text(v) if isinstance(v, str) else v for v in node.verbs]
    for child in node.verbs:
        if isinstance(child, TwiML):
            _clean(child)


def render(document: TwiML) -> str:
    """The document as XML that any XML 1.0 parser accepts, whatever text went into it."""
    _clean(document)
    return str(document)


def digit_for_speech(speech: str) -> str:
    """The menu digit a caller's words name ("two", "leave a message" → "2"); :data:`NOT_AN_OPTION` when they
    name none, or more than one ("one or two"), so an unclear answer repeats the menu instead of guessing. The same
    matching as the flow file's gather words (:func:`shared.flows.choice_for_speech`)."""
    return choice_for_speech(speech, SPEECH_CHOICES) or NOT_AN_OPTION


def gather_path(node: str) -> str:
    """Where the gather of flow node ``node`` posts its answer (a checked node name: no escaping needed)."""
    return MENU_PATH if node == MENU_NODE else f"{NODE_PATH}?gather={node}"


def node_path(node: str) -> str:
    """Where a redirect into flow node ``node`` goes."""
    return f"{NODE_PATH}?node={node}"


def voicemail_record_attrs(public_base_url: str = "", max_length: int | None = MAX_RECORDING_SECONDS,
                           finish_on_key: str | None = "#", play_beep: bool | None = True,
                           timeout: int | None = None) -> dict[str, object]:
    """``<Record>`` of a voicemail: posted to /api/voice/recorded (the inbound queue), its recording status
    (completed, absent) reported to ``public_base_url`` + /api/status/recording; None leaves Twilio's default."""
    attrs: dict[str, object] = {"action": RECORDED_PATH, "method": "POST"}
    optional = {"max_length": max_length, "finish_on_key": finish_on_key, "play_beep": play_beep, "timeout": timeout}
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if public_base_url:
        attrs.update(recording_status_callback=public_base_url + RECORDING_STATUS_PATH,
                     recording_status_callback_method="POST", recording_status_callback_event="completed absent")
    return attrs


def _menu(response: VoiceResponse, prompt: str = MENU_PROMPT) -> VoiceResponse:
    # actionOnEmptyResult: a caller who presses nothing still reaches the menu, which says goodbye.
    # input "dtmf speech": a key press or words; the hints tell the recogniser which words the menu expects.
    gather = response.gather(input="dtmf speech", num_digits=1, action=MENU_PATH, method="POST", timeout=6,
                             action_on_empty_result=True, hints=SPEECH_HINTS, speech_timeout="auto",
                             language="en-US")
    gather.say(prompt)
    return response


# The menu as code (incoming_call, menu_choice): what the routes served before the flow file (issue 24). The shipped
# flows.json reproduces it; tests/unit/test_flows_default.py holds the two answer for answer, byte for byte.


def incoming_call(greeting: str) -> str:
    """Greeting, a short pause, then the one-digit menu."""
    response = VoiceResponse()
    response.say(greeting)
    response.pause(length=1)
    return render(_menu(response))


def menu_choice(digits: str, api_version: str, forward_to: str = "", public_base_url: str = "") -> str:
    """The menu's answer to ``Digits`` (see DESIGN: 1 about, 2 voicemail, 0 forward, none goodbye). The voicemail's
    recording status (completed, absent) is reported to ``public_base_url`` + /api/status/recording."""
    response = VoiceResponse()
    if digits == "1":
        version = api_version or "unknown"
        response.say(f"This call reached {APP_NAME}, using Twilio API version {version[:MAX_ECHO_CHARS]}.")
        response.pause(length=1)
        response.say(GOODBYE)
        response.hangup()
    elif digits == "2":
        response.say("Please leave a message after the beep. Press the pound key when you are done.")
        response.record(**voicemail_record_attrs(public_base_url))
        response.say("No message was recorded. " + GOODBYE)
        response.hangup()
    elif digits == "0" and forward_to:
        response.say("Connecting you now.")
        response.dial(forward_to)
    elif digits == "":
        response.say(GOODBYE)
        response.hangup()
    else:
        sorry = "Nobody is available to take your call." if digits == "0" else "Sorry, that is not an option."
        response.say(sorry)
        _menu(response)
    return render(response)


def unavailable() -> str:
    """The safe answer when the flow cannot serve a call (file refused, unknown node): sorry, then hang up."""
    response = VoiceResponse()
    response.say(UNAVAILABLE)
    response.hangup()
    return render(response)


def hangup() -> str:
    """``<Response><Hangup/></Response>``: a gather with no no-input branch, when the caller said nothing."""
    response = VoiceResponse()
    response.hangup()
    return render(response)


def voicemail_saved() -> str:
    response = VoiceResponse()
    response.say("Thank you, your message has been recorded. Goodbye.")
    response.hangup()
    return render(response)


def say(messages: Sequence[str], voice: str = "", language: str = "") -> str:
    """One ``<Say>`` per message, in order: our own twimlets/message."""
    response = VoiceResponse()
    attrs = {k: v for k, v in (("voice", voice), ("language", language)) if v}
    for message in messages:
        response.say(message, **attrs)
    return render(response)


def sms_reply(text: str = "") -> str:
    """``<Response><Message>text</Message></Response>``, or an empty ``<Response/>`` for no reply."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return render(response)
