"""``shared.point_table`` against Azurite, beside the SDK on the same table: a row either one writes, the other reads
back with the same values and types; keys with quotes, ``+`` and ``:`` address the right row; conditional writes
behave as the SDK's do."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared import storage
from shared.point_table import PointTableClient

TABLE = "pointtabletest"

VALUES: dict[str, Any] = {
    "text": "héllo ✓ 🎉 \"quoted\" 'single'", "empty": "", "yes": True, "no": False, "small": -7, "int32_max": 2**31 - 1,
    "big": 2**40 + 3, "negative_big": -(2**33), "ratio": 0.25, "when": datetime(2026, 11, 28, 22, 58, 23, 588123,
                                                                                  tzinfo=timezone.utc),
    "blob": b"\x00\xffbytes", "guid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


@pytest.fixture
def tables(azurite: Any) -> tuple[PointTableClient, Any]:
    point = storage.point_table(TABLE)
    assert isinstance(point, PointTableClient)  # a connection string with a key: the lean client
    return point, storage.table(TABLE)


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def same(a: Any, b: Any) -> bool:
    b = getattr(b, "value", b)  # the SDK reads an Int64 as EntityProperty(value, INT64); the point client as int
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, uuid.UUID) or isinstance(b, uuid.UUID):
        return str(a) == str(b)
    return bool(a == b)


def test_a_row_the_point_client_writes_reads_back_the_same_through_the_sdk(tables: tuple[Any, Any]) -> None:
    point, sdk = tables
    row = key("w")
    meta = point.create_entity({"PartitionKey": "p", "RowKey": row, **VALUES})
    read = sdk.get_entity("p", row)
    assert read.metadata["etag"] == meta["etag"]
    for name, value in VALUES.items():
        assert same(value, read[name]), name
    assert read["big"].edm_type == "Edm.Int64" and isinstance(read["when"], datetime)


def test_a_row_the_sdk_writes_reads_back_the_same_through_the_point_client(tables: tuple[Any, Any]) -> None:
    from azure.data.tables import EdmType, EntityProperty

    point, sdk = tables
    row = key("r")
    written = {**VALUES, "big": EntityProperty(VALUES["big"], EdmType.INT64),  # the SDK takes Int64 only so
               "negative_big": EntityProperty(VALUES["negative_big"], EdmType.INT64)}
    meta = sdk.create_entity({"PartitionKey": "p", "RowKey": row, **written})
    read = point.get_entity("p", row)
    assert read.metadata["etag"] == meta["etag"] and "Timestamp" not in read
    assert isinstance(read.metadata["timestamp"], datetime)
    for name, value in VALUES.items():
        assert same(value, read[name]), name
        assert type(read[name]) is type(value) or isinstance(value, uuid.UUID), name
    assert point.get_entity("p", row, select=["RowKey"]) == {"RowKey": row}


@pytest.mark.parametrize("raw", ["o'brien", "whatsapp:+14155550100", "+14155550100", "a b%2F", "x''y", "é-ü"])
def test_keys_with_quotes_plus_colons_and_spaces_address_the_right_row(tables: tuple[Any, Any], raw: str) -> None:
    point, sdk = tables
    partition, row = f"part {raw}", f"{raw}-{uuid.uuid4().hex[:6]}"
    point.create_entity({"PartitionKey": partition, "RowKey": row, "n": 1})
    assert sdk.get_entity(partition, row)["n"] == 1
    sdk.update_entity({"PartitionKey": partition, "RowKey": row, "n": 2}, mode=UpdateMode.MERGE)
    assert point.get_entity(partition, row)["n"] == 2
    point.delete_entity(partition, row)
    with pytest.raises(ResourceNotFoundError):
        sdk.get_entity(partition, row)


def test_conditional_writes_behave_as_the_sdks(tables: tuple[Any, Any]) -> None:
    point, sdk = tables
    row = key("c")
    first = point.create_entity({"PartitionKey": "p", "RowKey": row, "a": 1, "b": "keep"})
    with pytest.raises(ResourceExistsError):
        point.create_entity({"PartitionKey": "p", "RowKey": row})
    second = point.update_entity({"PartitionKey": "p", "RowKey": row, "a": 2}, mode=UpdateMode.MERGE,
                                 etag=first["etag"], match_condition=MatchConditions.IfNotModified)
    assert sdk.get_entity("p", row)["b"] == "keep"  # MERGE keeps what it does not name
    with pytest.raises(ResourceModifiedError):  # the etag the first write returned is stale now
        point.update_entity({"PartitionKey": "p", "RowKey": row, "a": 3}, mode=UpdateMode.MERGE,
                            etag=first["etag"], match_condition=MatchConditions.IfNotModified)
    point.update_entity({"PartitionKey": "p", "RowKey": row, "a": 4}, mode=UpdateMode.REPLACE,
                        etag=second["etag"], match_condition=MatchConditions.IfNotModified)
    assert dict(sdk.get_entity("p", row)) == {"PartitionKey": "p", "RowKey": row, "a": 4}  # REPLACE drops "b"
    with pytest.raises(ResourceModifiedError):
        point.delete_entity("p", row, etag=first["etag"], match_condition=MatchConditions.IfNotModified)
    point.delete_entity("p", row)
    point.delete_entity("p", row)  # a missing row is fine, as with the SDK
    with pytest.raises(ResourceNotFoundError):  # a conditional MERGE needs the row
        point.update_entity({"PartitionKey": "p", "RowKey": row, "a": 5}, etag=second["etag"],
                            match_condition=MatchConditions.IfNotModified)
    point.upsert_entity({"PartitionKey": "p", "RowKey": row, "a": 6})
    point.upsert_entity({"PartitionKey": "p", "RowKey": row, "b": "merged"})
    assert {k: v for k, v in point.get_entity("p", row).items()} == {"PartitionKey": "p", "RowKey": row, "a": 6,
                                                                      "b": "merged"}


def test_the_point_client_creates_its_table_once_and_sees_whether_a_partition_has_rows(azurite: Any) -> None:
    from shared.point_table import TableAccount
    from shared.transport import OriginPool

    name = f"fresh{uuid.uuid4().hex[:10]}"
    sdk_point = storage.point_table(TABLE)
    account: TableAccount = sdk_point.account
    point = PointTableClient(account, name, pool=OriginPool(account.endpoint, timeout_seconds=5), retries=0,
                             backoff_seconds=0, backoff_max_seconds=0, retry_after_max_seconds=10)
    assert point.create_table() is True and point.create_table() is False
    assert storage.table(name).query_entities("PartitionKey eq 'x'") is not None  # the SDK sees the table
    assert point.partition_has_rows("o'neil") is False
    point.create_entity({"PartitionKey": "o'neil", "RowKey": "r"})
    point.create_entity({"PartitionKey": "other", "RowKey": "r"})
    assert point.partition_has_rows("o'neil") is True and point.partition_has_rows("o'neil2") is False


def test_a_first_send_in_a_fresh_process_loads_no_storage_sdk(outbound_env: Any) -> None:
    """Cold start: the first send's table work (create tables, legacy check, opt-out read, claim, record) goes
    through the point client, so a new instance never imports azure.data.tables or azure.storage to send."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    ident = key("cold")
    code = ("import json, sys\nimport function_app\nfrom azure.functions.queue import QueueMessage\n"
            "fn = {f.get_function_name(): f for f in function_app.app.get_functions()}['send_sms'].get_user_function()\n"
            f"fn(msg=QueueMessage(id='q', body=json.dumps({{'id': {ident!r}, 'to': '+14155550100', 'body': 'hi'}}),"
            " dequeue_count=1))\n"
            "print(json.dumps([m for m in ('azure.data.tables', 'azure.storage.queue') if m in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert len(outbound_env.created()) == 1  # and it was sent
