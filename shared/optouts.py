"""Opt-out list on Table storage (table ``optouts``, RowKey = E.164 number).

Why keep our own: Twilio blocks replies to numbers that texted STOP on long codes, but messaging services and
other senders differ; the outbound path checks this table before every send so an opt-out is always honoured.
"""

from __future__ import annotations

from datetime import datetime, timezone

from . import storage

TABLE = "optouts"
PARTITION = "optout"


def record_optout(number: str, keyword: str, message_sid: str = "") -> None:
    """Remember that ``number`` opted out (idempotent: a second STOP just updates the row)."""
    storage.table(TABLE).upsert_entity({
        "PartitionKey": PARTITION,
        "RowKey": number,
        "Keyword": keyword,
        "MessageSid": message_sid,
        "OptedOutAt": datetime.now(timezone.utc).isoformat(),
    })


def clear_optout(number: str) -> None:
    """Forget an opt-out (START / UNSTOP / YES); a number never opted out is fine."""
    storage.table(TABLE).delete_entity(partition_key=PARTITION, row_key=number)


def is_opted_out(number: str) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        storage.table(TABLE).get_entity(partition_key=PARTITION, row_key=number)
        return True
    except ResourceNotFoundError:
        return False
