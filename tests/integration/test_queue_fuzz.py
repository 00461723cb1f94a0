"""Property-based fuzz of the outbound queues through the real sender, Azurite and the Twilio fake: whatever a
producer puts on a queue ends sent (only if the schema accepts it) or in the poison queue with a reason. Nothing
vanishes, and nothing escapes but the designed :class:`RetryLaterError`."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared import outbound, sender
from shared.outbound import InvalidMessageError
from shared.sender import RetryLaterError
from tests.outbound_helpers import call_queue, drain, poison, row, sms_queue

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

anything = st.text(max_size=30) | st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=12)
e164 = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
json_scalars = st.none() | st.booleans() | st.integers(-10 ** 6, 10 ** 6) | st.floats(allow_nan=False) | anything
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def field(valid: st.SearchStrategy[Any], suffixes: bool = True) -> st.SearchStrategy[Any]:
    """Mostly valid values, sometimes with a trailing newline/space or a control/bidi char, sometimes anything."""
    tails = st.sampled_from(["\n", "\r\n", " ", "\x00", "\u202e", "\u200b", "\ud800", "\ufffe"])
    spoiled = st.tuples(valid, tails).map(lambda pair: f"{pair[0]}{pair[1]}") if suffixes else valid
    return st.one_of(valid, valid, valid, valid, spoiled, json_values)


ids = field(st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True))
urls = field(st.sampled_from(["https://ex.com/a.png", "https://bücher.example/x", "http://ex.com/a",
                              "https://a:b@ex.com/c", "https://ex.com/a b"]), suffixes=False)

sms_docs = st.fixed_dictionaries({"to": field(e164)}, optional={
    "id": ids, "from": field(e164), "body": field(st.text(min_size=1, max_size=40)),
    "media_urls": st.lists(urls, max_size=3) | json_values,
    "messaging_service_sid": field(st.just("MG" + "a" * 32)),
    "send_at": field(st.just("2020-01-01T00:00:00Z")), "boddy": anything})
call_docs = st.fixed_dictionaries({"to": field(e164)}, optional={
    "id": ids, "say": field(st.text(min_size=1, max_size=40)),
    "twiml": field(st.sampled_from(["<Response/>", "<Response><Say>hi</Say></Response>", "<Dial/>", "<Response>"])),
    "url": urls, "voice": field(st.sampled_from(["alice", "Polly.Joanna"])),
    "language": field(st.sampled_from(["en-US", "fr"])), "timeout": field(st.integers(0, 700), suffixes=False),
    "machine_detection": field(st.booleans(), suffixes=False)})


# Valid messages with arbitrary Unicode in their free-text fields, so "sent" is a common outcome too.
valid_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True)
https = st.sampled_from(["https://ex.com/a.png", "https://bücher.example/x", "https://a:b@ex.com/c?x=1"])
valid_sms = st.fixed_dictionaries({"to": e164, "body": st.text(min_size=1, max_size=60)}, optional={
    "id": valid_ids, "from": e164, "media_urls": st.lists(https, max_size=10), "send_at": st.none(),
    "messaging_service_sid": st.none()})
valid_call = st.fixed_dictionaries({"to": e164}, optional={
    "id": valid_ids, "from": e164, "timeout": st.integers(5, 600), "machine_detection": st.booleans()}).flatmap(
    lambda doc: st.one_of(
        st.fixed_dictionaries({"say": st.text(min_size=1, max_size=60)},
                              optional={"voice": st.sampled_from(["alice", "Polly.Joanna"]),
                                        "language": st.sampled_from(["en-US", "fr"])}),
        st.fixed_dictionaries({"twiml": st.text(max_size=40).map(
            lambda t: "<Response><Say>" + t.replace("&", "&amp;").replace("<", "&lt;") + "</Say></Response>")}),
        st.fixed_dictionaries({"url": https})).map(lambda content: {**doc, **content}))


def _as_text(doc: Any, encoding: str) -> str | bytes:
    text = json.dumps(doc, ensure_ascii=encoding == "ascii")
    if encoding == "base64":
        return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")
    return text if encoding == "ascii" else text.encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.tuples(valid_sms, st.sampled_from(["ascii", "utf8", "base64"])).map(lambda t: ("sms",) + t),
    st.tuples(valid_call, st.sampled_from(["ascii", "utf8", "base64"])).map(lambda t: ("call",) + t),
    st.tuples(sms_docs, st.sampled_from(["ascii", "utf8", "base64"])).map(lambda t: ("sms",) + t),
    st.tuples(call_docs, st.sampled_from(["ascii", "utf8", "base64"])).map(lambda t: ("call",) + t),
    st.tuples(st.sampled_from(["sms", "call"]), json_values, st.just("ascii")),
    st.tuples(st.sampled_from(["sms", "call"]), st.binary(max_size=80), st.just("raw")),
    st.tuples(st.sampled_from(["sms", "call"]), st.binary(max_size=60).map(base64.b64encode), st.just("raw")),
)


def _is_valid(kind: str, raw: str | bytes, queue_message_id: str) -> bool:
    try:
        outbound.parse(kind, raw, queue_message_id)  # type: ignore[arg-type]
        return True
    except InvalidMessageError:
        return False


@FUZZ
@given(case=bodies)
def test_every_queue_message_is_sent_only_if_valid_or_dead_lettered_with_a_reason(outbound_env: Any,
                                                                                   case: Any) -> None:
    kind, doc, encoding = case
    if isinstance(doc, dict) and isinstance(doc.get("id"), str):
        doc = {**doc, "id": doc["id"] + "-" + uuid.uuid4().hex[:8]}  # fresh id: one example never meets another
    raw = doc if encoding == "raw" else _as_text(doc, encoding)
    queue_message_id = uuid.uuid4().hex
    before = len(outbound_env.created(kind))
    try:
        outcome = sender.process(kind, raw, queue_message_id, 1)
    except RetryLaterError:
        return  # designed: the queue delivers it again
    event(f"{outcome.result} {outcome.code}")
    queue = sms_queue() if kind == "sms" else call_queue()
    letters = poison(queue)
    sent_now = len(outbound_env.created(kind)) - before
    if outcome.result == "sent":
        assert _is_valid(kind, raw, queue_message_id) and sent_now == 1 and letters == []
        assert row(kind, outcome.id).sid == outcome.sid
    elif outcome.result == "dead_lettered":
        assert sent_now == 0 and len(letters) == 1
        error = letters[0]["error"]
        assert error["code"] and error["reason"] and error["dequeue_count"] == 1
        if error["code"] == "invalid_message":
            assert not _is_valid(kind, raw, queue_message_id)
    else:
        assert outcome.result == "deferred" and sent_now == 0 and len(drain(queue)) == 1
