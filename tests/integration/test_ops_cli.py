"""``python -m shared.ops`` against Azurite and the Twilio fake: what an operator sees and what each verb changes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from shared import ledger, ops, optouts, sender, storage
from tests.conftest import ROOT
from tests.peers.ports import wait_until
from tests.outbound_helpers import drain, put, sms_queue, twilio_unreachable

TO = "+14155550123"


def run(*argv: str, answer: str | None = None) -> tuple[int, str, str]:
    """Run the CLI in process; ``answer`` is what the operator types at a confirmation prompt."""
    out, err = io.StringIO(), io.StringIO()
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return answer if answer is not None else ""

    code = ops.main(list(argv), stdout=out, stderr=err, ask=ask)
    return code, out.getvalue(), err.getvalue() + "".join(prompts)


def run_json(*argv: str) -> Any:
    code, out, err = run(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


def sms(ident: str, body: str = "hello", to: str = TO) -> str:
    return json.dumps({"id": ident, "to": to, "body": body})


def dead_letter(outbound_env: Any, ident: str, fault: str | None, *, last_try: bool = True,
                body: str = "hello") -> sender.Outcome:
    """Process one SMS so that it ends in the poison queue (the fake answers with ``fault``).

    ``slow`` makes an ``ambiguous`` dead letter: Twilio creates the message but answers after the client's
    timeout, and its list cannot be read on five reads in a row while the sender tries to settle the doubt."""
    if fault == "slow":
        outbound_env.fail_next("slow")
        with pytest.raises(sender.RetryLaterError):
            sender.process("sms", sms(ident, body), f"q-{ident}", 1)
        outbound_env.fail_lists_next(*["500"] * sender.MAX_UNREADABLE_READS)
        for _ in range(sender.MAX_UNREADABLE_READS):
            outcome = sender.process("sms", sms(ident, body), f"q-{ident}", 5)
            if outcome.result != "deferred":
                break
        assert outcome.result == "dead_lettered" and outcome.code == "ambiguous", outcome
        return outcome
    if fault == "unreachable":  # observed not sent on every try: retries_exhausted, resendable
        with twilio_unreachable():
            outcome = sender.process("sms", sms(ident, body), f"q-{ident}", 5 if last_try else 1)
    else:
        if fault:
            outbound_env.fail_next(fault)
        outcome = sender.process("sms", sms(ident, body), f"q-{ident}", 5 if last_try else 1)
    assert outcome.result == "dead_lettered", outcome
    return outcome


def poison_count() -> int:
    return run_json("poison", "list")["count"]


# ---------------------------------------------------------------- help and errors


@pytest.mark.parametrize("verb", ["sends", "poison", "optouts", "pacing"])
def test_each_verb_answers_help(verb: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "shared.ops", verb, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "usage: python -m shared.ops " + verb in proc.stdout


def test_unreachable_storage_is_one_clear_line_not_a_traceback() -> None:
    code, out, err = run("sends", "list")  # BASE_ENV points storage at a closed port
    assert code == ops.EXIT_USAGE
    assert err.startswith("ops: storage unreachable") and err.count("\n") == 1
    assert "Traceback" not in err


def test_an_invalid_account_name_is_refused_before_any_sign_in() -> None:
    code, _, err = run("sends", "list", "--account-name", "Not_An_Account")
    assert code == ops.EXIT_USAGE
    assert "not a storage account name" in err


def test_account_name_signs_in_as_the_operator_against_that_accounts_endpoints(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    monkeypatch.setenv("AzureWebJobsStorage__accountName", "placeholder")
    from tests.peers.keyvault import FakeCredential

    operator = FakeCredential()
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda: operator)
    args = ops._parser().parse_args(["sends", "list", "--account-name", "stswitchboard01"])
    try:
        ops.connect(args)
        service = storage._service("table")
        assert service.url.startswith("https://stswitchboard01.table.core.windows.net")
        assert storage._credential() is operator
    finally:
        storage.use_credential(None)


def test_a_bad_time_filter_names_the_formats_it_accepts(azurite: Any) -> None:
    code, _, err = run("sends", "list", "--since", "yesterday-ish")
    assert code == ops.EXIT_USAGE and "30m, 2h, 7d or ISO-8601" in err


# ---------------------------------------------------------------- sends


def test_sends_show_explains_the_row_and_json_carries_every_field(outbound_env: Any) -> None:
    assert sender.process("sms", sms("show-1"), "q1").result == "sent"
    code, out, _ = run("sends", "show", "show-1")
    assert code == 0
    assert "sms show-1: sent — Twilio accepted it" in out
    assert "sid" in out and outbound_env.created("sms")[0].sid in out
    document = run_json("sends", "show", "show-1")
    assert document["status"] == "sent" and document["sid"].startswith("SM") and document["attempts"] == 1


def test_sends_show_of_an_unknown_id_exits_1(outbound_env: Any) -> None:
    code, _, err = run("sends", "show", "no-such-id")
    assert code == ops.EXIT_NOT_FOUND and "no send with id 'no-such-id'" in err


def test_sends_show_says_an_ambiguous_send_is_in_doubt(outbound_env: Any) -> None:
    dead_letter(outbound_env, "doubt-1", "slow")
    code, out, _ = run("sends", "show", "doubt-1", "--kind", "sms")
    assert code == 0
    assert "doubt-1: failed" in out and "ambiguous" in out


def test_sends_list_filters_by_status_and_time_across_partitions(outbound_env: Any) -> None:
    assert sender.process("sms", sms("list-ok"), "q1").result == "sent"
    dead_letter(outbound_env, "list-bad", "21211")
    # A call row lives in another partition; the listing must see it too.
    assert sender.process("call", json.dumps({"id": "list-call", "to": TO, "say": "hi"}), "q2").result == "sent"

    every = {s["id"] for s in run_json("sends", "list")["sends"]}
    assert {"list-ok", "list-bad", "list-call"} <= every
    failed = run_json("sends", "list", "--status", "failed")["sends"]
    assert {s["id"] for s in failed} >= {"list-bad"} and all(s["status"] == "failed" for s in failed)
    assert {s["id"] for s in run_json("sends", "list", "--kind", "call")["sends"]} >= {"list-call"}
    assert all(s["kind"] == "call" for s in run_json("sends", "list", "--kind", "call")["sends"])
    assert run_json("sends", "list", "--since", "2030-01-01T00:00:00Z")["count"] == 0
    assert {"list-ok", "list-call"} <= {s["id"] for s in run_json("sends", "list", "--since", "10m")["sends"]}
    code, out, _ = run("sends", "list", "--status", "failed")
    assert "KIND" in out and "list-bad" in out and "list-ok" not in out


def test_long_listings_report_progress_on_stderr_not_in_the_json(outbound_env: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "PROGRESS_EVERY", 2)
    for i in range(4):
        ledger.insert_if_absent("sms", f"progress-{i}", status="sent", attempts=1)
    code, out, err = run("sends", "list", "--json")
    assert code == 0 and "rows read" in err
    assert json.loads(out)["count"] >= 4


# ---------------------------------------------------------------- poison list


def test_poison_list_counts_by_reason_then_lists_entries_and_leaves_them_in_place(outbound_env: Any) -> None:
    dead_letter(outbound_env, "p-1", "21211")
    dead_letter(outbound_env, "p-2", "21211")
    assert sender.process("sms", b"not json at all", "q-bad").result == "dead_lettered"

    listing = run_json("poison", "list")
    by_reason = {r["reason"]: r["count"] for r in listing["by_reason"]}
    assert by_reason == {"twilio_rejected": 2, "invalid_message": 1}
    assert listing["by_reason"][0]["reason"] == "twilio_rejected"  # most frequent first
    assert {e["id"] for e in listing["entries"]} == {"p-1", "p-2", "q-bad"}
    code, out, _ = run("poison", "list", "--reason", "invalid_message")
    assert "REASON" in out and "q-bad" in out and "p-1" not in out
    assert poison_count() == 3  # listing twice in a row sees everything: nothing was consumed or hidden


# ---------------------------------------------------------------- poison replay


def test_replay_puts_a_resendable_dead_letter_back_with_its_id_and_it_is_sent(outbound_env: Any) -> None:
    dead_letter(outbound_env, "r-1", "unreachable")  # transient until the last try: never reached Twilio
    dry = run_json("poison", "replay", "--dry-run")
    assert [(e["id"], e["result"]) for e in dry["entries"]] == [("r-1", "would replay")]
    assert poison_count() == 1 and drain(sms_queue()) == []

    report = run_json("poison", "replay")
    assert report["replayed"] == 1
    assert poison_count() == 0
    queued = drain(sms_queue())
    assert [json.loads(t)["id"] for t in queued] == ["r-1"]
    assert sender.process("sms", queued[0], "new-queue-id").result == "sent"
    assert ledger.get("sms", "r-1").status == "sent"


def test_replay_keeps_the_ledger_id_when_the_original_had_none(outbound_env: Any) -> None:
    queue_message_id = f"queue-msg-{uuid.uuid4().hex[:8]}"  # Azurite's ledger is shared by the whole session
    with twilio_unreachable():
        outcome = sender.process("sms", json.dumps({"to": TO, "body": "no id"}), queue_message_id, 5)
    assert outcome.id == queue_message_id and outcome.result == "dead_lettered"
    run_json("poison", "replay")
    assert [json.loads(t)["id"] for t in drain(sms_queue())] == [queue_message_id]


def test_replay_skips_invalid_messages_and_still_opted_out_recipients(outbound_env: Any) -> None:
    put(sms_queue(), "x")
    assert sender.process("sms", "{broken", "q-inv").result == "dead_lettered"
    drain(sms_queue())
    optouts.record_optout(TO, "STOP")
    assert sender.process("sms", sms("ops-opt-1"), "q-opt").code == "opted_out"

    entries = {e["id"]: e["result"] for e in run_json("poison", "replay")["entries"]}
    assert entries["q-inv"].startswith("kept: invalid message")
    assert entries["ops-opt-1"].startswith("kept: recipient is still opted out")
    assert poison_count() == 2 and drain(sms_queue()) == []

    assert run("optouts", "remove", TO)[0] == 0
    entries = {e["id"]: e["result"] for e in run_json("poison", "replay", "--id", "ops-opt-1")["entries"]}
    assert entries == {"ops-opt-1": "replayed"}
    assert sender.process("sms", drain(sms_queue())[0], "q-again").result == "sent"


def test_an_ambiguous_dead_letter_whose_match_in_twilio_belongs_to_no_id_is_never_forced(outbound_env: Any) -> None:
    dead_letter(outbound_env, "amb-1", "slow", body="did it go?")  # Twilio created it; we never heard
    wait_until(lambda: len(outbound_env.created("sms")) == 1, 10, "the slow send to be created")
    created = outbound_env.created("sms")

    code, out, _ = run("poison", "replay", "--force")
    assert code == 0
    assert "amb-1 (ambiguous)" in out
    assert f"Twilio: {created[0].sid} queued to +1415***0123" in out and "same body" in out
    assert "belongs to no id" in out
    forced = run_json("poison", "replay", "--force")
    assert forced["entries"][0]["result"].startswith(f"kept: Twilio's {created[0].sid} matches this send")
    assert forced["entries"][0]["twilio"][0]["owner"] == ""
    assert poison_count() == 1 and drain(sms_queue()) == []
    assert len(outbound_env.created("sms")) == 1  # a forced replay would have sent it twice


def test_an_ambiguous_dead_letter_needs_force_and_the_cli_shows_whose_each_sid_is(outbound_env: Any) -> None:
    dead_letter(outbound_env, "amb-2", "slow", body="same words")  # sent once and in doubt ...
    [first] = outbound_env.created("sms")
    ledger.claim_sid("sms", first.sid, "someone-else")  # ... but that message is proven another id's
    code, out, _ = run("poison", "replay")
    assert code == 0 and f"{first.sid}" in out and "belongs to id someone-else" in out
    assert "re-run with --force" in out
    forced_dry = run_json("poison", "replay", "--force", "--dry-run")
    assert forced_dry["entries"][0]["result"] == "would force" and poison_count() == 1
    forced = run_json("poison", "replay", "--force")
    assert forced["entries"][0]["result"] == "forced"
    assert poison_count() == 0
    assert sender.process("sms", drain(sms_queue())[0], "q-forced").result == "sent"
    assert len(outbound_env.created("sms")) == 2


def test_a_send_twilio_has_by_sid_is_fetched_by_that_sid_before_forcing(outbound_env: Any) -> None:
    assert sender.process("sms", sms("sid-1"), "q1").result == "sent"
    sid = ledger.get("sms", "sid-1").sid
    # An operator copied the sent message into the poison queue by hand (or a later copy was dead-lettered).
    document = {"error": {"code": "duplicate_in_flight", "reason": "test", "id": "sid-1", "kind": "sms"},
                "message": sms("sid-1")}
    storage.queue(sms_queue() + "-poison").send_message(json.dumps(document))

    entry = run_json("poison", "replay")["entries"][0]
    assert entry["why"].startswith("reached Twilio") and entry["result"].startswith("kept")
    assert [t["sid"] for t in entry["twilio"]] == [sid]

    forced = run_json("poison", "replay", "--force")["entries"][0]
    assert forced["result"] == "forced"
    row = ledger.get("sms", "sid-1")
    assert row.sid == "" and row.fields["previous_sid"] == sid and "forced" in row.last_error
    assert sender.process("sms", drain(sms_queue())[0], "q2").result == "sent"


def test_a_twilio_rejected_dead_letter_is_not_forced_when_twilio_cannot_be_read(outbound_env: Any,
                                                                                  set_env: Any) -> None:
    dead_letter(outbound_env, "rej-1", "21211")
    set_env(TWILIO_API_BASE_URL="http://127.0.0.1:9")  # Twilio unreachable
    entry = run_json("poison", "replay", "--force")["entries"][0]
    assert "twilio_error" in entry and entry["result"].startswith("kept: Twilio could not be read")
    assert poison_count() == 1 and drain(sms_queue()) == []


# ---------------------------------------------------------------- poison purge


def test_purge_asks_first_and_deletes_only_on_yes(outbound_env: Any) -> None:
    dead_letter(outbound_env, "g-1", "21211")
    dead_letter(outbound_env, "g-2", "21211")

    code, _, err = run("poison", "purge", answer="no")
    assert code == 0 and "Type 'yes'" in err and "nothing deleted" in err
    assert poison_count() == 2
    assert run_json("poison", "purge", "--dry-run") == {"dry_run": True, "matched": 2, "deleted": 0}
    assert poison_count() == 2

    code, out, _ = run("poison", "purge", "--id", "g-1", answer="yes")
    assert code == 0 and "deleted 1" in out
    assert [e["id"] for e in run_json("poison", "list")["entries"]] == ["g-2"]
    assert run_json("poison", "purge", "--yes")["deleted"] == 1
    assert poison_count() == 0


# ---------------------------------------------------------------- opt-outs


def test_optouts_add_list_remove_round_trip(azurite: Any) -> None:
    number = "+14155550999"
    added = run_json("optouts", "add", number)
    assert added == {"number": number, "opted_out": True, "changed": True}
    assert optouts.is_opted_out(number)
    assert run_json("optouts", "add", number)["changed"] is False
    listed = run_json("optouts", "list")["optouts"]
    assert {"number": number, "keyword": "OPS"} in [{k: r[k] for k in ("number", "keyword")} for r in listed]
    code, out, _ = run("optouts", "list")
    assert "NUMBER" in out and number in out
    assert run_json("optouts", "remove", number)["changed"] is True
    assert not optouts.is_opted_out(number)
    code, out, _ = run("optouts", "remove", number)
    assert "was not opted out" in out


@pytest.mark.parametrize("number", ["14155550999", "+0123", "whatsapp:555", "+1415555099\n"])
def test_optouts_refuses_what_is_not_an_e164_address(azurite: Any, number: str) -> None:
    code, _, err = run("optouts", "add", number)
    assert code == ops.EXIT_USAGE and "not an E.164 number" in err


# ---------------------------------------------------------------- issue 27: replay keeps ids, never stops a batch


def run_strict(*argv: str) -> tuple[int, str, str]:
    """Run the CLI with a stdout that encodes as a real terminal does (UTF-8, strict): what cannot be printed fails."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="\n")
    err = io.StringIO()
    code = ops.main(list(argv), stdout=out, stderr=err, ask=lambda _: "")
    out.flush()
    return code, raw.getvalue().decode("utf-8"), err.getvalue()


def hand_written(ident: str, message: str, code: str = "transient_exhausted") -> None:
    """A dead letter as an operator might have written it by hand into the poison queue."""
    document = {"error": {"code": code, "reason": "hand-written", "id": ident, "kind": "sms"}, "message": message}
    storage.queue(sms_queue() + "-poison").send_message(json.dumps(document))  # ASCII: "\ud800" stays an escape


def test_poison_replay_keeps_the_ledger_key_of_a_null_id(outbound_env: Any) -> None:
    queue_message_id = f"queue-msg-{uuid.uuid4().hex[:8]}"
    with twilio_unreachable():
        outcome = sender.process("sms", json.dumps({"id": None, "to": TO, "body": "null id"}), queue_message_id, 5)
    assert outcome.id == queue_message_id and outcome.result == "dead_lettered"

    assert run_json("poison", "replay")["replayed"] == 1
    [queued] = drain(sms_queue())
    assert json.loads(queued)["id"] == queue_message_id
    assert sender.process("sms", queued, "another-queue-message-id").result == "sent"
    assert ledger.get("sms", queue_message_id).status == "sent"
    assert ledger.get("sms", "another-queue-message-id") is None


def test_a_forced_replay_racing_a_ledger_update_is_reported_and_the_rest_of_the_batch_replayed(
        outbound_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    raced, fine = f"race-{uuid.uuid4().hex[:8]}", f"fine-{uuid.uuid4().hex[:8]}"
    assert sender.process("sms", sms(raced), "q-race").result == "sent"
    hand_written(raced, sms(raced), code="duplicate_in_flight")  # reached Twilio: needs --force
    dead_letter(outbound_env, fine, "unreachable")  # never reached Twilio: replayed as is
    original_view = ops.twilio_view

    def view_then_a_status_callback_lands(kind: Any, plan: Any, letter: Any) -> Any:
        found = original_view(kind, plan, letter)
        if letter.send_id == raced:  # while the operator looks at Twilio, the row moves on
            ledger.apply_callback("sms", raced, "delivered")
        return found

    monkeypatch.setattr(ops, "twilio_view", view_then_a_status_callback_lands)
    code, out, err = run_strict("poison", "replay", "--force")
    assert code == 0, err
    assert "Traceback" not in err
    results = {line.split()[1]: line for line in out.splitlines() if line.startswith(sms_queue())}
    assert "kept: its ledger row changed while replaying" in results[raced]
    assert "replayed" in results[fine]
    assert "1 of 2 dead letter(s) put back" in out
    assert [json.loads(t)["id"] for t in drain(sms_queue())] == [fine]
    assert ledger.get("sms", raced).status == "delivered"  # the callback's word stands; nothing forced over it
    assert [e["id"] for e in run_json("poison", "list")["entries"]] == [raced]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "replay"])
def test_poison_replay_reports_entries_holding_lone_surrogates_and_goes_on_with_the_rest(
        outbound_env: Any, dry_run: bool) -> None:
    fine = f"fine-{uuid.uuid4().hex[:8]}"
    dead_letter(outbound_env, fine, "unreachable")
    hand_written("bad-body", json.dumps({"id": "bad-body", "to": TO, "body": "x\ud800"}, ensure_ascii=False))
    hand_written("bad-\udc00id", "{broken")

    code, out, err = run_strict("poison", "replay", *(["--dry-run"] if dry_run else []))
    assert code == 0, err
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith(sms_queue())}
    assert "kept: the stored message holds a lone surrogate" in lines["bad-body"]
    assert "kept: invalid message" in lines["bad-\\udc00id"]  # shown as an escape, not a crash
    assert ("would replay" if dry_run else "replayed") in lines[fine]
    assert [json.loads(t)["id"] for t in drain(sms_queue())] == ([] if dry_run else [fine])
    assert poison_count() == (3 if dry_run else 2)


# ---------------------------------------------------------------- issue 27: one line for every bad input


@pytest.mark.parametrize("flag, when", [("--since", "999999999d"), ("--since", "9" * 30 + "s"),
                                        ("--until", "99999999999999999999999h"),
                                        ("--since", "0001-01-01T00:00:00+01:00"),
                                        ("--until", "9999-12-31T23:59:59-01:00")])
def test_a_time_filter_outside_the_years_1_to_9999_is_one_line_not_an_overflow(azurite: Any, flag: str,
                                                                               when: str) -> None:
    code, out, err = run("sends", "list", flag, when)
    assert code == ops.EXIT_USAGE and out == ""
    assert err.startswith("ops: time out of range") and err.count("\n") == 1


# Opt-out tests share one Azurite: a number no other test texts, so a refusal that failed cannot block their sends.
UNUSED_NUMBER = f"+1415{uuid.uuid4().int % 10 ** 7:07d}"


@pytest.mark.parametrize("argv, named", [
    (["sends", "list", "--status", "\udcff"], "--status"), (["sends", "list", "--since", "2h\udcff"], "--since"),
    (["sends", "show", "a\udcffb"], "id"), (["optouts", "add", UNUSED_NUMBER, "--keyword", "\udcff"], "--keyword"),
    (["poison", "purge", "--reason", "\udcff", "--yes"], "--reason"), (["poison", "replay", "--id", "\udcff"], "--id"),
], ids=["status", "since", "show id", "keyword", "reason", "replay id"])
def test_bytes_that_are_not_utf8_on_the_command_line_are_one_line_naming_the_argument(azurite: Any,
                                                                                       argv: list[str],
                                                                                       named: str) -> None:
    code, out, err = run(*argv)  # as `ops sends list --status $'\xff'` arrives: a lone surrogate
    assert code == ops.EXIT_USAGE and out == ""
    assert err == f"ops: {named} is not valid UTF-8 text (byte 0xff)\n"


@pytest.mark.parametrize("argv, problem", [(["sends", "list", "--status", "x" * 100_000], "not a status"),
                                           (["sends", "list", "--status", "failed) or (1 eq 1"], "not a status"),
                                           (["optouts", "add", UNUSED_NUMBER, "--keyword", "k" * 70_000],
                                            "--keyword of 70000 characters is over 64")],
                         ids=["status of 100000 chars", "status with OData", "keyword of 70000 chars"])
def test_a_filter_or_keyword_no_row_can_hold_is_refused_in_one_line(azurite: Any, argv: list[str],
                                                                    problem: str) -> None:
    code, out, err = run(*argv)
    assert code == ops.EXIT_USAGE and out == ""
    assert err.startswith("ops: ") and problem in err and err.count("\n") == 1


@pytest.mark.parametrize("verb", [("sends", "list"), ("poison", "list"), ("optouts", "list")])
@pytest.mark.parametrize("setting", ["not a connection string", "DefaultEndpointsProtocol=http;;;===;",
                                     "AccountKey=secretkeyvalue;;=="])
def test_a_malformed_connection_string_is_one_line_that_never_echoes_it(verb: tuple[str, str], setting: str) -> None:
    code, out, err = run(*verb, "--connection-string", setting)
    assert code == ops.EXIT_USAGE and out == ""
    assert err.startswith("ops: --connection-string is malformed") and err.count("\n") == 1
    assert "secretkeyvalue" not in err and setting not in err


@pytest.mark.parametrize(("content", "problem"), [
    ("[]", 'must be a JSON object with "Values", not an array'),
    ('{"Values": ["AzureWebJobsStorage"]}', '"Values" must be an object of settings, not an array'),
], ids=["an array", "Values a list"])
def test_a_local_settings_file_of_the_wrong_shape_is_one_line(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                              content: str, problem: str) -> None:
    (tmp_path / "local.settings.json").write_text(content)
    monkeypatch.chdir(tmp_path)
    code, out, err = run("sends", "list")
    assert code == ops.EXIT_USAGE and out == ""
    assert err.startswith("ops: ") and "local.settings.json" in err and problem in err and err.count("\n") == 1


def _ops_process(argv: list[str], storage_setting: str, **options: Any) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    env.update(AzureWebJobsStorage=storage_setting, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "shared.ops", *argv], env=env, cwd=ROOT / "tests", text=True,
                          **options)


def test_poison_list_with_storage_down_answers_in_one_line_within_seconds() -> None:
    from tests.peers.ports import free_port

    port = free_port()  # nothing listens there
    setting = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=bm9uZQ==;"
               f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
               f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    # Bounded: with the queue SDK's default retries this took 82-120 s.
    done = _ops_process(["poison", "list"], setting, capture_output=True, timeout=30)
    assert done.returncode == ops.EXIT_USAGE and done.stdout == ""
    assert done.stderr.startswith("ops: storage unreachable") and done.stderr.count("\n") == 1


@pytest.mark.parametrize("argv", [["optouts", "list"], ["poison", "list", "--json"], ["sends", "list"]])
def test_output_cut_off_by_the_reader_ends_quietly(azurite: Any, unique_queues: dict[str, str],
                                                   argv: list[str]) -> None:
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # `ops … | head` once head has stopped reading: every write fails with EPIPE
    try:
        done = _ops_process(argv, azurite.connection_string, stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    # No BrokenPipeError traceback, no "Exception ignored" at exit: at most the progress lines of a long listing.
    assert [line for line in done.stderr.splitlines() if not line.startswith("… ")] == [], done.stderr
    assert done.returncode == ops.EXIT_BROKEN_PIPE


def test_poison_list_renders_terminal_escapes_from_entries_inert(azurite: Any, unique_queues: dict[str, str]) -> None:
    hostile = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil\x85"
    hand_written("esc-\x1b[31mred", "{broken", code="invalid_message")
    storage.queue(sms_queue() + "-poison").send_message(json.dumps(
        {"error": {"code": "invalid_message", "reason": hostile, "id": "esc-2", "kind": "sms"}, "message": "x"}))

    code, out, _ = run("poison", "list")
    assert code == 0
    assert not any(ch in out for ch in "\x1b\x07\x9b\u202e\x85")
    assert "esc-\\x1b[31mred" in out and "\\x1b]0;owned\\x07" in out and "\\u202eevil" in out

    code, out, _ = run("poison", "list", "--json")
    assert code == 0 and not any(ch in out for ch in "\x1b\x07\x9b\u202e\x85")
    assert {e["id"] for e in json.loads(out)["entries"]} == {"esc-\x1b[31mred", "esc-2"}  # JSON keeps the value


def test_optouts_add_of_a_capitalised_whatsapp_prefix_opts_out_the_whatsapp_address(azurite: Any) -> None:
    number = f"+1415{uuid.uuid4().int % 10 ** 7:07d}"
    assert run_json("optouts", "add", "WhatsApp:" + number)["number"] == "whatsapp:" + number
    assert optouts.is_opted_out("whatsapp:" + number) and not optouts.is_opted_out(number)


# ---------------------------------------------------------------- issue 26: following a dead letter, inbound


def test_sends_list_refuses_a_status_no_send_can_have(azurite: Any) -> None:
    code, out, err = run("sends", "list", "--status", "nonsense")
    assert code == ops.EXIT_USAGE and out == ""  # not "(none)" and exit 0, as if no send had that status
    assert err.startswith("ops: not a status: 'nonsense' (one of claimed, retrying, unknown, sent, failed, rejected")
    assert "delivered" in err and err.count("\n") == 1


def test_poison_show_prints_a_plain_text_dead_letter_whole_with_its_reason_and_what_to_do(outbound_env: Any) -> None:
    assert sender.process("sms", b"not json at all", "q-plain").result == "dead_lettered"
    code, out, _ = run("poison", "show", "q-plain")
    assert code == 0
    assert f"{sms_queue()}-poison q-plain: invalid_message" in out
    assert "reason             message: neither a JSON object nor base64-encoded JSON\n" in out  # not "base64 …"
    assert "fix it and enqueue it again (python -m shared.enqueue)" in out
    assert out.endswith("  original message:\n    not json at all\n")
    document = run_json("poison", "show", "q-plain")
    assert document["message"] == "not json at all" and document["reason"] == "invalid_message"
    assert poison_count() == 1  # looking changed nothing


def test_poison_show_prints_the_original_json_and_says_what_replay_would_do(outbound_env: Any) -> None:
    dead_letter(outbound_env, "show-r", "unreachable")
    code, out, _ = run("poison", "show", "show-r")
    assert code == 0
    assert "`poison replay --id show-r` puts it back on its queue" in out
    assert f'      "to": "{TO}",\n      "body": "hello"\n' in out  # the message itself, to fix or resend
    code, _, err = run("poison", "show", "no-such-letter")
    assert code == ops.EXIT_NOT_FOUND and "no dead letter for id 'no-such-letter'" in err


def test_sends_show_and_poison_replay_give_the_same_whole_advice_for_an_invalid_message(outbound_env: Any) -> None:
    message = json.dumps({"id": "inv-advice", "to": "not a number", "body": "x"})
    assert sender.process("sms", message, "q-inv").result == "dead_lettered"
    code, out, _ = run("sends", "show", "inv-advice")
    assert code == 0
    assert "fix it and enqueue it again" in out and "may send it" not in out  # it said replay may send it
    code, out, _ = run("poison", "replay", "--id", "inv-advice")
    assert code == 0
    row = next(line for line in out.splitlines() if "inv-advice" in line)
    assert row.endswith("fix it and enqueue it again (python -m shared.enqueue); "
                        "`python -m shared.ops poison show inv-advice` prints it")  # whole, not cut at 60 chars


def test_a_long_twilio_error_is_printed_whole_in_sends_list_and_poison_list(outbound_env: Any) -> None:
    dead_letter(outbound_env, "long-err", "21211")
    whole = ledger.get("sms", "long-err").last_error
    assert len(whole) > 60
    code, out, _ = run("sends", "list", "--status", "failed")
    assert code == 0 and whole in out
    code, out, _ = run("poison", "list")
    assert code == 0 and whole in out


def test_ops_inbound_shows_the_inbound_events_and_take_removes_them(azurite: Any,
                                                                     unique_queues: dict[str, str]) -> None:
    inbound = unique_queues["INBOUND_QUEUE"]
    events = [{"type": "sms", "channel": "sms", "from": "+14155550123", "to": "+15005550006", "body": "hello there",
               "keyword": None, "received_at": "2030-01-01T09:00:00Z"},
              {"type": "voicemail", "from": "+14155550124", "recording_url": "https://api.twilio.com/RE1",
               "received_at": "2030-01-01T09:01:00Z"}]
    for event in events:
        put(inbound, event)

    for _ in range(2):  # looking twice sees the same: nothing is consumed
        code, out, _ = run("inbound")
        assert code == 0
        assert "hello there" in out and "+1415***0123" in out and "https://api.twilio.com/RE1" in out
        assert "+14155550123" not in out  # the table masks numbers
        assert f"2 event(s) of {inbound} shown" in out
    taken = run_json("inbound", "--take")
    assert taken["events"] == events and taken["taken"] is True  # JSON: the events as a consumer reads them
    assert run_json("inbound")["count"] == 0


def test_ops_outcomes_shows_what_became_of_each_send_and_take_removes_it(outbound_env: Any, set_env: Any) -> None:
    from shared import sender

    sender.process_sms(sms("ops-oc-1", "hello there"), "q", 1)
    sender.process_sms(json.dumps({"id": "ops-oc-2", "to": "555", "body": "x"}), "q", 1)
    code, out, _ = run("outcomes")
    assert code == 0 and "ops-oc-1" in out and "sent" in out and "invalid_message:" in out
    assert TO not in out and "2 event(s) of" in out
    taken = run_json("outcomes", "--take")
    assert [e["type"] for e in taken["events"]] == ["sent", "dead_lettered"] and run_json("outcomes")["count"] == 0
    set_env(OUTCOMES_QUEUE="off")
    code, _, err = run("outcomes")
    assert code == 1 and "OUTCOMES_QUEUE is off" in err
