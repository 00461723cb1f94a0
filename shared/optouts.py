"""Opt-out list on Table storage (table ``optouts``, RowKey = E.164 number).

Why keep our own: Twilio blocks replies to numbers that texted STOP on long codes, but messaging services and
other senders differ; the outbound path checks this table before every send so an opt-out is always honoured.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from . import storage

TABLE = "optouts"
PARTITION = "optout"
# An address as the send path validates it: E.164, optionally as a WhatsApp address. Full match only.
_ADDRESS = re.compile(r"(whatsapp:)?\+[1-9][0-9]{1,14}")


class InvalidAddressError(ValueError):
    """Not a canonical address: an opt-out lookup under any other key could miss the row (``"+1415…\n"``)."""

    def __init__(self, address: str) -> None:
        super().__init__(f"not an E.164 number or whatsapp:+E.164 address ({len(address)} chars)")
        self.address = address


def address_key(address: str) -> str:
    """The one RowKey for an address: the address itself when it is canonical (full match, nothing around it),
    else :class:`InvalidAddressError`. Recording and checking both go through here, so they cannot disagree."""
    if _ADDRESS.fullmatch(address) is None:
        raise InvalidAddressError(address)
    return address


def _record_key(address: str) -> str:
    """Opt-outs arrive from any sender Twilio forwards (short codes, alphanumeric ids): phone numbers are
    canonicalised; other senders are kept as given (no send can ever be addressed to them)."""
    try:
        return address_key(address.strip())
    except InvalidAddressError:
        return address


def record_optout(number: str, keyword: str, message_sid: str = "") -> None:
    """Remember that ``number`` opted out (idempotent: a second STOP just updates the row)."""
    storage.table(TABLE).upsert_entity({
        "PartitionKey": PARTITION,
        "RowKey": _record_key(number),
        "Keyword": keyword,
        "MessageSid": message_sid,
        "OptedOutAt": datetime.now(timezone.utc).isoformat(),
    })


def clear_optout(number: str) -> None:
    """Forget an opt-out (START / UNSTOP / YES); a number never opted out is fine."""
    storage.table(TABLE).delete_entity(partition_key=PARTITION, row_key=_record_key(number))


def is_opted_out(number: str) -> bool:
    """Whether the canonical ``number`` opted out; a non-canonical one raises :class:`InvalidAddressError` rather
    than answer "no" for a key that can never hold a row."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        storage.table(TABLE).get_entity(partition_key=PARTITION, row_key=address_key(number))
        return True
    except ResourceNotFoundError:
        return False
