"""Phone menus and SMS keyword replies as configuration: the flow file, its check, and its walk.

Why a file: a team that deploys switchboard wants its own phone tree and its own SMS keywords without editing
Python, versioned in its repo and checked before a deploy. The file (setting ``FLOWS_FILE``, default
``flows.json`` beside ``function_app.py``; JSON Schema ``flows.schema.json`` at the repo root; README, "Phone
menus and keywords") names voice nodes, each a list of steps (say, play, pause, gather, record, dial, enqueue,
hangup, redirect), and keyword → reply rules for SMS.

Why these rules:
- The file is read and checked once per process (:func:`current`). One that fails the check is refused with one
  log line; calls then get a safe answer (sorry, goodbye: :func:`shared.twiml.unavailable`) instead of a 500,
  and SMS get the plain ``SMS_AUTO_REPLY``. ``python -m shared.flows check [FILE]`` runs the same check (and
  reports warnings too) before a deploy.
- Nothing in the file or a request becomes markup or a path. Text goes through twilio's TwiML builder (escaped,
  XML-forbidden characters dropped); node names from a request are matched against :data:`NODE_NAME` and looked
  up in the file; values from settings or the request enter only through placeholders with fixed whitelists:
  ``{setting:NAME}`` (:data:`SETTING_PLACEHOLDERS`, or any ``FLOW_*`` app setting), ``{param:NAME}``
  (:data:`PARAM_PLACEHOLDERS`, at most :data:`MAX_ECHO_CHARS` characters) and ``{app:name}``, each with an
  optional ``|fallback`` for an empty value. A placeholder's value is never scanned for placeholders again.
  A number to dial may come from a setting, never from the request (that would let a caller dial anywhere on
  the account's bill).
- STOP, START, HELP and their synonyms stay with ``shared.inbound`` (carrier rules): the check refuses them.

This module imports nothing heavy: twilio's TwiML classes load only when a node is rendered.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, NamedTuple, Sequence, TypeVar, Union

log = logging.getLogger("switchboard.flows")

APP_ROOT = Path(__file__).resolve().parent.parent  # where function_app.py and the default flows.json live
DEFAULT_FILE = "flows.json"
FORMAT_VERSION = 1
NODE_NAME_RULE = "1-64 of A-Z a-z 0-9 _ -"
NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
DIGITS = re.compile(r"[0-9*#]{1,32}")
SAY_ATTRIBUTE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # the same rule as /api/twiml/say's Voice and Language
QUEUE_NAME = re.compile(r"[A-Za-z0-9 _.-]{1,64}")
HTTPS_URL = re.compile(r"https://[^\s<>\"'{}|\\^`]{1,2000}")
# Characters outside XML 1.0's Char production (#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] |
# [#x10000-#x10FFFF]), written as the complement's few ranges: the same set, compiled ~6x faster (cold start).
# shared.twiml drops them from every answer; the check refuses them in a flow file.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

MAX_FILE_BYTES = 1_000_000
MAX_NODES = 500
MAX_STEPS = 50
MAX_BRANCHES = 32
MAX_WORDS = 50
MAX_SAY_CHARS = 4096  # Twilio's limit for one <Say>
MAX_SMS_CHARS = 1600  # Twilio's limit for one message body (UTF-16 units)
MAX_KEYWORDS = 200
MAX_ECHO_CHARS = 64  # a request parameter is spoken back, but not at any length
MAX_SPEECH_CHARS = 500

SETTING_PLACEHOLDERS = frozenset({"VOICE_GREETING", "FORWARD_TO_NUMBER", "SMS_AUTO_REPLY", "TWILIO_FROM_NUMBER"})
CUSTOM_SETTING = re.compile(r"FLOW_[A-Z0-9_]{1,60}")  # the team's own values, as app settings named FLOW_*
PARAM_PLACEHOLDERS = frozenset({"ApiVersion", "From", "To", "Caller", "Called", "Digits", "SpeechResult",
                                "FromCity", "FromState", "FromCountry"})
APP_PLACEHOLDERS = frozenset({"name"})
INPUTS = ("dtmf", "speech", "dtmf speech")
TWILIO_FINISH_KEY = "#"  # Twilio's default finishOnKey for <Gather> (never part of Digits)

Kind = Literal["setting", "param", "app"]
Severity = Literal["error", "warning"]


# ---------------------------------------------------------------- errors


class FlowError(Exception):
    """The flow cannot answer this request; callers answer the safe fallback instead."""


class FlowFileError(FlowError):
    """The flow file is missing, unreadable or fails the check; ``problems`` lists why."""

    def __init__(self, path: Path, problems: Sequence[Problem]) -> None:
        errors = [p for p in problems if p.severity == "error"]
        first = errors[0] if errors else Problem("", "no problem recorded")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{path}: {first}{more}")
        self.path = path
        self.problems = tuple(problems)


class UnknownNodeError(FlowError):
    """A request named a node the loaded file does not have (or one without the step it expects)."""


class Problem(NamedTuple):
    """One finding of the check: where in the file (a JSON path), what, and whether it refuses the file."""

    where: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


# ---------------------------------------------------------------- the model


class Ref(NamedTuple):
    """A ``{kind:name|fallback}`` placeholder."""

    kind: Kind
    name: str
    fallback: str = ""


class Template(NamedTuple):
    """Text with placeholders, parsed once at load."""

    parts: tuple[Union[str, Ref], ...]

    @property
    def refs(self) -> tuple[Ref, ...]:
        return tuple(p for p in self.parts if isinstance(p, Ref))

    def render(self, value_of: Callable[[Ref], str]) -> str:
        return "".join(p if isinstance(p, str) else (value_of(p) or p.fallback) for p in self.parts)


class Say(NamedTuple):
    text: Template
    voice: str = ""
    language: str = ""
    loop: int | None = None


class Play(NamedTuple):
    url: str
    loop: int | None = None


class Pause(NamedTuple):
    length: int


Prompt = Union[Say, Play, Pause]


class Branch(NamedTuple):
    goto: str
    digits: str = ""
    words: tuple[str, ...] = ()  # each normalised with speech_words, joined by one space


class Gather(NamedTuple):
    branches: tuple[Branch, ...]
    input: str = "dtmf"
    prompt: tuple[Prompt, ...] = ()
    num_digits: int | None = None
    timeout: int | None = None
    finish_on_key: str | None = None
    speech_timeout: str | None = None
    language: str = ""
    hints: str = ""
    default: str | None = None  # None: the same node again
    no_input: str | None = None  # None: hang up

    @property
    def hears_speech(self) -> bool:
        return "speech" in self.input.split()

    @property
    def hears_keys(self) -> bool:
        return "dtmf" in self.input.split()


class Record(NamedTuple):
    max_length: int | None = None
    finish_on_key: str | None = None
    play_beep: bool | None = None
    timeout: int | None = None


class Dial(NamedTuple):
    number: Template
    caller_id: Template | None = None
    timeout: int | None = None
    unavailable: str | None = None  # when the number is empty (a setting not set), this node plays instead


class Enqueue(NamedTuple):
    name: str
    wait_url: str = ""


class Hangup(NamedTuple):
    """``<Hangup/>``."""


class Redirect(NamedTuple):
    target: str


Step = Union[Say, Play, Pause, Gather, Record, Dial, Enqueue, Hangup, Redirect]
TERMINAL = (Gather, Hangup, Redirect)  # nothing after these ever plays
EXIT = (Hangup, Dial, Record, Enqueue)  # the call ends, reaches a person, or leaves a voicemail


class Node(NamedTuple):
    name: str
    steps: tuple[Step, ...]
    next: str | None = None

    @property
    def gather(self) -> Gather | None:
        last = self.steps[-1] if self.steps else None
        return last if isinstance(last, Gather) else None

    @property
    def dials(self) -> tuple[Dial, ...]:
        return tuple(s for s in self.steps if isinstance(s, Dial))


class Flow(NamedTuple):
    """A checked flow file: voice nodes by name, the start node, and SMS keyword → reply (keywords normalised)."""

    path: Path
    start: str
    nodes: Mapping[str, Node]
    keywords: Mapping[str, Template]
    warnings: tuple[Problem, ...] = ()

    def node(self, name: str) -> Node:
        if not NODE_NAME.fullmatch(name) or name not in self.nodes:
            raise UnknownNodeError(f"no node {name[:64]!r} in {self.path.name}")
        return self.nodes[name]


# ---------------------------------------------------------------- speech


_WORD = re.compile(r"[^\W_]+")
K = TypeVar("K")


def speech_words(text: str) -> str:
    """Words as a recogniser's text is compared: NFC, case-folded, letters and digits only, one space apart
    ("Voice-Mail!" → "voice mail"); any script, so a menu in Spanish matches "sí"."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFC", text[:MAX_SPEECH_CHARS]).casefold()))


def choice_for_speech(speech: str, choices: Mapping[K, Iterable[str]]) -> K | None:
    """The one choice whose words (already :func:`speech_words`) the caller said as whole words; None when they
    named none or more than one ("one or two"), so an unclear answer is not guessed."""
    text = f" {speech_words(speech)} "
    named = [key for key, words in choices.items() if any(w and f" {w} " in text for w in words)]
    return named[0] if len(named) == 1 else None


# ---------------------------------------------------------------- reading and checking a file


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_REF = re.compile(r"(setting|param|app):([A-Za-z0-9_]{1,64})(?:\|([^{}|]*))?")


class _Checker:
    """Builds the model from parsed JSON, recording every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.references: list[tuple[str, str]] = []  # (where, node name)

    def error(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def warn(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message, "warning"))

    # -- shapes

    def obj(self, value: Any, where: str, required: Sequence[str], optional: Sequence[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(where, f"must be an object, not {_json_type(value)}")
            return None
        for key in required:
            if key not in value:
                self.error(where, f"missing {key!r}")
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown:
            self.error(where, f"unknown field(s) {', '.join(map(repr, unknown))} (allowed: "
                              f"{', '.join(list(required) + list(optional))})")
        return value

    def integer(self, value: Any, where: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(where, f"must be a whole number {low}-{high}, not {_json_type(value)}")
            return None
        if not low <= value <= high:
            self.error(where, f"must be {low}-{high}, not {value}")
            return None
        return value

    def boolean(self, value: Any, where: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(where, f"must be true or false, not {_json_type(value)}")
            return None
        return value

    def string(self, value: Any, where: str, pattern: re.Pattern[str] | None = None, rule: str = "",
               max_chars: int = 4096) -> str | None:
        if not isinstance(value, str):
            self.error(where, f"must be a string, not {_json_type(value)}")
            return None
        if not self.carriable(value, where):
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.error(where, f"{value[:80]!r} is not {rule}")
            return None
        if len(value) > max_chars:
            self.error(where, f"{len(value)} characters, over {max_chars}")
            return None
        return value

    def carriable(self, text: str, where: str) -> bool:
        bad = XML_FORBIDDEN.search(text)
        if bad:
            self.error(where, f"holds U+{ord(bad.group()):04X} at character {bad.start()}, which TwiML (XML 1.0) "
                              f"cannot carry")
            return False
        return True

    def node_ref(self, value: Any, where: str) -> str | None:
        name = self.string(value, where, NODE_NAME, f"a node name ({NODE_NAME_RULE})")
        if name is not None:
            self.references.append((where, name))
        return name

    def template(self, value: Any, where: str, kinds: frozenset[str], max_chars: int) -> Template | None:
        text = self.string(value, where, max_chars=max_chars * 4)
        if text is None:
            return None
        parts: list[Union[str, Ref]] = []
        literal: list[str] = []
        ok = True
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            literal.append(text[position:match.start()])
            position = match.end()
            token = match.group()
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            if match.group(1) is None:
                self.error(where, f"unmatched {token!r} at character {match.start()} (write {token * 2} for a "
                                  f"literal one)")
                ok = False
                continue
            ref = self._ref(match.group(1), where, kinds)
            if ref is None:
                ok = False
                continue
            parts.append("".join(literal))
            literal = []
            parts.append(ref)
        literal.append(text[position:])
        parts.append("".join(literal))
        if not ok:
            return None
        template = Template(tuple(p for p in parts if p != ""))
        fixed = "".join(p for p in template.parts if isinstance(p, str))
        if len(fixed) > max_chars:
            self.error(where, f"{len(fixed)} characters, over {max_chars}")
            return None
        return template

    def _ref(self, body: str, where: str, kinds: frozenset[str]) -> Ref | None:
        match = _REF.fullmatch(body)
        if match is None:
            self.error(where, f"{{{body[:60]}}} is not a placeholder: use {{setting:NAME}}, {{param:NAME}} or "
                              f"{{app:name}}, optionally with |fallback (and {{{{ }}}} for literal braces)")
            return None
        kind, name, fallback = match.group(1), match.group(2), match.group(3) or ""
        if kind not in kinds:
            allowed = ", ".join(sorted(kinds))
            self.error(where, f"{{{kind}:…}} cannot be used here (allowed: {allowed})")
            return None
        if kind == "setting" and name not in SETTING_PLACEHOLDERS and not CUSTOM_SETTING.fullmatch(name):
            self.error(where, f"setting {name} cannot be echoed: use one of {', '.join(sorted(SETTING_PLACEHOLDERS))}"
                              f" or an app setting named FLOW_*")
            return None
        if kind == "param" and name not in PARAM_PLACEHOLDERS:
            self.error(where, f"request parameter {name} cannot be echoed: use one of "
                              f"{', '.join(sorted(PARAM_PLACEHOLDERS))}")
            return None
        if kind == "app" and name not in APP_PLACEHOLDERS:
            self.error(where, "{app:…} knows only {app:name}")
            return None
        return Ref(kind, name, fallback)  # type: ignore[arg-type]

    # -- steps

    def step(self, value: Any, where: str, allowed: Sequence[str]) -> Step | None:
        if not isinstance(value, dict) or len(value) != 1:
            self.error(where, f"a step is an object with exactly one of {', '.join(allowed)}")
            return None
        (verb, body), = value.items()
        where = f"{where}.{verb}"
        if verb not in allowed:
            self.error(where, f"unknown or misplaced step {verb!r} (allowed here: {', '.join(allowed)})")
            return None
        return getattr(self, f"_{verb}")(body, where)

    def _say(self, body: Any, where: str) -> Say | None:
        if isinstance(body, str):
            body = {"text": body}
        spec = self.obj(body, where, ["text"], ["voice", "language", "loop"])
        if spec is None or "text" not in spec:
            return None
        text = self.template(spec["text"], f"{where}.text", frozenset({"setting", "param", "app"}), MAX_SAY_CHARS)
        if text is not None and not text.parts:
            self.error(f"{where}.text", "is empty: nothing would be said")
            text = None
        voice = self._attribute(spec, "voice", where)
        language = self._attribute(spec, "language", where)
        loop = self.integer(spec["loop"], f"{where}.loop", 0, 1000) if "loop" in spec else None
        return Say(text, voice or "", language or "", loop) if text is not None else None

    def _attribute(self, spec: dict[str, Any], key: str, where: str) -> str | None:
        if key not in spec:
            return ""
        return self.string(spec[key], f"{where}.{key}", SAY_ATTRIBUTE, "a voice or language name (1-64 of "
                                                                       "A-Z a-z 0-9 . _ -)")

    def _play(self, body: Any, where: str) -> Play | None:
        if isinstance(body, str):
            body = {"url": body}
        spec = self.obj(body, where, ["url"], ["loop"])
        if spec is None or "url" not in spec:
            return None
        url = self.string(spec["url"], f"{where}.url", HTTPS_URL, "an https URL")
        loop = self.integer(spec["loop"], f"{where}.loop", 0, 1000) if "loop" in spec else None
        return Play(url, loop) if url is not None else None

    def _pause(self, body: Any, where: str) -> Pause | None:
        length = self.integer(body, where, 1, 600)
        return Pause(length) if length is not None else None

    def _hangup(self, body: Any, where: str) -> Hangup | None:
        if body is not True:
            self.error(where, "write \"hangup\": true")
            return None
        return Hangup()

    def _redirect(self, body: Any, where: str) -> Redirect | None:
        target = self.node_ref(body, where)
        return Redirect(target) if target is not None else None

    def _enqueue(self, body: Any, where: str) -> Enqueue | None:
        if isinstance(body, str):
            body = {"name": body}
        spec = self.obj(body, where, ["name"], ["wait_url"])
        if spec is None or "name" not in spec:
            return None
        name = self.string(spec["name"], f"{where}.name", QUEUE_NAME, "a queue name (1-64 of A-Z a-z 0-9 space _ . -)")
        wait_url = self.string(spec["wait_url"], f"{where}.wait_url", HTTPS_URL, "an https URL") \
            if "wait_url" in spec else ""
        return Enqueue(name, wait_url) if name is not None and wait_url is not None else None

    def _record(self, body: Any, where: str) -> Record | None:
        spec = self.obj(body, where, [], ["max_length", "finish_on_key", "play_beep", "timeout"])
        if spec is None:
            return None
        max_length = self.integer(spec["max_length"], f"{where}.max_length", 1, 14400) if "max_length" in spec \
            else None
        finish = self._finish_key(spec, where)
        beep = self.boolean(spec["play_beep"], f"{where}.play_beep") if "play_beep" in spec else None
        timeout = self.integer(spec["timeout"], f"{where}.timeout", 0, 600) if "timeout" in spec else None
        return Record(max_length, finish, beep, timeout)

    def _finish_key(self, spec: dict[str, Any], where: str) -> str | None:
        if "finish_on_key" not in spec:
            return None
        return self.string(spec["finish_on_key"], f"{where}.finish_on_key", re.compile(r"[0-9*#]{0,12}"),
                           "keys (0-9 * #), or empty for none")

    def _dial(self, body: Any, where: str) -> Dial | None:
        if isinstance(body, str):
            body = {"number": body}
        spec = self.obj(body, where, ["number"], ["caller_id", "timeout", "unavailable"])
        if spec is None or "number" not in spec:
            return None
        number = self._number(spec["number"], f"{where}.number")
        caller_id = self._number(spec["caller_id"], f"{where}.caller_id") if "caller_id" in spec else None
        timeout = self.integer(spec["timeout"], f"{where}.timeout", 5, 600) if "timeout" in spec else None
        unavailable = self.node_ref(spec["unavailable"], f"{where}.unavailable") if "unavailable" in spec else None
        if number is not None and any(not r.fallback for r in number.refs) and "unavailable" not in spec:
            self.error(f"{where}.unavailable", "missing: the number comes from a setting, which may be empty; name the "
                                              "node that plays then")
        return Dial(number, caller_id, timeout, unavailable) if number is not None else None

    def _number(self, value: Any, where: str) -> Template | None:
        template = self.template(value, where, frozenset({"setting"}), 16)
        if template is None:
            return None
        if len(template.parts) == 1 and isinstance(template.parts[0], Ref):
            fallback = template.parts[0].fallback
            if fallback and not E164.fullmatch(fallback):
                self.error(where, f"fallback {fallback[:40]!r} is not an E.164 number (+ and 2-15 digits)")
                return None
            return template
        literal = template.parts[0] if len(template.parts) == 1 else None
        if not isinstance(literal, str) or not E164.fullmatch(literal):
            self.error(where, f"{str(value)[:40]!r} is not an E.164 number (+ and 2-15 digits, e.g. +14155550100) "
                              f"nor one {{setting:NAME}}")
            return None
        return template

    def _gather(self, body: Any, where: str) -> Gather | None:
        spec = self.obj(body, where, ["branches"], ["input", "prompt", "num_digits", "timeout", "finish_on_key",
                                                     "speech_timeout", "language", "hints", "default", "no_input"])
        if spec is None:
            return None
        source = spec.get("input", "dtmf")
        if source not in INPUTS:
            self.error(f"{where}.input", f"must be one of {', '.join(map(repr, INPUTS))}")
            source = None
        prompt = self._prompt(spec.get("prompt", []), f"{where}.prompt")
        num_digits = self.integer(spec["num_digits"], f"{where}.num_digits", 1, 32) if "num_digits" in spec else None
        timeout = self.integer(spec["timeout"], f"{where}.timeout", 1, 600) if "timeout" in spec else None
        finish = self._finish_key(spec, where)
        speech_timeout = self._speech_timeout(spec, where)
        language = self._attribute(spec, "language", where)
        default = self.node_ref(spec["default"], f"{where}.default") if "default" in spec else None
        no_input = self.node_ref(spec["no_input"], f"{where}.no_input") if "no_input" in spec else None
        gather = Gather((), source or "dtmf", prompt, num_digits, timeout, finish, speech_timeout, language or "", "",
                        default, no_input)
        branches = self._branches(spec.get("branches"), f"{where}.branches", gather)
        hints = self._hints(spec, where, branches)
        if source is None or branches is None or hints is None:
            return None
        return Gather(branches, source, prompt, num_digits, timeout, finish, speech_timeout, language or "", hints,
                      default, no_input)

    def _prompt(self, value: Any, where: str) -> tuple[Prompt, ...]:
        if not isinstance(value, list) or len(value) > MAX_STEPS:
            self.error(where, f"must be a list of at most {MAX_STEPS} say, play or pause steps")
            return ()
        steps = [self.step(item, f"{where}[{i}]", ("say", "play", "pause")) for i, item in enumerate(value)]
        return tuple(s for s in steps if isinstance(s, (Say, Play, Pause)))

    def _speech_timeout(self, spec: dict[str, Any], where: str) -> str | None:
        if "speech_timeout" not in spec:
            return None
        value = spec["speech_timeout"]
        if value == "auto":
            return "auto"
        if isinstance(value, str):
            self.error(f"{where}.speech_timeout", "must be \"auto\" or whole seconds 1-60")
            return None
        seconds = self.integer(value, f"{where}.speech_timeout", 1, 60)
        return str(seconds) if seconds is not None else None

    def _branches(self, value: Any, where: str, gather: Gather) -> tuple[Branch, ...] | None:
        if not isinstance(value, list) or not value:
            self.error(where, "a gather needs at least one branch (digits and/or words → a node)")
            return None
        if len(value) > MAX_BRANCHES:
            self.error(where, f"{len(value)} branches, over {MAX_BRANCHES}")
            return None
        branches: list[Branch] = []
        digits_seen: dict[str, int] = {}
        words_seen: dict[str, int] = {}
        finish = TWILIO_FINISH_KEY if gather.finish_on_key is None else gather.finish_on_key
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            spec = self.obj(item, at, ["goto"], ["digits", "words"])
            if spec is None:
                continue
            goto = self.node_ref(spec.get("goto"), f"{at}.goto") if "goto" in spec else None
            digits = self.string(spec["digits"], f"{at}.digits", DIGITS, "keys (1-32 of 0-9 * #)") \
                if "digits" in spec else ""
            words = self._words(spec["words"], f"{at}.words") if "words" in spec else ()
            if digits is None or words is None or goto is None:
                continue
            if not digits and not words:
                self.error(at, "a branch needs digits, words or both")
                continue
            if digits and not gather.hears_keys and not words and not speech_words(digits):
                self.error(f"{at}.digits", f"the gather's input is {gather.input!r}: key presses never arrive")
            if words and not gather.hears_speech:
                self.error(f"{at}.words", f"the gather's input is {gather.input!r}: speech never arrives")
            if digits and gather.num_digits is not None and len(digits) > gather.num_digits:
                self.error(f"{at}.digits", f"{digits!r} is {len(digits)} keys but the gather ends after num_digits "
                                           f"= {gather.num_digits}")
            if digits and finish and any(key in finish for key in digits):
                self.error(f"{at}.digits", f"{digits!r} holds the finish key {finish!r}, which Twilio never sends "
                                           f"in Digits")
            if digits in digits_seen:
                self.error(f"{at}.digits", f"{digits!r} is also branch {digits_seen[digits]}")
            elif digits:
                digits_seen[digits] = i
            spoken = tuple(dict.fromkeys(words + ((speech_words(digits),) if digits and speech_words(digits) else ())))
            for word in words:
                if word in words_seen and words_seen[word] != i:
                    self.error(f"{at}.words", f"{word!r} is also a word of branch {words_seen[word]}: it could never "
                                              f"choose either")
                words_seen.setdefault(word, i)
            branches.append(Branch(goto, digits, spoken))
        return tuple(branches)

    def _words(self, value: Any, where: str) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not value or len(value) > MAX_WORDS:
            self.error(where, f"must be a list of 1-{MAX_WORDS} words or phrases")
            return None
        words: list[str] = []
        for i, item in enumerate(value):
            text = self.string(item, f"{where}[{i}]", max_chars=100)
            if text is None:
                return None
            normal = speech_words(text)
            if not normal:
                self.error(f"{where}[{i}]", f"{text!r} has no letters or digits: a recogniser never writes it")
                return None
            words.append(normal)
        return tuple(dict.fromkeys(words))

    def _hints(self, spec: dict[str, Any], where: str, branches: tuple[Branch, ...] | None) -> str | None:
        if "hints" in spec:
            value = spec["hints"]
            if not isinstance(value, list) or len(value) > 500 or not all(isinstance(h, str) for h in value):
                self.error(f"{where}.hints", "must be a list of words or phrases")
                return None
            for i, hint in enumerate(value):
                if not self.carriable(hint, f"{where}.hints[{i}]"):
                    return None
                if "," in hint or not hint.strip():
                    self.error(f"{where}.hints[{i}]", "a hint is a non-empty phrase without commas")
                    return None
            return ", ".join(h.strip() for h in value)
        # Derived: every branch word that is not a bare number, in file order (the recogniser hears digits anyway).
        words = (w for b in branches or () for w in b.words if not w.isdigit())
        return ", ".join(dict.fromkeys(words))


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def parse(document: Any, path: Path = Path(DEFAULT_FILE)) -> tuple[Flow | None, list[Problem]]:
    """Check a parsed flow document; the flow (None if any error) and every problem found."""
    check = _Checker()
    top = check.obj(document, "", ["version", "voice"], ["$schema", "description", "sms"])
    if top is None:
        return None, check.problems
    if "version" in top and (top["version"] != FORMAT_VERSION or isinstance(top["version"], bool)):
        check.error("version", f"must be {FORMAT_VERSION} (the only format this app reads)")
    if "description" in top:
        check.string(top["description"], "description", max_chars=10_000)
    nodes: dict[str, Node] = {}
    start = ""
    voice = check.obj(top.get("voice"), "voice", ["start", "nodes"], ["description"]) if "voice" in top else None
    if voice is not None:
        start = check.node_ref(voice.get("start"), "voice.start") or "" if "start" in voice else ""
        nodes = _nodes(check, voice.get("nodes"))
    keywords = _keywords(check, top["sms"]) if "sms" in top else {}
    declared = set(voice["nodes"]) if voice is not None and isinstance(voice.get("nodes"), dict) else set()
    if not any(p.where == "voice.nodes" for p in check.problems):  # no nodes at all: that one problem says it
        for where, name in check.references:
            if name not in declared:  # a node with mistakes of its own is reported there, not as unknown
                check.error(where, f"unknown node {name!r}")
    if not any(p.severity == "error" for p in check.problems):
        _check_graph(check, start, nodes)
    if any(p.severity == "error" for p in check.problems):
        return None, check.problems
    warnings = tuple(p for p in check.problems if p.severity == "warning")
    return Flow(path, start, nodes, keywords, warnings), check.problems


def _nodes(check: _Checker, value: Any) -> dict[str, Node]:
    if not isinstance(value, dict) or not value:
        check.error("voice.nodes", "must be an object of at least one node (name → {steps, next})")
        return {}
    if len(value) > MAX_NODES:
        check.error("voice.nodes", f"{len(value)} nodes, over {MAX_NODES}")
        return {}
    nodes: dict[str, Node] = {}
    for name, body in value.items():
        where = f"voice.nodes.{name}"
        if not NODE_NAME.fullmatch(name):
            check.error(where, f"node name {name[:64]!r} is not {NODE_NAME_RULE}")
            continue
        spec = check.obj(body, where, ["steps"], ["next", "description"])
        if spec is None:
            continue
        raw_steps = spec.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps or len(raw_steps) > MAX_STEPS:
            check.error(f"{where}.steps", f"must be a list of 1-{MAX_STEPS} steps")
            continue
        steps: list[Step] = []
        for i, item in enumerate(raw_steps):
            step = check.step(item, f"{where}.steps[{i}]", ("say", "play", "pause", "gather", "record", "dial",
                                                            "enqueue", "hangup", "redirect"))
            if step is None:
                continue
            if steps and isinstance(steps[-1], TERMINAL):
                check.error(f"{where}.steps[{i}]", f"comes after a {type(steps[-1]).__name__.lower()}, so it never "
                                                   f"plays")
            steps.append(step)
        following = check.node_ref(spec["next"], f"{where}.next") if "next" in spec else None
        if following is not None and steps and isinstance(steps[-1], TERMINAL):
            check.error(f"{where}.next", f"the node ends with a {type(steps[-1]).__name__.lower()}, so next never "
                                         f"plays")
        if "description" in spec:
            check.string(spec["description"], f"{where}.description", max_chars=10_000)
        nodes[name] = Node(name, tuple(steps), following)
    return nodes


def _keywords(check: _Checker, value: Any) -> dict[str, Template]:
    spec = check.obj(value, "sms", [], ["keywords", "description"])
    if spec is None or "keywords" not in spec:
        return {}
    rules = spec["keywords"]
    if not isinstance(rules, dict) or len(rules) > MAX_KEYWORDS:
        check.error("sms.keywords", f"must be an object of at most {MAX_KEYWORDS} keyword → reply text")
        return {}
    if not rules:
        return {}
    from .inbound import HELP, MAX_KEYWORD_INPUT, OPT_IN, OPT_OUT, normalise_keyword

    reserved = OPT_OUT | OPT_IN | HELP
    keywords: dict[str, Template] = {}
    for keyword, reply in rules.items():
        where = f"sms.keywords.{keyword[:40]}"
        if not check.carriable(keyword, where):
            continue
        word = normalise_keyword(keyword)
        if not word or len(keyword) > MAX_KEYWORD_INPUT:
            check.error(where, f"a keyword is 1-{MAX_KEYWORD_INPUT} characters with a letter or digit")
            continue
        if word in reserved:
            check.error(where, f"{word} is reserved (opt-out, opt-in and help keywords are answered as carriers "
                               f"require and cannot be changed)")
            continue
        if word in keywords:
            check.error(where, f"{word} is already a keyword (keywords match whatever their case, width or "
                               f"punctuation)")
            continue
        template = check.template(reply, where, frozenset({"setting", "app"}), MAX_SMS_CHARS)
        if template is not None:
            fixed = "".join(p for p in template.parts if isinstance(p, str))
            if len(fixed.encode("utf-16-le")) // 2 > MAX_SMS_CHARS:
                check.error(where, f"over {MAX_SMS_CHARS} UTF-16 units, Twilio's limit for a message")
            elif not template.parts:
                check.error(where, "the reply is empty")
            else:
                keywords[word] = template
    return keywords


# ---------------------------------------------------------------- the graph: references, reachability, loops


Edge = tuple[str, str]  # (target, how: next | redirect | unavailable | choice)


def _edges(node: Node) -> list[Edge]:
    edges: list[Edge] = []
    for step in node.steps:
        if isinstance(step, Dial) and step.unavailable:
            edges.append((step.unavailable, "unavailable"))
        elif isinstance(step, Redirect):
            edges.append((step.target, "redirect"))
        elif isinstance(step, Gather):
            edges += [(b.goto, "choice") for b in step.branches]
            edges.append((step.default or node.name, "choice"))
            if step.no_input:
                edges.append((step.no_input, "choice"))
    if node.next:
        edges.append((node.next, "next"))
    return edges


def _can_end_here(node: Node) -> bool:
    """The call can end, reach a person or leave a message in this node: a hangup, dial, record or enqueue; a
    gather without no_input (silence hangs up); or an answer that just ends (Twilio hangs up)."""
    if any(isinstance(s, EXIT) for s in node.steps):
        return True
    gather = node.gather
    if gather is not None:
        return gather.no_input is None
    return not node.next and not any(isinstance(s, Redirect) for s in node.steps)


def _cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (several nodes, or one with an edge to itself), Tarjan's."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            name, i = work.pop()
            if i == 0:
                index[name] = low[name] = counter
                counter += 1
                stack.append(name)
                on_stack.add(name)
            targets = graph.get(name, [])
            if i < len(targets):
                work.append((name, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[name] = min(low[name], index[target])
                continue
            if low[name] == index[name]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == name:
                        break
                if len(component) > 1 or name in targets:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[name])
    return found


def _check_graph(check: _Checker, start: str, nodes: Mapping[str, Node]) -> None:
    edges = {name: _edges(node) for name, node in nodes.items()}
    # 1. Inline chains (next, unavailable) are rendered into one answer: a loop there is an answer without end.
    inline = {n: [t for t, how in e if how in ("next", "unavailable")] for n, e in edges.items()}
    for component in _cycles(inline):
        check.error(f"voice.nodes.{component[0]}", f"loop with no exit: {', '.join(component)} continue into each "
                                                   f"other (next, unavailable) in one answer that would never end")
    # 2. Automatic moves (also redirects) that pass no hangup, dial, record or enqueue: the call spins unattended.
    automatic = {n: [t for t, how in e if how == "unavailable" or
                     (how in ("next", "redirect") and not any(isinstance(s, EXIT) for s in nodes[n].steps))]
                 for n, e in edges.items()}
    inline_loops = {tuple(c) for c in _cycles(inline)}
    for component in _cycles(automatic):
        if tuple(component) not in inline_loops:
            check.error(f"voice.nodes.{component[0]}", f"loop with no exit: {', '.join(component)} lead into each "
                                                       f"other (next, redirect, unavailable) with no hangup, dial, "
                                                       f"record or enqueue and no choice for the caller")
    # 3. Reachable nodes from which the call can never end (every way out leads back in).
    reachable: list[str] = []
    todo = [start]
    while todo:
        name = todo.pop()
        if name in reachable or name not in nodes:
            continue
        reachable.append(name)
        todo += [t for t, _ in edges[name]]
    can_end = {n for n in nodes if _can_end_here(nodes[n])}
    changed = True
    while changed:
        changed = False
        for name in nodes:
            if name not in can_end and any(t in can_end for t, _ in edges[name]):
                can_end.add(name)
                changed = True
    trapped = [n for n in reachable if n not in can_end]
    if trapped:
        check.error(f"voice.nodes.{trapped[0]}", f"loop with no exit: from {', '.join(trapped)} no hangup, dial, "
                                                 f"record, enqueue or end of answer can be reached")
    for name in nodes:
        if name not in reachable:
            check.warn(f"voice.nodes.{name}", f"unreachable from the start node {start!r}")


# ---------------------------------------------------------------- loading (once per process)


def flows_path(setting: str | None = None) -> Path:
    """The flow file ``FLOWS_FILE`` names: absolute, or relative to the app's root (beside function_app.py)."""
    if setting is None:
        from .config import get_settings

        setting = get_settings().flows_file
    path = Path(setting or DEFAULT_FILE)
    return path if path.is_absolute() else APP_ROOT / path


def load(path: Path) -> Flow:
    """Read and check one file; raises :class:`FlowFileError` with every problem found."""
    try:
        raw = path.read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as exc:
        raise FlowFileError(path, [Problem("", f"cannot be read ({exc.strerror or type(exc).__name__})")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise FlowFileError(path, [Problem("", f"over {MAX_FILE_BYTES} bytes")])
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                              parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise FlowFileError(path, [Problem("", f"is not UTF-8 (byte {exc.start})")]) from None
    except _DuplicateKey as exc:
        raise FlowFileError(path, [Problem("", f"key {str(exc)[:64]!r} appears twice in one object (JSON would keep "
                                               f"only the last)")]) from None
    except RecursionError:
        raise FlowFileError(path, [Problem("", "is nested too deeply")]) from None
    except ValueError as exc:
        raise FlowFileError(path, [Problem("", f"is not valid JSON ({exc})")]) from None
    flow, problems = parse(document, path)
    if flow is None:
        raise FlowFileError(path, problems)
    return flow


_lock = threading.Lock()
_loaded: dict[Path, Flow | FlowFileError] = {}


def current() -> Flow:
    """The process's flow, read and checked on first use; raises :class:`FlowFileError` (logged once) when the
    file is refused. Deployed packages are read-only, so a file is read once per process, not per call."""
    path = flows_path()
    result = _loaded.get(path)
    if result is None:
        with _lock:
            result = _loaded.get(path)
            if result is None:
                try:
                    result = load(path)
                    for warning in result.warnings:
                        log.warning("flows: %s: %s", path.name, warning)
                except FlowFileError as exc:
                    result = exc
                    log.error("flows: %s; file refused: calls get the fallback (sorry, goodbye) until "
                              "`python -m shared.flows check` passes", exc)
                _loaded[path] = result
    if isinstance(result, FlowFileError):
        raise result
    return result


def reset() -> None:
    """Forget loaded files (tests switch FLOWS_FILE between cases)."""
    with _lock:
        _loaded.clear()


# ---------------------------------------------------------------- serving nodes as TwiML


class CallContext(NamedTuple):
    """What placeholders read: the request's parameters and the app's settings (raw values)."""

    params: Mapping[str, Sequence[str]]
    settings: Mapping[str, str]
    public_base_url: str = ""

    def value(self, ref: Ref) -> str:
        if ref.kind == "app":
            from . import APP_NAME

            return APP_NAME
        if ref.kind == "param":
            values = self.params.get(ref.name) or [""]
            return values[0][:MAX_ECHO_CHARS]
        if ref.name in SETTING_PLACEHOLDERS:
            return self.settings.get(ref.name, "")
        return os.environ.get(ref.name, "").strip()  # FLOW_*: the team's own app settings


def context(params: Mapping[str, Sequence[str]]) -> CallContext:
    from .config import get_settings

    settings = get_settings()
    return CallContext(params, settings.raw, settings.public_base_url)


def start(params: Mapping[str, Sequence[str]]) -> str:
    """The answer to an incoming call: the start node."""
    flow = current()
    return render(flow, flow.start, context(params))


def enter(name: str, params: Mapping[str, Sequence[str]]) -> str:
    """The answer to a redirect into node ``name``."""
    flow = current()
    return render(flow, flow.node(name).name, context(params))


def choose(gather: Gather, node: str, params: Mapping[str, Sequence[str]]) -> str | None:
    """The node a gather's answer leads to (None: hang up): the branch of the keys pressed, else of the words
    said; anything else the default (or the node again); nothing the no-input branch."""
    digits = (params.get("Digits") or [""])[0].strip()
    speech = (params.get("SpeechResult") or [""])[0].strip() if gather.hears_speech else ""
    if digits:
        branch = next((b for b in gather.branches if b.digits and b.digits == digits), None)
    elif speech:
        branch = choice_for_speech(speech, {b: b.words for b in gather.branches})
    else:
        return gather.no_input
    if branch is not None:
        return branch.goto
    return gather.default or node


def answer(name: str, params: Mapping[str, Sequence[str]]) -> str:
    """The answer to the gather of node ``name`` (what the caller pressed or said)."""
    flow = current()
    node = flow.node(name)
    if node.gather is None:
        raise UnknownNodeError(f"node {name!r} has no gather to answer")
    target = choose(node.gather, name, params)
    if target is None:
        from . import twiml

        return twiml.hangup()
    return render(flow, target, context(params))


def render(flow: Flow, name: str, ctx: CallContext) -> str:
    """Node ``name`` and the nodes it continues into (``next``, ``unavailable``) as one TwiML answer."""
    from twilio.twiml.voice_response import VoiceResponse

    from . import twiml

    response = VoiceResponse()
    node: Node | None = flow.nodes[name]
    hops = 0
    while node is not None:
        hops += 1
        if hops > len(flow.nodes) + 1:  # the check refuses such loops; this only keeps a bug from spinning
            raise FlowError(f"node {name!r} does not end")
        unavailable = next((d for d in node.dials if not d.number.render(ctx.value).strip()), None)
        if unavailable is not None:
            if not unavailable.unavailable:
                raise FlowError(f"node {node.name!r} has no number to dial and no unavailable node")
            node = flow.nodes[unavailable.unavailable]
            continue
        for step in node.steps:
            _emit(response, step, ctx, node.name)
        node = flow.nodes[node.next] if node.next else None
    return twiml.render(response)


def _emit(response: Any, step: Step, ctx: CallContext, node: str) -> None:
    from . import twiml

    if isinstance(step, (Say, Play, Pause)):
        _prompt(response, step, ctx)
    elif isinstance(step, Gather):
        attrs: dict[str, Any] = {"input": step.input, "action": twiml.gather_path(node), "method": "POST",
                                 "action_on_empty_result": True}
        optional = {"num_digits": step.num_digits, "timeout": step.timeout, "finish_on_key": step.finish_on_key,
                    "speech_timeout": step.speech_timeout, "language": step.language or None,
                    "hints": (step.hints or None) if step.hears_speech else None}
        gather = response.gather(**attrs, **{k: v for k, v in optional.items() if v is not None})
        for prompt in step.prompt:
            _prompt(gather, prompt, ctx)
    elif isinstance(step, Record):
        response.record(**twiml.voicemail_record_attrs(ctx.public_base_url, step.max_length, step.finish_on_key,
                                                       step.play_beep, step.timeout))
    elif isinstance(step, Dial):
        caller_id = step.caller_id.render(ctx.value).strip() if step.caller_id else ""
        optional = {"caller_id": caller_id or None, "timeout": step.timeout}
        response.dial(step.number.render(ctx.value).strip(), **{k: v for k, v in optional.items() if v is not None})
    elif isinstance(step, Enqueue):
        response.enqueue(step.name, **({"wait_url": step.wait_url} if step.wait_url else {}))
    elif isinstance(step, Hangup):
        response.hangup()
    elif isinstance(step, Redirect):
        response.redirect(twiml.node_path(step.target), method="POST")


def _prompt(parent: Any, step: Prompt, ctx: CallContext) -> None:
    if isinstance(step, Say):
        attrs = {"voice": step.voice or None, "language": step.language or None, "loop": step.loop}
        parent.say(step.text.render(ctx.value), **{k: v for k, v in attrs.items() if v is not None})
    elif isinstance(step, Play):
        parent.play(step.url, **({"loop": step.loop} if step.loop is not None else {}))
    else:
        parent.pause(length=step.length)


# ---------------------------------------------------------------- SMS keywords


def keyword_reply(body: str, default: str = "") -> str:
    """The reply the flow file gives an inbound SMS ``body`` (its keyword rules, matched as STOP/HELP are: case,
    width, invisible characters and surrounding punctuation ignored), else ``default`` (``SMS_AUTO_REPLY``).
    Reserved keywords never get here (``shared.inbound`` answers them first) and the check refuses them."""
    try:
        flow = current()
    except FlowFileError:
        return default
    if not flow.keywords:
        return default
    from .inbound import MAX_KEYWORD_INPUT, normalise_keyword

    if len(body) > MAX_KEYWORD_INPUT:
        return default
    rule = flow.keywords.get(normalise_keyword(body))
    if rule is None:
        return default
    from .config import get_settings

    return rule.render(CallContext({}, get_settings().raw).value)


# ---------------------------------------------------------------- python -m shared.flows check [FILE]


USAGE = "usage: python -m shared.flows check [FILE]   (default: FLOWS_FILE, else flows.json beside function_app.py)"


def check_file(path: Path, out: Callable[[str], None]) -> int:
    """Print every problem of ``path`` (errors and warnings); 0 when there are none, 1 otherwise."""
    try:
        flow = load(path)
        problems: Sequence[Problem] = flow.warnings
    except FlowFileError as exc:
        flow, problems = None, exc.problems
    for problem in problems:
        out(f"{path}: {problem.severity}: {problem}")
    errors = sum(p.severity == "error" for p in problems)
    if flow is None:
        out(f"{path}: refused ({errors} error(s)): calls would get the fallback (sorry, goodbye)")
        return 1
    verdict = "ok" if not problems else f"{len(problems)} warning(s)"
    out(f"{path}: {verdict}: {len(flow.nodes)} voice node(s) from {flow.start!r}, {len(flow.keywords)} SMS "
        f"keyword(s)")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "check" or len(args) > 2:
        print(USAGE, file=sys.stderr)
        return 2
    path = Path(args[1]) if len(args) == 2 else flows_path(os.environ.get("FLOWS_FILE", DEFAULT_FILE))
    return check_file(path, print)


if __name__ == "__main__":
    sys.exit(main())
