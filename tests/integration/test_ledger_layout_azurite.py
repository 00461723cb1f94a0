"""Rows of the one-partition layout (``sms`` / ``call`` / ``optout``) are still found, never shadowed by a second
row for the same id, and moved to their spread partitions by ``python -m shared.ops migrate-layout`` (idempotent).
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared import ledger, ops, optouts, sender, storage

SID = "SM" + "d" * 32


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sms(ident: str, to: str = "+14155550100") -> str:
    return json.dumps({"id": ident, "to": to, "body": "hello"})


def entity(partition: str, ident: str, table: str = ledger.TABLE) -> Any | None:
    try:
        return storage.table(table).get_entity(partition_key=partition, row_key=ident)
    except ResourceNotFoundError:
        return None


def legacy_send(ident: str, **values: Any) -> None:
    storage.table(ledger.TABLE).create_entity({"PartitionKey": "sms", "RowKey": ident, "attempts": 1, **values})


def run_ops(azurite: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    out, err = io.StringIO(), io.StringIO()
    code = ops.main([*argv, "--connection-string", azurite.connection_string, "--json"], stdout=out, stderr=err)
    return code, json.loads(out.getvalue() or "{}")


def test_a_new_send_is_stored_in_its_hashed_partition_with_its_kind(outbound_env: Any) -> None:
    ident = uid("spread")
    assert sender.process_sms(sms(ident), "q", 1).result == "sent"
    stored = entity(ledger.partition_key("sms", ident), ident)
    assert stored is not None and stored["kind"] == "sms" and stored["status"] == "sent"
    assert entity("sms", ident) is None


def test_a_send_recorded_in_the_old_layout_is_a_duplicate_and_gets_no_second_row(outbound_env: Any) -> None:
    ident = uid("legacy-sent")
    legacy_send(ident, status="sent", sid=SID, twilio_status="queued")
    outcome = sender.process_sms(sms(ident), "q", 1)
    assert outcome.result == "duplicate" and outcome.sid == SID
    assert outbound_env.created() == []
    assert entity(ledger.partition_key("sms", ident), ident) is None


def test_an_old_layout_claim_to_retry_is_sent_once_and_recorded_in_its_old_row(outbound_env: Any) -> None:
    ident = uid("legacy-retry")
    legacy_send(ident, status="retrying", last_error="429 earlier")
    assert sender.process_sms(sms(ident), "q", 2).result == "sent"
    assert sender.process_sms(sms(ident), "q", 3).result == "duplicate"
    assert len(outbound_env.created()) == 1
    old = entity("sms", ident)
    assert old is not None and old["status"] == "sent" and old["sid"].startswith("SM") and old["attempts"] == 2
    assert entity(ledger.partition_key("sms", ident), ident) is None


def test_a_status_callback_for_an_old_layout_send_updates_that_row(azurite: Any) -> None:
    ident = uid("legacy-cb")
    legacy_send(ident, status="sent", sid=SID, twilio_status="sent")
    row = ledger.apply_callback("sms", ident, "delivered", sid=SID)
    assert row.status == "delivered" and row.partition == "sms"
    assert entity("sms", ident)["twilio_status"] == "delivered"
    assert entity(ledger.partition_key("sms", ident), ident) is None


def test_an_old_layout_opt_out_is_honoured_until_start_clears_it(outbound_env: Any) -> None:
    number = "+14155550142"
    storage.table(optouts.TABLE).upsert_entity({"PartitionKey": "optout", "RowKey": number, "Keyword": "STOP"})
    assert optouts.is_opted_out(number)
    assert sender.process_sms(sms(uid("legacy-stop"), to=number), "q", 1).code == "opted_out"
    assert outbound_env.created() == []
    optouts.clear_optout(number)
    assert not optouts.is_opted_out(number)
    assert entity("optout", number, optouts.TABLE) is None


def test_stop_moves_an_old_layout_opt_out_to_its_spread_partition(azurite: Any) -> None:
    number = "+14155550143"
    storage.table(optouts.TABLE).upsert_entity({"PartitionKey": "optout", "RowKey": number, "Keyword": "STOP"})
    optouts.record_optout(number, "STOPALL")
    assert entity("optout", number, optouts.TABLE) is None
    assert entity(optouts.partition_key(number), number, optouts.TABLE)["Keyword"] == "STOPALL"


def test_migrate_layout_moves_every_old_row_keeps_its_fields_and_is_idempotent(azurite: Any, outbound_env: Any) -> None:
    sent, retry = uid("mig-sent"), uid("mig-retry")
    number = "+14155550144"
    legacy_send(sent, status="delivered", sid=SID, twilio_status="delivered", content_hash="abc")
    legacy_send(retry, status="retrying", last_error="503 earlier")
    storage.table(ledger.TABLE).create_entity({"PartitionKey": "call", "RowKey": sent, "status": "completed"})
    storage.table(optouts.TABLE).upsert_entity({"PartitionKey": "optout", "RowKey": number, "Keyword": "STOP"})

    code, report = run_ops(azurite, "migrate-layout", "--dry-run")
    assert code == 0 and report["sends_moved"] >= 3 and entity("sms", sent) is not None

    code, report = run_ops(azurite, "migrate-layout")
    assert code == 0 and report["sends_moved"] >= 3 and report["optouts_moved"] >= 1
    moved = entity(ledger.partition_key("sms", sent), sent)
    assert moved["status"] == "delivered" and moved["sid"] == SID and moved["content_hash"] == "abc"
    assert moved["kind"] == "sms" and entity("sms", sent) is None and entity("call", sent) is None
    assert entity(ledger.partition_key("call", sent), sent)["status"] == "completed"
    assert entity(optouts.partition_key(number), number, optouts.TABLE)["Keyword"] == "STOP"
    assert not storage.partition_has_rows(ledger.TABLE, "sms", fresh=True)
    assert not storage.partition_has_rows(optouts.TABLE, "optout", fresh=True)

    code, report = run_ops(azurite, "migrate-layout")
    assert (code, report["sends_moved"], report["optouts_moved"]) == (0, 0, 0)

    # After the move the app reads the spread rows only, and they behave as before.
    assert sender.process_sms(sms(sent), "q", 1).code == "id_conflict"  # its content hash moved with it
    assert sender.process_sms(sms(retry), "q", 2).result == "sent"
    assert optouts.is_opted_out(number)
    assert len(outbound_env.created()) == 1


def test_migrate_layout_leaves_an_id_with_rows_in_both_layouts_to_the_operator(azurite: Any) -> None:
    ident = uid("both")
    claimed, _ = ledger.try_claim("sms", ident)
    assert claimed
    legacy_send(ident, status="sent", sid=SID)  # written by an instance still running the old layout
    code, report = run_ops(azurite, "migrate-layout")
    assert code == 2 and f"sms/{ident}" in report["sends_conflicts"]
    assert entity("sms", ident)["sid"] == SID
    assert entity(ledger.partition_key("sms", ident), ident)["status"] == "claimed"
    storage.table(ledger.TABLE).delete_entity(partition_key="sms", row_key=ident)
