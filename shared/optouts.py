"""Opt-out list on Table storage (table ``optouts``, RowKey = the canonical address, E.164 or whatsapp:+E164).

Why keep our own: Twilio blocks replies to numbers that texted STOP on long codes, but messaging services and
other senders differ; the outbound path checks this table before every send so an opt-out is always honoured.

Partitions: every send reads this table once, so one partition for all addresses would cap the deployment at
that partition's ~2,000 entities/s. Rows are spread by a stable hash of the address over ``PARTITIONS`` (256)
partitions, ``optout-00`` … ``optout-ff`` (:func:`partition_key`). Rows written before the spread (PartitionKey
``optout``) are still honoured: while that partition holds rows (checked once per process every 5 minutes), a
lookup that misses reads it too, a STOP moves the address's row to its spread partition, a START clears both.
:func:`migrate_legacy_layout` (``python -m shared.ops migrate-layout``) moves the rest, idempotently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from . import storage

TABLE = "optouts"
LEGACY_PARTITION = "optout"  # the layout before the spread: every opt-out in one partition
PARTITIONS = 256  # part of the stored layout (see shared/ledger.py for why 256)
# An address as the send path validates it: E.164, optionally as a WhatsApp address. Full match only.
_ADDRESS = re.compile(r"(whatsapp:)?\+[1-9][0-9]{1,14}")
WHATSAPP_PREFIX = "whatsapp:"


class InvalidAddressError(ValueError):
    """Not a canonical address: an opt-out lookup under any other key could miss the row (``"+1415…\n"``)."""

    def __init__(self, address: str) -> None:
        super().__init__(f"not an E.164 number or whatsapp:+E.164 address ({len(address)} chars)")
        self.address = address


def address_key(address: str) -> str:
    """The one RowKey for an address: the address itself when it is canonical (full match, nothing around it),
    else :class:`InvalidAddressError`. Recording and checking both go through here, so they cannot disagree.
    The ``whatsapp:`` prefix is matched in any case (``WhatsApp:+1…`` is the same address) and keyed in lower case,
    as sends write it."""
    if address[:len(WHATSAPP_PREFIX)].lower() == WHATSAPP_PREFIX:
        address = WHATSAPP_PREFIX + address[len(WHATSAPP_PREFIX):]
    if _ADDRESS.fullmatch(address) is None:
        raise InvalidAddressError(address)
    return address


def partition_key(row_key: str) -> str:
    """The PartitionKey for an opt-out RowKey: ``optout-<2 hex digits>``, a stable hash of it."""
    digest = hashlib.sha256(row_key.encode("utf-8", "surrogatepass")).digest()
    return f"{LEGACY_PARTITION}-{int.from_bytes(digest[:4], 'big') % PARTITIONS:02x}"


def _legacy_present() -> bool:
    return storage.partition_has_rows(TABLE, LEGACY_PARTITION)


def _record_key(address: str) -> str:
    """Opt-outs arrive from any sender Twilio forwards (short codes, alphanumeric ids): phone numbers are
    canonicalised; other senders are kept as given (no send can ever be addressed to them)."""
    try:
        return address_key(address.strip())
    except InvalidAddressError:
        return address


def record_optout(number: str, keyword: str, message_sid: str = "") -> None:
    """Remember that ``number`` opted out (idempotent: a second STOP just updates the row)."""
    key = _record_key(number)
    storage.table(TABLE).upsert_entity({
        "PartitionKey": partition_key(key),
        "RowKey": key,
        "Keyword": keyword,
        "MessageSid": message_sid,
        "OptedOutAt": datetime.now(timezone.utc).isoformat(),
    })
    if _legacy_present():  # the spread row now says it: one row per address
        storage.table(TABLE).delete_entity(partition_key=LEGACY_PARTITION, row_key=key)


def clear_optout(number: str) -> None:
    """Forget an opt-out (START / UNSTOP / YES); a number never opted out is fine."""
    key = _record_key(number)
    storage.table(TABLE).delete_entity(partition_key=partition_key(key), row_key=key)
    if _legacy_present():
        storage.table(TABLE).delete_entity(partition_key=LEGACY_PARTITION, row_key=key)


def is_opted_out(number: str) -> bool:
    """Whether the canonical ``number`` opted out; a non-canonical one raises :class:`InvalidAddressError` rather
    than answer "no" for a key that can never hold a row."""
    from azure.core.exceptions import ResourceNotFoundError

    key = address_key(number)
    partitions = [partition_key(key)] + ([LEGACY_PARTITION] if _legacy_present() else [])
    for partition in partitions:
        try:
            storage.table(TABLE).get_entity(partition_key=partition, row_key=key, select=["RowKey"])
            return True
        except ResourceNotFoundError:
            continue
    return False


@dataclass
class MigrationReport:
    """What :func:`migrate_legacy_layout` did (or, with ``dry_run``, would do)."""

    moved: int = 0
    dry_run: bool = False


def migrate_legacy_layout(*, dry_run: bool = False) -> MigrationReport:
    """Move every legacy opt-out (PartitionKey ``optout``) to its spread partition; safe to run again, and while
    the app runs. Upsert first, delete second: interrupted, it leaves two rows that both say "opted out", never
    none. A START racing the move may leave the opt-out in place (an opt-out is never lost; the sender says
    so and ``optouts remove`` clears it)."""
    report = MigrationReport(dry_run=dry_run)
    table = storage.table(TABLE)
    for entity in list(table.query_entities("PartitionKey eq @pk", parameters={"pk": LEGACY_PARTITION})):
        report.moved += 1
        if dry_run:
            continue
        key = entity["RowKey"]
        values = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
        table.upsert_entity({**values, "PartitionKey": partition_key(key), "RowKey": key})
        table.delete_entity(partition_key=LEGACY_PARTITION, row_key=key)
    if not dry_run:
        storage.partition_has_rows(TABLE, LEGACY_PARTITION, fresh=True)
    return report
