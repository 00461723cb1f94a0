"""``python -m devhost.simulate``: play Twilio against the app from a terminal, no tunnel and no phone needed.

Each request is signed exactly as Twilio signs it (twilio's RequestValidator, ``X-Twilio-Signature`` over
``PUBLIC_BASE_URL`` + path + query and the form parameters) with the configured auth token, and the TwiML answer
is printed as what the caller would hear or the sender would get back.

    python -m devhost.simulate sms "Hello"                 inbound SMS (STOP / START / HELP work as on a phone)
    python -m devhost.simulate sms "look" --media https://example.com/cat.jpg
    python -m devhost.simulate call                        a call: walks the IVR, asking for each key press
    python -m devhost.simulate call --digits 2,            non-interactive: press 2, then no input
    python -m devhost.simulate call --script 9,say:one     a path through any flow file, unattended (fails if
                                                           the call ends before the script does)
    python -m devhost.simulate voicemail                   a recorded voicemail arriving
    python -m devhost.simulate status message --id ID --status delivered

Settings: ``--token`` / ``--public-url`` / ``--base-url``, else ``TWILIO_AUTH_TOKEN`` / ``PUBLIC_BASE_URL``
from the environment, else local.settings.json ``Values``. Requests go to ``--base-url`` (default: the public
URL), so against a deployed app give its ``PUBLIC_BASE_URL`` and auth token and nothing else. A
``PUBLIC_BASE_URL`` left at ``http://localhost:7071`` means the local stack: the host of the ``make run`` running
in this folder (or ``LOCAL_HTTP_PORT``), named in one line on stderr. Options go before or after the scenario.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import quote, urljoin, urlsplit

import requests
from twilio.request_validator import RequestValidator

from shared import localstack

from .settings import LocalSettingsError, read_local_settings

DEFAULT_FROM = "+14155550100"
MAX_STEPS = 25
EXIT_REJECTED = 1


class SimulatorError(RuntimeError):
    """The app could not be reached, or answered something a Twilio call could not follow."""


@dataclass
class Target:
    public_url: str  # what Twilio would call, and what the signature covers
    base_url: str  # where the request is actually sent
    token: str
    account_sid: str

    def transport_url(self, public: str) -> str:
        """``public`` rewritten onto ``base_url`` when it points at the app's public URL."""
        if public.startswith(self.public_url):
            return self.base_url + public[len(self.public_url):]
        return public

    def send(self, method: str, public: str, params: dict[str, str]) -> requests.Response:
        signature = RequestValidator(self.token).compute_signature(public, params if method == "POST" else {})
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1 (switchboard simulator)"}
        url = self.transport_url(public)
        try:
            if method == "POST":
                return requests.post(url, data=params, headers=headers, timeout=30)
            return requests.get(url, headers=headers, timeout=30)
        except requests.RequestException as exc:
            raise SimulatorError(f"cannot reach {url}: {type(exc).__name__} (is `make run` running?)") from None


# ---------------------------------------------------------------- reading TwiML aloud


_WAITS_FOR_CALLER = {"Gather": "if the caller presses nothing:", "Record": "if nothing is recorded:"}


def describe(element: ET.Element, indent: str = "  ") -> list[str]:
    """What each verb of a TwiML document does, one line each, in the order Twilio runs them."""
    lines = []
    for position, verb in enumerate(element):
        if position and element[position - 1].tag in _WAITS_FOR_CALLER:
            # Twilio goes on past a Gather / Record only when the caller gives nothing: say so, not as if it ran.
            lines.append(f"{indent}{_WAITS_FOR_CALLER[element[position - 1].tag]}")
            indent += "  "
        text = (verb.text or "").strip()
        tag = verb.tag
        if tag == "Say":
            voice = f" ({verb.get('voice')})" if verb.get("voice") else ""
            lines.append(f'{indent}says{voice}: "{text}"')
        elif tag == "Play":
            lines.append(f"{indent}plays: {text}")
        elif tag == "Pause":
            lines.append(f"{indent}pauses {verb.get('length', '1')} s")
        elif tag == "Gather":
            words = " or words" if "speech" in (verb.get("input") or "").split() else ""
            lines.append(f"{indent}waits for {verb.get('numDigits', 'any number of')} key press(es){words} "
                         f"-> {verb.get('method', 'POST')} {verb.get('action', '(this URL)')}")
            lines += describe(verb, indent + "  ")
        elif tag == "Record":
            lines.append(f"{indent}records a message (max {verb.get('maxLength', '3600')} s) "
                         f"-> {verb.get('method', 'POST')} {verb.get('action', '(this URL)')}")
        elif tag == "Dial":
            number = text or " ".join((n.text or "").strip() for n in verb)
            lines.append(f"{indent}dials: {number}")
        elif tag == "Redirect":
            lines.append(f"{indent}redirects -> {verb.get('method', 'POST')} {text}")
        elif tag == "Enqueue":
            lines.append(f"{indent}waits in the call queue: {text}")
        elif tag == "Hangup":
            lines.append(f"{indent}hangs up")
        elif tag == "Reject":
            lines.append(f"{indent}rejects the call")
        elif tag == "Message":
            body = verb.find("Body")
            words = (body.text or "").strip() if body is not None else text
            lines.append(f'{indent}replies: "{words}"')
            lines += [f"{indent}  with media: {(m.text or '').strip()}" for m in verb.findall("Media")]
        else:
            lines.append(f"{indent}<{tag}> {text}".rstrip())
    if not len(element):
        lines.append(f"{indent}(nothing: an empty <Response/>)")
    return lines


def show_response(response: requests.Response, out: Callable[[str], None]) -> ET.Element | None:
    """Print the status and the TwiML read aloud; the parsed document, or None if it is not TwiML."""
    kind = response.headers.get("Content-Type", "")
    out(f"<- {response.status_code} {response.reason}" + (f" ({kind})" if kind else ""))
    if not response.content:
        return None
    try:
        document = ET.fromstring(response.content)
    except ET.ParseError:
        out("  " + response.text.strip()[:500])
        return None
    if document.tag != "Response":
        out("  " + response.text.strip()[:500])
        return None
    for line in describe(document):
        out(line)
    return document


# ---------------------------------------------------------------- the scenarios


def sms(target: Target, body: str, sender: str, to: str, media: Sequence[str], out: Callable[[str], None]) -> int:
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": target.account_sid,
              "From": sender, "To": to, "Body": body, "NumMedia": str(len(media)), "NumSegments": "1",
              "SmsStatus": "received", "ApiVersion": "2010-04-01"}
    for i, url in enumerate(media):
        params[f"MediaUrl{i}"] = url
        params[f"MediaContentType{i}"] = _guess_type(url)
    public = target.public_url + "/api/sms"
    out(f'-> POST {public}  SMS from {sender}: "{body}"' + (f" + {len(media)} media" if media else ""))
    response = target.send("POST", public, params)
    show_response(response, out)
    return 0 if response.ok else EXIT_REJECTED


def call(target: Target, sender: str, to: str, next_digits: Callable[[], str], out: Callable[[str], None],
         recording_url: str) -> int:
    """Follow the call's TwiML as Twilio would: Gather → its action with the digits pressed (or on to the next
    verb when none are), Record → its action with a recording, Redirect → its URL, until a hangup or the end."""
    call_sid = "CA" + uuid.uuid4().hex
    base = {"CallSid": call_sid, "AccountSid": target.account_sid, "From": sender, "To": to,
            "CallStatus": "in-progress", "Direction": "inbound", "ApiVersion": "2010-04-01"}
    method, public, extra = "POST", target.public_url + "/api/voice", {"CallStatus": "ringing"}
    for _ in range(MAX_STEPS):
        out(f"-> {method} {public}" + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else ""))
        response = target.send(method, public, {**base, **extra})
        document = show_response(response, out)
        if not response.ok or document is None:
            return EXIT_REJECTED
        step = _next_step(document, public, next_digits, recording_url, out)
        if step is None:
            out("call ended")
            if isinstance(next_digits, Script) and any(next_digits.left):  # trailing "no input" is no answer
                out(f"script: the call ended with {len(next_digits.left)} step(s) unplayed: "
                    f"{','.join(next_digits.left)}")
                return EXIT_REJECTED
            return 0
        method, public, extra = step
    raise SimulatorError(f"the call did not end after {MAX_STEPS} requests (a redirect loop?)")


def _next_step(document: ET.Element, current: str, next_digits: Callable[[], str], recording_url: str,
               out: Callable[[str], None]) -> tuple[str, str, dict[str, str]] | None:
    for verb in document:
        if verb.tag in ("Hangup", "Reject"):
            return None
        if verb.tag == "Redirect":
            return verb.get("method", "POST").upper(), urljoin(current, (verb.text or "").strip()), {}
        if verb.tag == "Gather":
            digits = next_digits()
            if digits.startswith(SAY_PREFIX):
                words = digits[len(SAY_PREFIX):].strip()
                out(f'caller says: "{words}"')
                return verb.get("method", "POST").upper(), urljoin(current, verb.get("action") or current), {
                    "SpeechResult": words, "Confidence": "0.9"}
            if digits:
                out(f"caller presses: {digits}")
                return verb.get("method", "POST").upper(), urljoin(current, verb.get("action") or current), {
                    "Digits": digits, "FinishedOnKey": ""}
            out("caller presses nothing")
            if verb.get("actionOnEmptyResult") == "true":
                return verb.get("method", "POST").upper(), urljoin(current, verb.get("action") or current), {}
            continue
        if verb.tag == "Dial":
            out("the dialled call ends (the simulator connects nobody); Twilio goes on with the next verb")
            continue
        if verb.tag == "Record":
            out(f"caller leaves a message ({recording_url})")
            return verb.get("method", "POST").upper(), urljoin(current, verb.get("action") or current), {
                "RecordingUrl": recording_url, "RecordingDuration": "7", "RecordingSid": "RE" + uuid.uuid4().hex,
                "Digits": "hangup"}
    return None


def voicemail(target: Target, sender: str, to: str, recording_url: str, duration: int,
              out: Callable[[str], None]) -> int:
    params = {"CallSid": "CA" + uuid.uuid4().hex, "AccountSid": target.account_sid, "From": sender, "To": to,
              "RecordingUrl": recording_url, "RecordingDuration": str(duration),
              "RecordingSid": "RE" + uuid.uuid4().hex, "CallStatus": "completed", "ApiVersion": "2010-04-01"}
    public = target.public_url + "/api/voice/recorded"
    out(f"-> POST {public}  voicemail from {sender}, {duration} s: {recording_url}")
    response = target.send("POST", public, params)
    show_response(response, out)
    return 0 if response.ok else EXIT_REJECTED


def status(target: Target, kind: str, send_id: str, state: str, sid: str, sender: str, to: str,
           out: Callable[[str], None]) -> int:
    if kind == "message":
        params = {"MessageSid": sid or "SM" + uuid.uuid4().hex, "MessageStatus": state, "SmsStatus": state}
    else:
        params = {"CallSid": sid or "CA" + uuid.uuid4().hex, "CallStatus": state, "CallDuration": "12"}
    # A status callback is about a send of the app's: From is the app's number, To the recipient.
    params.update({"AccountSid": target.account_sid, "From": to, "To": sender, "ApiVersion": "2010-04-01"})
    # Encoded as Twilio writes the callback URL, so the URL signed is the URL sent (an id with a space, '#', '%' or
    # non-ASCII would otherwise be re-encoded or cut by the HTTP client after signing: a 403 for a bad signature).
    public = f"{target.public_url}/api/status/{kind}?id={quote(send_id, safe='')}"
    out(f"-> POST {public}  {kind} status {state}")
    response = target.send("POST", public, params)
    show_response(response, out)
    return 0 if response.ok else EXIT_REJECTED


def _guess_type(url: str) -> str:
    suffix = urlsplit(url).path.rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
            "mp4": "video/mp4", "pdf": "application/pdf"}.get(suffix, "application/octet-stream")


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devhost.simulate", description=_plain(__doc__.split("\n\n")[0]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=_plain("\n\n".join(__doc__.split("\n\n")[1:])))

    def where(target: argparse.ArgumentParser, default: object) -> None:
        # The same options on the top level and on each scenario; a scenario's only overrides what it was given.
        target.add_argument("--base-url", default=default, help="where to send requests (default: the public URL)")
        target.add_argument("--public-url", default=default, help="the app's PUBLIC_BASE_URL, which signatures cover")
        target.add_argument("--token", default=default,
                            help="Twilio auth token to sign with (default: TWILIO_AUTH_TOKEN)")
        target.add_argument("--from", dest="sender", default=DEFAULT_FROM if default is None else default,
                            help=f"caller / sender; for status, the recipient (default {DEFAULT_FROM})")
        target.add_argument("--to", default=default, help="the app's number (default: TWILIO_FROM_NUMBER)")

    where(parser, None)
    shared = argparse.ArgumentParser(add_help=False)
    where(shared, argparse.SUPPRESS)
    kinds = parser.add_subparsers(dest="kind", required=True)
    sms_cmd = kinds.add_parser("sms", parents=[shared], help="an inbound SMS (try STOP, START, HELP)")
    sms_cmd.add_argument("body")
    sms_cmd.add_argument("--media", action="append", default=[], help="media URL (repeatable: MMS)")
    call_cmd = kinds.add_parser("call", parents=[shared], help="an incoming call, walking the IVR")
    answers = call_cmd.add_mutually_exclusive_group()
    answers.add_argument("--digits", help="keys to press at each menu, comma-separated; empty = no input "
                                          "(default: ask on the terminal)")
    answers.add_argument("--script", type=Script.parse, help="a path to play unattended, one answer per gather, "
                         "comma-separated: keys (1, 0, #, 123), say:WORDS for speech, empty for no input; the "
                         "call must not end with answers left (exit 1)")
    call_cmd.add_argument("--recording-url", default="https://api.twilio.com/2010-04-01/Recordings/RE-simulated")
    mail = kinds.add_parser("voicemail", parents=[shared], help="a recorded voicemail arriving")
    mail.add_argument("--recording-url", default="https://api.twilio.com/2010-04-01/Recordings/RE-simulated")
    mail.add_argument("--duration", type=int, default=7)
    status_cmd = kinds.add_parser("status", parents=[shared], help="a status callback for a send")
    status_cmd.add_argument("which", choices=["message", "call"])
    status_cmd.add_argument("--id", required=True, help="the send's id (what shared.enqueue printed)")
    status_cmd.add_argument("--status", required=True, help="e.g. delivered, failed, completed, busy")
    status_cmd.add_argument("--sid", default="", help="the Twilio SID (default: a made-up one)")
    return parser


def _plain(text: str) -> str:
    """Docstring text for --help: without reStructuredText's double backticks."""
    return text.replace("``", "")


def _setting(name: str, values: dict) -> str:
    return os.environ.get(name) or str(values.get(name) or "")


SAY_PREFIX = "say:"
_KEYS = re.compile(r"[0-9*#]{1,32}")


class Script:
    """``--script 1,say:reception,#``: the answers to give, one per ``<Gather>``, in order; what is left when the
    call ends is reported (the path did not go as written)."""

    def __init__(self, steps: Sequence[str]) -> None:
        self.left = list(steps)

    @classmethod
    def parse(cls, spec: str) -> "Script":
        steps = [step.strip() for step in spec.split(",")]
        for step in steps:
            if step and not step.startswith(SAY_PREFIX) and not _KEYS.fullmatch(step):
                raise argparse.ArgumentTypeError(f"{step[:40]!r} is neither keys (0-9 * #), say:WORDS nor empty")
        return cls(steps)

    def __call__(self) -> str:
        return self.left.pop(0) if self.left else ""


def _digit_source(spec: str | None) -> Callable[[], str]:
    if spec is not None:
        queue = spec.split(",")
        return lambda: queue.pop(0).strip() if queue else ""
    if not sys.stdin.isatty():
        return lambda: ""

    def ask() -> str:
        try:
            return input("press a key (Enter = no input): ").strip()
        except EOFError:
            return ""

    return ask


def _undecodable_argument(args: argparse.Namespace) -> str | None:
    """The first argument holding bytes that are not UTF-8 (Python keeps them as lone surrogates, which no HTTP
    request can carry), named as the user typed it; None when all are text."""
    for name, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            bad = next((ord(ch) for ch in item if "\ud800" <= ch <= "\udfff"), None) if isinstance(item, str) else None
            if bad is not None:
                shown = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"U+{bad:04X}"
                label = {"body": "the SMS body", "sender": "--from"}.get(name, "--" + name.replace("_", "-"))
                return f"{label} is not valid UTF-8 text ({shown}); pass text in UTF-8"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    undecodable = _undecodable_argument(args)
    if undecodable:
        print(undecodable, file=sys.stderr)
        return 2
    try:
        values = read_local_settings().get("Values", {}) if not (args.token and args.public_url) else {}
    except LocalSettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    token = args.token or _setting("TWILIO_AUTH_TOKEN", values)
    public = (args.public_url or _setting("PUBLIC_BASE_URL", values) or localstack.LOCAL_PUBLIC_URL).rstrip("/")
    if not args.public_url and public == localstack.LOCAL_PUBLIC_URL:  # the local stack, wherever it runs
        try:
            stack = localstack.find(os.environ)
        except localstack.PortSettingError as exc:
            print(exc, file=sys.stderr)
            return 2
        public = stack.public_url()
        print(stack.describe(["http"]), file=sys.stderr, flush=True)
    if not token:
        print("no auth token: pass --token or set TWILIO_AUTH_TOKEN (environment or local.settings.json)",
              file=sys.stderr)
        return 2
    target = Target(public, (args.base_url or public).rstrip("/"), token,
                    _setting("TWILIO_ACCOUNT_SID", values) or "AC" + "0" * 32)
    to = args.to or _setting("TWILIO_FROM_NUMBER", values) or "+15005550006"

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        if args.kind == "sms":
            return sms(target, args.body, args.sender, to, args.media, out)
        if args.kind == "call":
            answers = args.script if args.script is not None else _digit_source(args.digits)
            return call(target, args.sender, to, answers, out, args.recording_url)
        if args.kind == "voicemail":
            return voicemail(target, args.sender, to, args.recording_url, args.duration, out)
        return status(target, args.which, args.id, args.status, args.sid, args.sender, to, out)
    except SimulatorError as exc:
        print(exc, file=sys.stderr)
        return EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
