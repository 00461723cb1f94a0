"""The ``sends`` table: one row per outbound id, the only guard against sending twice.

Twilio's Messages and Calls APIs take no idempotency key, and a queue delivers at least once, so every send is
claimed here first (insert-if-absent: ``create_entity``; ``ResourceExistsError`` = someone claimed it already)
and every later change is an etag-guarded MERGE (``IfNotModified``), so two workers holding the same id can never
both believe they own it.

Row (PartitionKey = :func:`partition_key` of kind and id: ``sms-00`` … ``sms-ff``, ``call-00`` … ``call-ff``;
RowKey = id; ``kind`` = ``sms`` | ``call``):
- ``status``: ``claimed`` (a worker is sending, or crashed while sending), ``retrying`` (the last try observed
  that Twilio did not get it: safe to send again), ``unknown`` (the last try may have reached Twilio: a timeout),
  ``sent`` (Twilio accepted it), then Twilio's own status from callbacks (``queued``, ``delivered``, ``completed``…),
  or ``failed`` / ``rejected`` (dead-lettered with ``last_error``).
- ``twilio_status``: the latest status Twilio reported (create answer or callback); callbacks only move it forward.
- ``sid``, ``attempts``, ``last_error``, ``error_code``, ``claimed_at``, ``updated_at``.
- ``content_hash``: :func:`shared.outbound.content_hash` of the message claimed under this id, so a later message
  reusing the id for other content (another recipient, another body) is told apart from a redelivery. Rows written
  before the column existed have none and match anything.
- ``resolution``: how a send in doubt was settled by reading Twilio back (``found``, ``resent``, ``ambiguous``),
  with ``resolution_detail``.

- ``claim_token``: a random token written with the claim, so a claim whose insert was retried by the SDK (the
  first try committed, the answer was lost: 409 on the retry) is recognised as our own, not another delivery's.

SID index rows (PartitionKey ``sid-`` + the SID's last two hex digits, RowKey = SID, ``id``, ``kind``) say which id
a Twilio SID was recorded for, so reconciliation never takes another id's message for its own. Inserting the
index row *is* the claim of a SID (:func:`claim_sid`): of two ids that both found one message, exactly one wins.
``sids`` on a send row lists every SID the account reported for that id; more than one is a double send, logged
as an ERROR ``double_send`` line (alerts count it).

Attempt index rows (PartitionKey ``to-`` + 2 hex digits of a hash of kind and recipient, RowKey = that hash, the
attempt's start and the id; ``id``, ``content_key``) are written before every create (:func:`note_attempt`), so
reconciliation can ask "which other sends of ours went to this recipient around then?" with one range query, and
refuses to take a message another unresolved send could own (:func:`attempts_to`). The recipient is never stored:
only its hash.

Partitions. One table partition takes ~2,000 entities/s in Azure, and each send costs its partition a claim, a
record and two updates per status callback; so rows are spread by a stable hash (SHA-256, not Python's salted
``hash``) over ``PARTITIONS`` = 256 partitions per kind. Every point read and write names one partition, computed
by :func:`partition_key`; listings (the ops CLI) query across partitions. 256 is enough by a wide margin: the whole
storage account serves ~20,000 requests/s, which spread over 256 partitions is ~80/s each, so a partition can never
be the first limit (docs/capacity.md); more partitions would add nothing but longer partition scans. The count is
part of the stored layout: changing it needs a migration like :func:`migrate_legacy_layout`.

Rows written before the spread (PartitionKey ``sms`` / ``call``, the *legacy layout*) are still found: a read that
misses falls back to the legacy partition, a claim first checks it (so an old row is never shadowed by a second,
new-layout row for the same id), and an update writes the row where it was read. Those extra reads happen only
while the legacy partition holds rows (checked once per process every 5 minutes:
:func:`shared.storage.partition_has_rows`). ``python -m shared.ops migrate-layout`` moves legacy rows to their
spread partitions (idempotent; see :func:`migrate_legacy_layout`), after which no fallback read is made.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from . import storage

log = logging.getLogger("switchboard.ledger")

TABLE = "sends"
KINDS = ("sms", "call")
PARTITIONS = 256  # per kind; part of the stored layout (see the module docstring)

# Twilio statuses in the order they can happen; a callback never moves a row backwards (a late "sent" must not
# overwrite "delivered"). Terminal statuses share the top rank; "read" (WhatsApp) comes after delivery.
_MESSAGE_ORDER = {"accepted": 1, "scheduled": 1, "queued": 2, "sending": 3, "sent": 4, "delivered": 5,
                  "undelivered": 5, "failed": 5, "canceled": 5, "partially_delivered": 5, "read": 6}
_CALL_ORDER = {"queued": 1, "initiated": 2, "ringing": 3, "in-progress": 4, "answered": 4, "completed": 5,
               "busy": 5, "failed": 5, "no-answer": 5, "canceled": 5}


class LedgerConflictError(RuntimeError):
    """The row changed under us (etag mismatch): re-read and decide again."""


class SidClaimedError(RuntimeError):
    """The SID is already recorded for another id (``owner``): it is that id's message, not this one's."""

    def __init__(self, kind: str, sid: str, owner: str) -> None:
        super().__init__(f"{kind} SID {sid} belongs to id {owner!r}")
        self.kind = kind
        self.sid = sid
        self.owner = owner


class UnknownSendError(LookupError):
    """No row for this id (a status callback for a send this app never made)."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"no {kind} send with id {ident!r}")
        self.kind = kind
        self.ident = ident


@dataclass(frozen=True)
class Row:
    """A ledger row as read, with the etag needed to change it."""

    kind: str
    id: str
    status: str
    etag: str
    attempts: int = 0
    sid: str = ""
    twilio_status: str = ""
    last_error: str = ""
    claimed_at: datetime | None = None
    fields: Mapping[str, Any] = field(default_factory=dict, repr=False)
    partition: str = ""  # where the row lives (a legacy row keeps its old partition); "" = partition_key()

    @property
    def partition_key(self) -> str:
        return self.partition or partition_key(self.kind, self.id)

    @property
    def content_hash(self) -> str:
        return str(self.fields.get("content_hash", "") or "")

    def conflicts_with(self, content_hash: str) -> bool:
        """True when this row was written for different content than ``content_hash`` (no stored hash: no)."""
        return bool(self.content_hash) and self.content_hash != content_hash

    @property
    def sids(self) -> tuple[str, ...]:
        """Every SID the account reported for this id (the row's ``sid`` first); two or more = a double send."""
        listed = [s for s in str(self.fields.get("sids", "") or "").split(",") if s]
        return tuple(dict.fromkeys(([self.sid] if self.sid else []) + listed))

    @property
    def unresolved(self) -> bool:
        """True while an attempt of this id may have created a message nobody has tied to it yet: no SID, no
        Twilio status, and a status that leaves the question open (or dead-lettered as ambiguous)."""
        if self.reached_twilio:
            return False
        return self.status in ("claimed", "unknown", "retrying") or (
            self.status == "failed" and self.fields.get("resolution") == "ambiguous")

    @property
    def reached_twilio(self) -> bool:
        """True once Twilio confirmed it has the message/call (create answer or any callback)."""
        return bool(self.sid or self.twilio_status)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def partition_key(kind: str, ident: str) -> str:
    """The PartitionKey of send ``ident``: ``<kind>-<2 hex digits>``, a stable hash of kind and id over
    ``PARTITIONS`` partitions. Never starts with ``sid-`` (the SID index) nor equals a legacy partition."""
    digest = hashlib.sha256(f"{kind}\x00{ident}".encode("utf-8", "surrogatepass")).digest()
    return f"{kind}-{int.from_bytes(digest[:4], 'big') % PARTITIONS:02x}"


def legacy_partition(kind: str) -> str:
    """Where the layout before the spread kept every row of ``kind``."""
    return kind


def _legacy_present(kind: str) -> bool:
    return storage.partition_has_rows(TABLE, legacy_partition(kind))


def _get_at(kind: str, ident: str, partition: str) -> Row | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return _row(kind, storage.table(TABLE).get_entity(partition_key=partition, row_key=ident))
    except ResourceNotFoundError:
        return None


def _row(kind: str, entity: Any, etag: str | None = None) -> Row:
    claimed_at = entity.get("claimed_at")
    if isinstance(claimed_at, str):
        try:
            claimed_at = datetime.fromisoformat(claimed_at)
        except ValueError:
            claimed_at = None
    return Row(kind=kind, id=entity["RowKey"], status=str(entity.get("status", "")),
               etag=etag if etag is not None else entity.metadata.get("etag", ""),
               attempts=int(entity.get("attempts", 0) or 0),
               sid=str(entity.get("sid", "") or ""), twilio_status=str(entity.get("twilio_status", "") or ""),
               last_error=str(entity.get("last_error", "") or ""), claimed_at=claimed_at, fields=dict(entity),
               partition=str(entity.get("PartitionKey", "") or ""))


def get(kind: str, ident: str) -> Row | None:
    """The row for ``ident`` (spread layout first, then the legacy partition while it holds rows), or None."""
    row = _get_at(kind, ident, partition_key(kind, ident))
    if row is None and _legacy_present(kind):
        row = _get_at(kind, ident, legacy_partition(kind))
    return row


def _legacy_row(kind: str, ident: str) -> Row | None:
    """The legacy-layout row for ``ident`` if that layout still holds rows (a claim must not shadow it)."""
    return _get_at(kind, ident, legacy_partition(kind)) if _legacy_present(kind) else None


def try_claim(kind: str, ident: str, **extra: Any) -> tuple[bool, Row]:
    """Insert a ``claimed`` row if none exists. Returns (claimed by us?, the row as it now is)."""
    from azure.core.exceptions import ResourceExistsError

    old = _legacy_row(kind, ident)
    if old is not None:
        return False, old
    now = _now()
    token = uuid.uuid4().hex
    entity = {"PartitionKey": partition_key(kind, ident), "RowKey": ident, "kind": kind, "status": "claimed",
              "attempts": 1, "claimed_at": now, "created_at": now, "updated_at": now, "claim_token": token, **extra}
    try:
        meta = storage.table(TABLE).create_entity(entity)
    except ResourceExistsError:
        row = get(kind, ident)
        if row is None:  # deleted in between (only an operator would): try once more
            return try_claim(kind, ident, **extra)
        # Our own insert, committed although its answer was lost and the SDK retried it (Storage 500/503).
        return row.fields.get("claim_token") == token, row
    return True, Row(kind=kind, id=ident, status="claimed", etag=meta.get("etag", ""), attempts=1,
                     claimed_at=now, fields=entity, partition=entity["PartitionKey"])


def insert_if_absent(kind: str, ident: str, **values: Any) -> Row | None:
    """Create a row with ``values`` unless one exists; returns the existing row (None when we created it)."""
    from azure.core.exceptions import ResourceExistsError

    old = _legacy_row(kind, ident)
    if old is not None:
        return old
    now = _now()
    try:
        storage.table(TABLE).create_entity({"PartitionKey": partition_key(kind, ident), "RowKey": ident,
                                                  "kind": kind, "created_at": now, "updated_at": now, **values})
        return None
    except ResourceExistsError:
        return get(kind, ident)


def update(row: Row, **values: Any) -> Row:
    """MERGE ``values`` into ``row`` if it is unchanged since read; else :class:`LedgerConflictError`."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import UpdateMode

    values = {k: ("" if v is None else v) for k, v in values.items()}
    values["updated_at"] = _now()
    entity = {"PartitionKey": row.partition_key, "RowKey": row.id, **values}
    try:
        meta = storage.table(TABLE).update_entity(entity, mode=UpdateMode.MERGE, etag=row.etag,
                                                  match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError) as exc:
        raise LedgerConflictError(f"{row.kind}/{row.id} changed since read ({type(exc).__name__})") from None
    merged = {**row.fields, **values, "PartitionKey": row.partition_key}
    return _row(row.kind, merged, meta.get("etag", ""))


def status_rank(kind: str, status: str) -> int:
    """Where a Twilio status sits in its lifecycle (0 = unknown/our own status)."""
    return (_MESSAGE_ORDER if kind == "sms" else _CALL_ORDER).get(status.lower(), 0)


MAX_SIDS = 20  # ``sids`` keeps this many (35 chars each); more would be a runaway, already flagged long before


def _with_sid(row: Row, sid: str) -> str:
    return ",".join(list(dict.fromkeys(row.sids + (sid,)))[:MAX_SIDS])


def record_sent(row: Row, sid: str, twilio_status: str, *, max_tries: int = 8, **extra: Any) -> Row:
    """After Twilio accepted a send: store the SID; status ``sent`` unless a callback already said more.
    The SID is claimed in the index first; a create answer is Twilio's own word, so a SID another id holds is
    logged as an error and recorded anyway (that other id's claim was the mistake)."""
    try:
        claim_sid(row.kind, sid, row.id)
    except SidClaimedError as exc:
        log.error("ledger: sid_mismatch %s create answer for id=%s names SID %s of id=%s", row.kind, row.id, sid,
                  exc.owner)
    for _ in range(max_tries):
        values: dict[str, Any] = {"sid": sid, "last_error": "", **extra}
        if row.sid and row.sid != sid:
            _flag_double_send(row, sid)
        values["sids"] = _with_sid(row, sid)
        if not row.twilio_status:
            values["status"] = "sent"
            values["twilio_status"] = twilio_status
        elif status_rank(row.kind, twilio_status) > status_rank(row.kind, row.twilio_status):
            values["twilio_status"] = twilio_status
        try:
            return update(row, **values)
        except LedgerConflictError:
            fresh = get(row.kind, row.id)
            if fresh is None:
                raise
            row = fresh
    raise LedgerConflictError(f"{row.kind}/{row.id}: too many concurrent changes")


def _flag_double_send(row: Row, sid: str) -> None:
    """One ERROR line per SID found beyond the first for an id: the alert on double sends counts these."""
    log.error("ledger: double_send %s id=%s sids=%s", row.kind, row.id, ",".join(row.sids + (sid,)))


class CallbackSidMismatchError(RuntimeError):
    """A status callback for ``id`` names a SID that is not the row's: another id's message (``owner`` set), or
    a second message created under this id (a double send, now recorded in ``sids``)."""

    def __init__(self, kind: str, ident: str, sid: str, owner: str | None) -> None:
        what = f"id {owner!r}'s message" if owner else "a second message sent under this id (double send)"
        super().__init__(f"{kind} callback for id {ident!r} names SID {sid}: {what}")
        self.kind, self.ident, self.sid, self.owner = kind, ident, sid, owner


def apply_callback(kind: str, ident: str, twilio_status: str, *, sid: str = "", error_code: str = "",
                   max_tries: int = 8) -> Row:
    """Write a status callback into the row, moving forward only. Raises :class:`UnknownSendError`, and
    :class:`CallbackSidMismatchError` when the callback is about another message than the row's (nothing of the
    row's status moves; a second message of this id is recorded in ``sids`` and flagged as a double send)."""
    twilio_status = twilio_status.strip().lower()
    for _ in range(max_tries):
        row = get(kind, ident)
        if row is None:
            raise UnknownSendError(kind, ident)
        if row.status == "rejected":
            return row  # never sent: nothing Twilio says can be about it
        values: dict[str, Any] = {}
        if sid and sid != row.sid:
            owner = id_for_sid(kind, sid)
            if owner not in (None, ident):
                log.error("ledger: sid_mismatch %s callback for id=%s names SID %s of id=%s", kind, ident, sid,
                          owner)
                raise CallbackSidMismatchError(kind, ident, sid, owner)
            if owner is None:
                try:
                    claim_sid(kind, sid, ident)
                except SidClaimedError as exc:
                    log.error("ledger: sid_mismatch %s callback for id=%s names SID %s of id=%s", kind, ident,
                              sid, exc.owner)
                    raise CallbackSidMismatchError(kind, ident, sid, exc.owner) from None
            if row.sid:
                # The callback URL carries this id, so Twilio created a second message for it.
                if sid not in row.sids:
                    _flag_double_send(row, sid)
                    try:
                        update(row, sids=_with_sid(row, sid), double_send=True)
                    except LedgerConflictError:
                        continue
                raise CallbackSidMismatchError(kind, ident, sid, None)
            values["sid"] = sid
            values["sids"] = _with_sid(row, sid)
        newer = status_rank(kind, twilio_status) > status_rank(kind, row.twilio_status) or not row.twilio_status
        if newer and twilio_status:
            values.update(status=twilio_status, twilio_status=twilio_status)
            if error_code:
                values["error_code"] = error_code
        if not values:
            return row
        try:
            return update(row, **values)
        except LedgerConflictError:
            continue
    raise LedgerConflictError(f"{kind}/{ident}: too many concurrent changes")


SID_INDEX_PREFIX = "sid-"


def _sid_partition(sid: str) -> str:
    return SID_INDEX_PREFIX + (sid[-2:].lower() if len(sid) >= 2 else "00")


def is_send_entity(entity: Mapping[str, Any]) -> bool:
    """False for the SID and attempt index rows that share the table (listings show sends only)."""
    return not str(entity.get("PartitionKey", "")).startswith((SID_INDEX_PREFIX, ATTEMPT_INDEX_PREFIX))


def claim_sid(kind: str, sid: str, ident: str) -> None:
    """Record ``sid`` as ``ident``'s in the SID index: insert-if-absent, so of two ids that found the same message
    only one can hold it. Raises :class:`SidClaimedError` when another id holds it (holding it already is fine)."""
    from azure.core.exceptions import ResourceExistsError

    if not sid:
        return
    try:
        storage.table(TABLE).create_entity({"PartitionKey": _sid_partition(sid), "RowKey": sid,
                                                  "id": ident, "kind": kind})
    except ResourceExistsError:
        owner = id_for_sid(kind, sid)
        if owner not in (None, ident):
            raise SidClaimedError(kind, sid, owner) from None


def id_for_sid(kind: str, sid: str) -> str | None:
    """The id a Twilio SID was recorded for, or None when the ledger never saw it."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        entity = storage.table(TABLE).get_entity(partition_key=_sid_partition(sid), row_key=sid)
    except ResourceNotFoundError:
        return None
    return str(entity.get("id") or "") or None


# ---------------------------------------------------------------- attempt index: our sends to one recipient

ATTEMPT_INDEX_PREFIX = "to-"


@dataclass(frozen=True)
class Attempt:
    """One attempt of one id to a recipient, as the attempt index holds it."""

    id: str
    started: datetime
    content_key: str


def _recipient_hash(kind: str, to: str) -> str:
    return hashlib.sha256(f"{kind}\x00{to}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _attempt_stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def note_attempt(kind: str, ident: str, to: str, content_key: str, started: datetime) -> None:
    """Record, before a create is sent, that ``ident`` attempts a send to ``to`` (see the module docstring)."""
    from azure.core.exceptions import ResourceExistsError

    digest = _recipient_hash(kind, to)
    try:
        storage.table(TABLE).create_entity({
            "PartitionKey": ATTEMPT_INDEX_PREFIX + digest[:2], "RowKey": f"{digest}_{_attempt_stamp(started)}_{ident}",
            "id": ident, "kind": kind, "content_key": content_key, "started": started})
    except ResourceExistsError:
        pass  # the same attempt noted twice (an SDK retry of our own insert)


def attempts_to(kind: str, to: str, since: datetime) -> list[Attempt]:
    """Every attempt to ``to`` that started at or after ``since`` (one range query in one partition)."""
    digest = _recipient_hash(kind, to)
    entities = storage.table(TABLE).query_entities(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
        parameters={"pk": ATTEMPT_INDEX_PREFIX + digest[:2], "lo": f"{digest}_{_attempt_stamp(since)}",
                    "hi": f"{digest}`"})
    found = []
    for entity in entities:
        started = entity.get("started")
        if not isinstance(started, datetime):
            continue
        found.append(Attempt(id=str(entity.get("id", "")), started=started if started.tzinfo else
                             started.replace(tzinfo=timezone.utc), content_key=str(entity.get("content_key", ""))))
    return found


# ---------------------------------------------------------------- legacy layout → spread partitions


@dataclass
class MigrationReport:
    """What :func:`migrate_legacy_layout` did (or, with ``dry_run``, would do)."""

    moved: int = 0
    conflicts: list[str] = field(default_factory=list)  # "kind/id": both layouts hold a row, left for an operator
    dry_run: bool = False


def migrate_legacy_layout(*, dry_run: bool = False, max_tries: int = 5) -> MigrationReport:
    """Move every legacy row (PartitionKey ``sms`` / ``call``) to its spread partition; safe to run again, and
    while the app runs. Per row: insert a copy (marked with the legacy row's etag), then delete the legacy row
    only if it is unchanged since read. A legacy row changed in between (a worker that read it just before) is
    copied again if our copy is still untouched; a copy a second run finds with the same etag mark is finished.
    An id with a spread row not made by this migration is reported as a conflict and left as it is."""
    from azure.core.exceptions import ResourceNotFoundError

    report = MigrationReport(dry_run=dry_run)
    table = storage.table(TABLE)
    for kind in KINDS:
        entities = table.query_entities("PartitionKey eq @pk", parameters={"pk": legacy_partition(kind)})
        for entity in list(entities):
            if dry_run:
                report.moved += 1
                continue
            our_copy = ""
            for _ in range(max_tries):
                outcome, our_copy = _migrate_row(kind, entity, our_copy)
                if outcome != "retry":
                    break
                try:
                    entity = table.get_entity(partition_key=legacy_partition(kind), row_key=entity["RowKey"])
                except ResourceNotFoundError:
                    outcome = "moved"
                    break
            if outcome == "moved":
                report.moved += 1
            else:
                report.conflicts.append(f"{kind}/{entity['RowKey']}")
                log.error("ledger migration: %s/%s has rows in both layouts; left for an operator", kind,
                          entity["RowKey"])
        if not dry_run:
            storage.partition_has_rows(TABLE, legacy_partition(kind), fresh=True)
    return report


def _migrate_row(kind: str, legacy: Any, our_copy: str) -> tuple[str, str]:
    """Copy one legacy row and delete it: (``moved`` | ``retry`` (it changed meanwhile) | ``conflict``, the etag
    of the copy we wrote). ``our_copy``: the etag of the copy an earlier pass of this run wrote."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import UpdateMode

    table = storage.table(TABLE)
    ident = legacy["RowKey"]
    legacy_etag = legacy.metadata.get("etag", "")
    copy = {**{k: v for k, v in legacy.items() if k not in ("PartitionKey", "RowKey")},
            "PartitionKey": partition_key(kind, ident), "RowKey": ident, "kind": kind,
            "migrated_from_etag": legacy_etag}
    try:
        our_copy = table.create_entity(copy).get("etag", "")
    except ResourceExistsError:
        spread = table.get_entity(partition_key=copy["PartitionKey"], row_key=ident)
        if spread.get("migrated_from_etag") != legacy_etag:
            # Not a copy of this version of the legacy row. Ours from an earlier pass, untouched since (the
            # legacy row changed in between): copy again. Anything else (the app wrote a spread row itself, or
            # wrote to our copy): two live rows for one id, which only an operator can merge.
            if not our_copy or spread.metadata.get("etag") != our_copy:
                return "conflict", our_copy
            try:
                our_copy = table.update_entity(copy, mode=UpdateMode.REPLACE, etag=our_copy,
                                               match_condition=MatchConditions.IfNotModified).get("etag", "")
            except (ResourceModifiedError, ResourceNotFoundError):
                return "conflict", our_copy
    try:
        table.delete_entity(partition_key=legacy_partition(kind), row_key=ident, etag=legacy_etag,
                            match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:
        return "retry", our_copy
    return "moved", our_copy
