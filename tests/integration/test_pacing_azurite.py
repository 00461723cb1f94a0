"""Pacing, priority and cancellation against Azurite and the Twilio fake (shared/pacing.py, shared/sender.py):
a sender's messages go to Twilio at its rate and the rest wait in our queue holding their turn; high priority goes
first; a STOP or a cancel still applies to what waits. Figures for a whole campaign: ``python -m bench.pacing``."""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import pytest

from shared import enqueue, ledger, ops, optouts, pacing, sender, storage
from tests.outbound_helpers import drain, fresh_number, poison, sms_queue

_SENDER: dict[str, str] = {}


@pytest.fixture
def paced(outbound_env: Any, set_env: Any) -> Any:
    """Pacing on, 4 messages/s for a sender of this test's own (the pacing table is shared by the session)."""
    _SENDER["from"] = fresh_number()
    set_env(PACING="on", SENDER_RATES=f"{_SENDER['from']}=4", PACING_LEAD_SECONDS="1")
    return outbound_env


def _sms(ident: str, **extra: Any) -> str:
    return json.dumps({"id": ident, "to": fresh_number(), "from": _SENDER.get("from"), "body": "spring sale",
                       **extra})


def _comes_back(document: dict[str, Any], before: Any = None) -> sender.Outcome:
    """Deliver a waiting message's copy as the queue does at its turn: with the send_at the pacer wrote.
    ``before()`` runs just before the delivery, once the sender's queue has room for it."""
    import time
    from datetime import datetime, timezone

    from tests.peers.ports import wait_until

    ticket = pacing._read_ticket(document["id"])  # noqa: SLF001
    assert ticket is not None, "the message holds no turn"
    # The messages reserved before it have gone: Twilio's queue (the shard's horizon) has room for a quarter
    # second more within the normal share of the 1 s lead.
    room = 1.0 * pacing.NORMAL_SHARE - 0.25 - 0.05
    wait_until(lambda: pacing._value(pacing._read(document["from"], int(ticket["shard"])), "horizon")  # noqa
               <= time.time() + room, 10, "Twilio's queue for the sender to drain below the lead")
    pacing._write_ticket(document["id"], time.time() + 0.75, int(ticket["shard"]),  # noqa: SLF001 - its turn now
                         float(ticket["step"]))
    copy = {**document, "send_at": datetime.now(timezone.utc).isoformat()}
    if before is not None:
        before()
    return sender.process_sms(json.dumps(copy), f"copy-{document['id']}", 1)


def _ids(prefix: str, n: int) -> list[str]:
    import uuid

    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i}" for i in range(n)]


def test_a_burst_from_one_sender_is_submitted_at_its_rate_and_the_rest_waits_holding_its_turn(paced: Any) -> None:
    import math
    import time

    ids = _ids("burst", 10)
    started = time.monotonic()
    outcomes = [sender.process_sms(_sms(i), f"q-{i}", 1) for i in ids]
    elapsed = time.monotonic() - started
    sent = [o for o in outcomes if o.result == "sent"]
    waiting = [o for o in outcomes if o.result == "deferred"]
    # 4 messages/s with 0.75 s of lead for normal messages: two go at once, then one a quarter second as the burst
    # takes its time; nothing else reaches Twilio.
    assert 1 <= len(sent) <= 2 + math.ceil(elapsed * 4) and len(sent) + len(waiting) == 10
    assert waiting
    assert all(o.code == sender.PACED for o in waiting) and len(paced.created()) == len(sent)
    queue = storage.queue(sms_queue())  # the copies wait in the queue, invisible until their turn, not in a thread
    assert queue.get_queue_properties().approximate_message_count == len(waiting)
    assert list(queue.peek_messages(max_messages=32)) == [] or len(waiting) > 4
    turns = [pacing._read_ticket(o.id)["slot"] for o in waiting]  # noqa: SLF001 - the reserved turns
    assert turns == sorted(turns)
    # One turn each, a quarter second apart at least (a message that went meanwhile took a quarter of its own).
    assert all(b - a >= 0.25 - 1e-6 for a, b in zip(turns, turns[1:], strict=False))


def test_a_message_coming_back_at_its_turn_is_submitted_without_queueing_again(paced: Any) -> None:
    ids = _ids("turn", 8)
    outcomes = {i: sender.process_sms(_sms(i), f"q-{i}", 1) for i in ids}
    waiting = [i for i in ids if outcomes[i].result == "deferred"]
    assert waiting, "4 messages/s: most of a burst of 8 waits"
    last = waiting[-1]
    ticket = pacing._read_ticket(last)  # noqa: SLF001
    # Its copy carries send_at = its turn; delivered then, it holds the slot and goes without asking again.
    back = pacing.take_slot(_SENDER["from"], 1, rate=4, lead_seconds=1, ident=last, returning=True,
                            now=ticket["slot"] - 0.75)
    assert back.submit


def test_a_high_priority_message_goes_ahead_of_a_waiting_campaign(paced: Any) -> None:
    for i in _ids("camp", 12):
        sender.process_sms(_sms(i, campaign="spring"), f"q-{i}", 1)
    code = _ids("otp", 1)[0]
    outcome = sender.process_sms(_sms(code, body="your code is 4242", priority="high"), "q-otp", 1)
    assert outcome.result == "sent"  # not behind the 12 s of campaign still waiting in our queue
    assert [r.send_id for r in paced.created()][-1] == code


def test_pacing_shards_a_fast_sender_over_partitions() -> None:
    assert pacing.shard_count(1) == 1 and pacing.shard_count(100) == 10 and pacing.shard_count(10_000) == 64
    partitions = {pacing._row_key("12345", shard)[0] for shard in range(10)}  # noqa: SLF001
    assert len(partitions) >= 8  # spread by hash: no one partition takes a short code's 100 MPS


def test_a_cancelled_campaign_is_never_sent_when_its_waiting_messages_come_back(paced: Any) -> None:
    ids = _ids("cxl", 8)
    outcomes = {i: sender.process_sms(_sms(i, campaign="autumn-cxl"), f"q-{i}", 1) for i in ids}
    waiting = [i for i, o in outcomes.items() if o.result == "deferred"]
    assert waiting
    out = io.StringIO()
    assert ops.main(["sends", "cancel", "--campaign", "autumn-cxl"], stdout=out, stderr=io.StringIO()) == 0
    before = len(paced.created())
    for ident in waiting:  # each comes back (its copy), as the queue would deliver it at its turn
        back = _comes_back(json.loads(_sms(ident, campaign="autumn-cxl")))
        assert back.result == "cancelled"
        assert ledger.get("sms", ident).status == "cancelled"
    assert len(paced.created()) == before


def test_an_id_cancelled_before_it_is_submitted_is_never_sent(outbound_env: Any) -> None:
    ident = _ids("one", 1)[0]
    out = io.StringIO()
    assert ops.main(["sends", "cancel", "--id", ident, "--kind", "sms", "--json"], stdout=out,
                    stderr=io.StringIO()) == 0
    assert "cancelled" in json.loads(out.getvalue())[0]["result"]
    assert sender.process_sms(_sms(ident), "q", 1).result == "cancelled"
    assert outbound_env.created() == [] and ledger.get("sms", ident).status == "cancelled"


def test_a_sent_id_cannot_be_cancelled_and_the_cli_says_so(outbound_env: Any) -> None:
    ident = _ids("late", 1)[0]
    assert sender.process_sms(_sms(ident), "q", 1).result == "sent"
    out = io.StringIO()
    assert ops.main(["sends", "cancel", "--id", ident, "--kind", "sms"], stdout=out, stderr=io.StringIO()) == 0
    assert "too late" in out.getvalue() and ledger.get("sms", ident).status == "sent"


def test_a_stop_recorded_while_a_message_waits_applies_when_it_comes_back(paced: Any) -> None:
    documents = [json.loads(_sms(i)) for i in _ids("stop", 10)]
    outcomes = {d["id"]: sender.process_sms(json.dumps(d), f"q-{d['id']}", 1) for d in documents}
    waiting = [d for d in documents if outcomes[d["id"]].result == "deferred"]
    assert waiting, "4 messages/s: most of a burst of 10 waits"
    optouts.record_optout(waiting[-1]["to"], "STOP")
    back = _comes_back(waiting[-1])
    assert back.result == "dead_lettered" and back.code == "opted_out"
    assert [e["error"]["code"] for e in poison(sms_queue())] == ["opted_out"]


@pytest.mark.parametrize("body,media,whatsapp,expected", [
    ("a" * 160, 0, False, 1), ("a" * 161, 0, False, 2), ("a" * 306, 0, False, 2), ("a" * 307, 0, False, 3),
    ("€" * 80, 0, False, 1), ("€" * 81, 0, False, 2),   # the euro sign is a GSM-7 extension: two septets
    ("é" * 160, 0, False, 1),                           # é is in GSM-7's basic table
    ("ж" * 70, 0, False, 1), ("ж" * 71, 0, False, 2), ("ж" * 134, 0, False, 2), ("ж" * 135, 0, False, 3),
    ("😀" * 35, 0, False, 1), ("😀" * 36, 0, False, 2),  # two UTF-16 units each
    ("a" * 1000, 1, False, 1), ("a" * 1000, 0, True, 1),
])
def test_segments_are_counted_as_twilio_counts_them(body: str, media: int, whatsapp: bool, expected: int) -> None:
    assert pacing.segments(body, media=media, whatsapp=whatsapp) == expected


def test_sender_rates_setting_is_parsed_and_bad_values_name_the_setting() -> None:
    from shared.config import InvalidSettingError

    rates = pacing.parse_rates("+18005550100=3, MG" + "a" * 32 + "=50, longcode=2")
    assert rates.rate_for("+18005550100") == 3 and rates.rate_for("MG" + "a" * 32) == 50
    assert rates.rate_for("+14155550100") == 2 and rates.rate_for("+18335550100") == 3  # toll-free default
    assert rates.rate_for("12345") == 100 and rates.rate_for("whatsapp:+14155550100") == 80
    for bad in ("+1415=abc", "=3", "+1415=0", "+1415=-1", "+1415=nan", "+1415=1e9", "+1415=inf"):
        with pytest.raises(InvalidSettingError, match="SENDER_RATES"):
            pacing.parse_rates(bad)
    # A sender that cannot be one (a typo would otherwise pace it at its type's default, silently).
    for bad in ("+1 415 555 0100=3", "14155550100x=3", "LongCode=2", "MG123=50", "whatsapp:14155550100=80",
                "+1415\x1b[2J=3"):
        with pytest.raises(InvalidSettingError, match="is not a sender"):
            pacing.parse_rates(bad)


def test_while_waiting_messages_are_late_a_message_in_hand_goes_and_twilio_is_not_left_dry(paced: Any) -> None:
    sender_ = fresh_number()
    t = 1_000_000.0
    # 4 messages/s, a 2 s lead: normal messages fill 1.4 s of it, counted from half a second ahead when idle.
    first = [pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=f"a{i}", now=t) for i in range(8)]
    assert [s.submit for s in first].count(True) == 3 and all(s.reserved for s in first if not s.submit)
    # Two seconds on, none of the holders came back (a busy host): Twilio's queue is empty, so the next
    # message in hand goes now instead of taking a turn behind them.
    later = pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident="b0", now=t + 2)
    assert later.submit
    # A holder late for its turn still goes as soon as there is room, and one with no room keeps its place.
    back = pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident="a7", returning=True, now=t + 2)
    assert back.submit
    crowded = [pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=f"a{i}", returning=True, now=t + 2)
               for i in (3, 4, 5)]
    assert not crowded[-1].submit and crowded[-1].reserved and crowded[-1].wait_seconds >= 1


def test_a_granted_submission_that_is_not_made_gives_its_room_to_the_next_message(paced: Any) -> None:
    import time

    sender_ = fresh_number()
    t = time.time()  # one moment for the burst: however long its round trips take, it fills the room
    granted = [pacing.take_slot(sender_, 1, rate=4, lead_seconds=1, ident=f"g{i}", now=t) for i in range(3)]
    room = [s for s in granted if s.submit]
    assert room and not pacing.take_slot(sender_, 1, rate=4, lead_seconds=1, ident="full", now=t).submit
    before = pacing._value(pacing._read(sender_, 0), "horizon")  # noqa: SLF001
    pacing.give_back(sender_, room[-1])  # its recipient had sent STOP: nothing went to Twilio
    after = pacing._value(pacing._read(sender_, 0), "horizon")  # noqa: SLF001
    assert after == pytest.approx(max(time.time(), before - 0.25), abs=0.05)
    assert pacing.take_slot(sender_, 1, rate=4, lead_seconds=1, ident="next", high=True).submit


def _visible_ids(queue_name: str) -> set[str]:
    return {json.loads(m.content)["id"] for m in storage.queue(queue_name).peek_messages(max_messages=32)}


def test_a_cancelled_campaign_s_turn_goes_to_the_last_holder_in_line_before_its_own(paced: Any) -> None:
    import time

    # 4 messages/s: a burst of 40 holds turns up to ~10 s ahead; the last ones, away for more than
    # LINE_MIN_HOP_SECONDS, stand in the sender's line. The first 20 are campaign "early", the rest "late".
    ids = _ids("line", 40)
    outcomes = {i: sender.process_sms(_sms(i, campaign="early" if n < 20 else "late"), f"q-{i}", 1)
                for n, i in enumerate(ids)}
    line = sorted(storage.table(pacing.TABLE).query_entities(
        "PartitionKey eq @p", parameters={"p": pacing._line_partition(_SENDER["from"], 0)}),  # noqa: SLF001
        key=lambda place: place["visible_at"], reverse=True)
    in_line = [i for place in line for i in ids if place["RowKey"].endswith("_" + i)]  # the last one first
    assert in_line, "the burst's last messages wait in our queue, in the sender's line"
    turns = {i: pacing._read_ticket(i)["slot"] for i in in_line}  # noqa: SLF001
    assert _visible_ids(sms_queue()).isdisjoint(in_line)
    pacing.cancel_campaign("early")
    cancelled = next(i for i in ids[:20] if outcomes[i].result == "deferred" and i not in in_line)
    # A cancelled holder comes back: it is never sent, and the last in line is called now, seconds before its
    # own turn: the schedule ends a turn sooner, instead of Twilio's queue waiting idle for the cancelled turn
    # and every holder after it.
    assert _comes_back(json.loads(_sms(cancelled, campaign="early"))).result == "cancelled"
    last = in_line[0]
    assert last in _visible_ids(sms_queue())
    assert turns[last] - time.time() > 1.0, "called forward ahead of its turn"
    assert _visible_ids(sms_queue()).isdisjoint(in_line[1:]), "one turn freed: one holder called"


def test_a_holder_whose_copy_is_gone_costs_only_its_place_and_the_next_is_tried(paced: Any) -> None:
    for i in _ids("gone", 40):  # 4 messages/s: the burst's last holders wait seconds, in the sender's line
        sender.process_sms(_sms(i), f"q-{i}", 1)

    def places() -> int:
        return len(list(storage.table(pacing.TABLE).query_entities(
            "PartitionKey eq @p", parameters={"p": pacing._line_partition(_SENDER["from"], 0)})))  # noqa: SLF001

    standing = places()
    tried = 2 + pacing.CALL_FORWARD_SPARE_ROWS
    assert standing > tried, "the burst's last holders stand in line"
    storage.queue(sms_queue()).clear_messages()  # every waiting copy is gone (taken by another instance, say)
    assert pacing.call_forward(_SENDER["from"], 0, 2) == 0
    assert places() == standing - tried  # nothing came; the places tried were removed, and no more


def test_turns_of_holders_called_from_the_end_are_handed_out_again(paced: Any) -> None:
    import time

    sender_ = fresh_number()
    queue_ = sms_queue()
    holders = []
    t = time.time()  # one moment for the burst: however long its round trips take
    for i in range(30):  # 4 messages/s: turns up to ~7 s ahead; the later holders stand in line
        slot = pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=f"end{i}", now=t)
        if not slot.submit:
            copy = storage.queue(queue_).send_message(json.dumps({"id": f"end{i}"}), visibility_timeout=60)
            pacing.hold(sender_, slot, queue_, copy.id, copy.pop_receipt)
            holders.append(slot)
    assert pacing.call_forward(sender_, 0, 2) == 2  # two turns went unused: the last two holders are called
    assert {json.loads(m.content)["id"] for m in storage.queue(queue_).peek_messages(max_messages=32)} == \
        {"end28", "end29"}
    # They come (Twilio's queue drained meanwhile) and go, seconds before their turns: those turns, the last
    # ones, are handed out again, so the next message takes the first of them instead of a turn after a gap.
    later = t + 3
    assert all(pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=i, returning=True, now=later).submit
               for i in ("end29", "end28"))
    next_turn = pacing._value(pacing._read(sender_, 0), "next_free")  # noqa: SLF001
    assert next_turn == pytest.approx(holders[-2].turn)


def test_a_holder_called_forward_that_finds_no_room_goes_back_to_its_own_turn(paced: Any) -> None:
    sender_ = fresh_number()
    t = 2_000_000.0
    slots = [pacing.take_slot(sender_, 1, rate=4, lead_seconds=1, ident=f"c{i}", now=t) for i in range(20)]
    last = slots[-1]
    assert last.reserved and last.line, "away for seconds: it stands in line"
    # Called forward at t + 1, but high-priority messages took the room meanwhile: it does not ask again each
    # second until its turn.
    assert all(pacing.take_slot(sender_, 1, rate=4, lead_seconds=1, ident=f"h{i}", high=True, now=t + 1).submit
               for i in range(2))
    back = pacing.take_slot(sender_, 1, rate=4, lead_seconds=1, ident="c19", returning=True, now=t + 1)
    assert not back.submit and back.reserved
    assert back.not_before == pytest.approx(last.not_before, abs=0.01)


def _late_crowd(late_by: float) -> tuple[list[pacing.Slot], dict[str, float], dict[str, float]]:
    """Twenty messages at 4/s with a 2 s lead, then every holder back at once ``late_by`` seconds on (a busy host):
    what each got, and each holder's turn before and after."""
    sender_ = fresh_number()
    t = 3_000_000.0 + late_by * 1000
    held = [f"l{i}" for i in range(20)
            if not pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=f"l{i}", now=t).submit]
    turns = {i: pacing._read_ticket(i)["slot"] for i in held}  # noqa: SLF001
    back = [pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=i, returning=True, now=t + late_by)
            for i in held]
    return back, turns, {i: pacing._read_ticket(i)["slot"] for i in held}  # noqa: SLF001


def _come_back_one_at_a_time(back: list[pacing.Slot]) -> None:
    waiting = [b for b in back if not b.submit]
    assert 1 <= len(back) - len(waiting) <= 3 and all(w.reserved for w in waiting)  # the first ones take the room
    seconds = [w.wait_seconds for w in waiting]
    assert seconds == sorted(seconds) and seconds[0] == pytest.approx(1.0)
    assert seconds[-1] == pytest.approx(seconds[-2] + 0.25) and seconds[-1] >= 0.25 * (len(waiting) - 4)


@pytest.mark.parametrize("late_by", [6.0, 30.0])
def test_late_holders_take_new_turns_after_the_last_one_coming_back_one_turn_apart(paced: Any,
                                                                                  late_by: float) -> None:
    # Seconds on (a busy host's first pass over a backlog), they crowd in: the first take the room, and each of
    # the rest a new turn after the last one handed out, a quarter second (its sending) after the one before,
    # instead of all of them asking again every second, or standing between the holders still on time.
    back, before, after = _late_crowd(late_by)
    _come_back_one_at_a_time(back)
    moved = [after[i] for i, b in zip(before, back, strict=True) if not b.submit]
    assert min(moved) > max(before.values())
    assert moved == sorted(moved) and all(b - a == pytest.approx(0.25) for a, b in itertools.pairwise(moved))


def test_a_holder_back_a_little_early_goes_if_its_room_would_be_there_when_it_opens(paced: Any) -> None:
    # The queue's whole seconds bring a copy back up to a second after it was due, so copies show half a second
    # before their room opens. One back that early goes if, Twilio's queue draining meanwhile, its room would be
    # there when it opens; one whose room would not be waits for its own turn.
    sender_ = fresh_number()
    t = 4_000_000.0

    def take(ident: str, at: float) -> pacing.Slot:
        return pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=ident, returning=True, now=at)

    held = [f"e{i}" for i in range(12)
            if not pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=f"e{i}", now=t).submit]
    opens = [pacing._read_ticket(i)["slot"] + 0.25 - 1.4 for i in held]  # noqa: SLF001
    assert all(take(i, at).submit for i, at in zip(held[:2], opens[:2], strict=True))  # on time; the third never comes (STOP)
    moment = opens[3] - 0.4  # the fourth and fifth back early, and the sixth: the queue would be full for it
    assert take(held[3], moment).submit and take(held[4], moment).submit
    waits = take(held[5], moment)
    assert not waits.submit and waits.reserved
    assert waits.not_before == pytest.approx(max(moment + 1.0, opens[5] - pacing.EARLY_RETURN_SECONDS))


def test_a_room_given_back_after_a_stop_calls_the_next_holder_forward(paced: Any) -> None:
    import time

    documents = [json.loads(_sms(i)) for i in _ids("giveback", 36)]
    outcomes = {d["id"]: sender.process_sms(json.dumps(d), f"q-{d['id']}", 1) for d in documents}
    waiting = [d for d in documents if outcomes[d["id"]].result == "deferred"]
    optouts.record_optout(waiting[0]["to"], "STOP")

    def away() -> set[str]:  # holders in line whose copies stay invisible for more than another second
        soon = time.time() + 1.5
        return {place["RowKey"].rsplit("_", 1)[1] for place in storage.table(pacing.TABLE).query_entities(
            "PartitionKey eq @p", parameters={"p": pacing._line_partition(_SENDER["from"], 0)})  # noqa: SLF001
            if place["visible_at"] > soon}

    # Its turn: granted its room, then refused (the STOP): the room is given back, and the next in line comes.
    before: set[str] = set()
    assert _comes_back(waiting[0], before=lambda: before.update(away())).code == "opted_out"
    assert before, "holders stood in line"
    assert len(_visible_ids(sms_queue()) & before) == 1, "one room given back: one holder called forward"


def test_sixteen_threads_pacing_one_sender_never_give_up_on_lost_races_and_get_distinct_turns(paced: Any) -> None:
    import time
    from concurrent.futures import ThreadPoolExecutor

    sender_ = fresh_number()
    t = time.time()

    def ask(i: int) -> pacing.Slot:
        return pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=f"th{i}", now=t)

    with ThreadPoolExecutor(max_workers=16) as pool:  # the worker's thread pool, all on one shard row
        slots = list(pool.map(ask, range(64)))
    turns = [s.turn for s in slots if s.reserved]
    assert len(turns) == len(set(turns)) == 64 - 3, "three fill the lead; every other one holds a turn of its own"
    assert sorted(turns) == pytest.approx([turns and min(turns) + 0.25 * k for k in range(len(turns))])


def test_a_cancelled_holder_called_forward_leaves_the_schedule_a_turn_shorter(paced: Any) -> None:
    import time

    sender_ = fresh_number()
    t = time.time()
    slots = [pacing.take_slot(sender_, 1, rate=4, lead_seconds=2, ident=f"rel{i}", now=t) for i in range(20)]
    end = pacing._value(pacing._read(sender_, 0), "next_free")  # noqa: SLF001
    assert slots[-1].reserved and slots[-1].turn - time.time() > pacing.LINE_MIN_HOP_SECONDS
    pacing.release(sender_, "rel19")  # called from the end, seconds early, it came back cancelled
    assert pacing._value(pacing._read(sender_, 0), "next_free") == pytest.approx(end - 0.25)  # noqa: SLF001
    pacing.release(sender_, "rel4")  # back about at its own turn: the turns after it stay where they are
    assert pacing._value(pacing._read(sender_, 0), "next_free") == pytest.approx(end - 0.25)  # noqa: SLF001


def test_pruning_turns_long_past_keeps_the_waiting_ones_and_the_budget_rows(paced: Any) -> None:
    ids = _ids("prune", 40)  # 4 messages/s: most of the burst waits, holding turns seconds ahead
    for i in ids:
        sender.process_sms(_sms(i), f"q-{i}", 1)
    holders = [i for i in ids if pacing._read_ticket(i) is not None]  # noqa: SLF001
    assert len(holders) > 30
    out = io.StringIO()
    assert ops.main(["pacing", "prune", "--older-than", "1d", "--json"], stdout=out, stderr=io.StringIO()) == 0
    assert json.loads(out.getvalue())["dry_run"] is False
    assert all(pacing._read_ticket(i) is not None for i in holders), "a waiting message's turn was dropped"  # noqa

    latest = max(float(pacing._read_ticket(i)["slot"]) for i in holders)  # noqa: SLF001
    line = pacing._line_partition(_SENDER["from"], 0)  # noqa: SLF001
    assert list(storage.table(pacing.TABLE).query_entities("PartitionKey eq @p", parameters={"p": line}))
    dry = pacing.prune(latest + 60, dry_run=True)
    assert dry.tickets >= len(holders) and dry.places > 0
    assert all(pacing._read_ticket(i) is not None for i in holders), "a dry run deleted"  # noqa: SLF001
    pruned = pacing.prune(latest + 60)  # once those turns are long past
    assert pruned.tickets >= len(holders)
    assert all(pacing._read_ticket(i) is None for i in holders)  # noqa: SLF001
    assert list(storage.table(pacing.TABLE).query_entities("PartitionKey eq @p", parameters={"p": line})) == []
    assert pacing._read(_SENDER["from"], 0) is not None, "the sender's budget row was deleted"  # noqa: SLF001


def test_a_message_back_after_its_ticket_was_pruned_is_paced_as_a_newcomer_not_lost(paced: Any) -> None:
    from datetime import datetime, timezone

    ids = _ids("orphan", 12)
    for i in ids:
        sender.process_sms(_sms(i), f"q-{i}", 1)
    last = ids[-1]
    assert pacing._read_ticket(last) is not None  # noqa: SLF001
    pacing.prune(float(pacing._read_ticket(last)["slot"]) + 60)  # noqa: SLF001
    copy = {**json.loads(_sms(last)), "send_at": datetime.now(timezone.utc).isoformat()}
    outcome = sender.process_sms(json.dumps(copy), f"copy-{last}", 1)
    # As a newcomer: it goes if Twilio's queue has room now, else it takes a new turn (a new ticket).
    if outcome.result == "sent":
        assert last in {r.send_id for r in paced.created()}
    else:
        assert outcome.result == "deferred" and outcome.code == sender.PACED
        assert pacing._read_ticket(last) is not None  # noqa: SLF001


def test_pruning_with_a_time_in_the_future_is_refused_and_deletes_nothing(paced: Any) -> None:
    ident = _ids("future", 6)
    for i in ident:
        sender.process_sms(_sms(i), f"q-{i}", 1)
    err = io.StringIO()
    assert ops.main(["pacing", "prune", "--older-than", "2999-01-01T00:00:00Z"], stdout=io.StringIO(),
                    stderr=err) == ops.EXIT_USAGE
    assert "--older-than" in err.getvalue() and "future" in err.getvalue()
    assert pacing._read_ticket(ident[-1]) is not None  # noqa: SLF001


def test_enqueue_cli_tags_a_message_with_its_priority_and_campaign(azurite: Any, unique_queues: Any) -> None:
    assert enqueue.main(["sms", "--to", "+14155550100", "--body", "code 123456", "--priority", "high",
                         "--campaign", "otp-2027"]) == 0
    assert enqueue.main(["sms", "--to", "+14155550100", "--body", "hi"]) == 0
    tagged, plain = (json.loads(text) for text in drain(sms_queue()))
    assert (tagged["priority"], tagged["campaign"]) == ("high", "otp-2027")
    assert "priority" not in plain and "campaign" not in plain  # absent: normal, untagged


def test_a_pacing_setting_that_is_neither_on_nor_off_holds_sms_naming_it_and_calls_still_go(
        outbound_env: Any, set_env: Any) -> None:
    set_env(PACING="false")
    ident = _ids("pacing-false", 1)[0]
    with pytest.raises(sender.RetryLaterError, match="PACING must be on or off"):
        sender.process_sms(_sms(ident), "q", 1)
    outcome = sender.process_sms(_sms(ident), "q", 5)  # the last try: dead-lettered with the reason, not dropped
    assert outcome.result == "dead_lettered" and outcome.code == "retries_exhausted"
    [letter] = poison(sms_queue())
    assert "PACING must be on or off" in letter["error"]["reason"]
    call = json.dumps({"id": _ids("call", 1)[0], "to": fresh_number(), "say": "hello"})
    assert sender.process_call(call, "q", 1).result == "sent"
    assert [r.send_id for r in outbound_env.created()] == [json.loads(call)["id"]]


def test_sixteen_threads_pacing_a_sharded_sender_lose_no_race_to_each_other(paced: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    from concurrent.futures import ThreadPoolExecutor

    lost: list[int] = []
    real_write = pacing._write  # noqa: SLF001

    def counted(sender_: str, shard: int, existing: Any, values: dict[str, float]) -> bool:
        return real_write(sender_, shard, existing, values) or bool(lost.append(shard))

    monkeypatch.setattr(pacing, "_write", counted)
    sender_ = fresh_number()
    t = time.time()

    def ask(i: int) -> pacing.Slot:  # 30 MPS: three shards, and the busy ones send a message to a second
        return pacing.take_slot(sender_, 1, rate=30, lead_seconds=2, ident=f"sh{i}", now=t)

    with ThreadPoolExecutor(max_workers=16) as pool:
        slots = list(pool.map(ask, range(480)))
    assert lost == [], f"{len(lost)} shard writes lost to a thread of the same process"
    by_shard = {shard: [s.turn for s in slots if s.reserved and s.shard == shard] for shard in range(3)}
    assert all(len(turns) == len(set(turns)) for turns in by_shard.values()), "two messages given one turn"
    assert min(len(turns) for turns in by_shard.values()) >= 100, f"shards uneven: {by_shard}"
