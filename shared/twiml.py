"""TwiML documents the webhooks answer with, built with twilio's TwiML classes (never by string pasting)."""

from __future__ import annotations

from typing import Sequence

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from . import APP_NAME

MENU_PATH = "/api/voice/menu"
RECORDED_PATH = "/api/voice/recorded"
MENU_PROMPT = (
    "Press 1 to hear about this line, 2 to leave a message, 0 to speak to someone. "
)
GOODBYE = "Thank you for calling. Goodbye."
MAX_RECORDING_SECONDS = 120


def _menu(response: VoiceResponse, prompt: str = MENU_PROMPT) -> VoiceResponse:
    # actionOnEmptyResult: a caller who presses nothing still reaches the menu, which says goodbye.
    gather = response.gather(num_digits=1, action=MENU_PATH, method="POST", timeout=6, action_on_empty_result=True)
    gather.say(prompt)
    return response


def incoming_call(greeting: str) -> str:
    """Greeting, a short pause, then the one-digit menu."""
    response = VoiceResponse()
    response.say(greeting)
    response.pause(length=1)
    return str(_menu(response))


def menu_choice(digits: str, api_version: str, forward_to: str = "") -> str:
    """The menu's answer to ``Digits`` (see DESIGN: 1 about, 2 voicemail, 0 forward, none goodbye)."""
    response = VoiceResponse()
    if digits == "1":
        version = api_version or "unknown"
        response.say(f"This call reached {APP_NAME}, using Twilio API version {version}.")
        response.pause(length=1)
        response.say(GOODBYE)
        response.hangup()
    elif digits == "2":
        response.say("Please leave a message after the beep. Press the pound key when you are done.")
        response.record(action=RECORDED_PATH, method="POST", max_length=MAX_RECORDING_SECONDS,
                        finish_on_key="#", play_beep=True)
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
    return str(response)


def voicemail_saved() -> str:
    response = VoiceResponse()
    response.say("Thank you, your message has been recorded. Goodbye.")
    response.hangup()
    return str(response)


def say(messages: Sequence[str], voice: str = "", language: str = "") -> str:
    """One ``<Say>`` per message, in order: our own twimlets/message."""
    response = VoiceResponse()
    attrs = {k: v for k, v in (("voice", voice), ("language", language)) if v}
    for message in messages:
        response.say(message, **attrs)
    return str(response)


def sms_reply(text: str = "") -> str:
    """``<Response><Message>text</Message></Response>``, or an empty ``<Response/>`` for no reply."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)
