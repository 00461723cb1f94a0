"""``python -m shared.ops``: the operator's shell tool: see sends, act on dead letters, manage opt-outs.

Why it exists: without it, resending a dead letter means hand-editing queue messages in a storage explorer, and
nothing says which dead letters are safe to send again. This tool knows the ledger's rules (a send that reached
Twilio, or may have, is never re-sent without ``--force`` and a look at what Twilio has).

    python -m shared.ops sends show ID [--kind sms|call]
    python -m shared.ops sends list [--status S ...] [--kind K] [--since 2h|ISO] [--until ISO] [--limit N]
    python -m shared.ops poison list [--kind K] [--reason CODE] [--limit N]
    python -m shared.ops poison show ID [--kind K]
    python -m shared.ops poison replay [--kind K] [--reason CODE] [--id ID ...] [--dry-run] [--force]
    python -m shared.ops poison purge [--kind K] [--reason CODE] [--id ID ...] [--dry-run] [--yes]
    python -m shared.ops optouts list | add NUMBER [--keyword K] | remove NUMBER
    python -m shared.ops inbound [--limit N] [--take]
    python -m shared.ops outcomes [--limit N] [--take]
    python -m shared.ops pacing prune [--older-than 1d] [--dry-run]
    python -m shared.ops migrate-layout [--dry-run]

Where: ``--connection-string`` (Azurite: ``UseDevelopmentStorage=true``), else ``--account-name`` (Azure, signed
in with ``az login``: DefaultAzureCredential), else ``AzureWebJobsStorage`` from the environment or
local.settings.json, as ``python -m shared.enqueue`` reads it (``UseDevelopmentStorage=true``: the Azurite of the
``make run`` running in this folder, named in one line on stderr). Every verb prints a table, or ``--json``.
Listing reads the whole table across partitions (OData filter on status / time), never one partition.

Every failure is one line on stderr (exit 2), within seconds: storage calls have short timeouts and few retries.
What entries hold is shown inert: control characters (terminal escape sequences), bidi overrides and lone
surrogates are printed as ``\x1b`` / ``\u202e`` escapes. Output cut off by the reader (``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence, TextIO

from .outbound import E164, ID_PATTERN, KINDS, Kind

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
PROGRESS_EVERY = 500            # rows/messages between progress lines on stderr
POISON_VISIBILITY_SECONDS = 120  # how long a dead letter stays hidden while this tool holds it
TWILIO_LOOKBACK = timedelta(days=2)
TWILIO_LIST_LIMIT = 20

# What each ledger status means for an operator (DESIGN "Outcomes"; shared/ledger.py).
STATUS_MEANINGS = {
    "claimed": "a worker is sending it now, or crashed while sending (an old claim means: in doubt)",
    "retrying": "the last try saw that Twilio did not get it; the queue will try again",
    "unknown": "the last try may have reached Twilio (timeout); not sent again automatically",
    "sent": "Twilio accepted it; waiting for its status callback",
    "failed": "dead-lettered (see last_error); nothing more will happen unless replayed",
    "rejected": "never sent: invalid message or opted-out recipient (dead-lettered)",
    "cancelled": "never sent: cancelled (ops sends cancel) before it was submitted to Twilio",
}
_TWILIO_STATUSES = {"accepted", "scheduled", "queued", "sending", "delivered", "undelivered", "canceled", "read",
                    "partially_delivered", "initiated", "ringing", "in-progress", "answered", "completed", "busy",
                    "no-answer"}
# What ``sends list --status`` accepts: a status a row can hold (ours, then Twilio's).
KNOWN_STATUSES = tuple(STATUS_MEANINGS) + tuple(sorted(_TWILIO_STATUSES - set(STATUS_MEANINGS)))
_DURATION = re.compile(r"(\d+)([smhd])")
_STATUS_WORD = re.compile(r"[A-Za-z][A-Za-z_-]{0,31}")  # ledger and Twilio statuses: claimed, in-progress, no-answer…
MAX_KEYWORD_CHARS = 64
EXIT_BROKEN_PIPE = 141          # as a tool killed by SIGPIPE: the reader (``| head``) stopped reading
QUEUE_TIMEOUT_SECONDS = 5       # per queue request; the SDK's default retries would make "unreachable" take ~90 s
QUEUE_RETRIES = 2
# Shown escaped, never raw: C0/C1 controls (ESC starts a terminal escape sequence; U+009B is CSI on its own),
# bidi overrides and isolates (they reorder what the operator reads), lone surrogates (no encoding can print them).
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# The same, minus what json.dumps already escapes (C0, which it writes as \u00XX).
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class OpsError(RuntimeError):
    """Something the operator must fix (bad argument, unreachable storage); printed as one line, exit 2."""


# ---------------------------------------------------------------- arguments


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where")
    where.add_argument("--connection-string", help="storage connection string (Azurite: UseDevelopmentStorage=true)")
    where.add_argument("--account-name", help="storage account in Azure; signs in as you (az login)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    kind = argparse.ArgumentParser(add_help=False)
    kind.add_argument("--kind", choices=KINDS, help="sms or call (default: both)")

    parser = argparse.ArgumentParser(prog="python -m shared.ops", description=_plain(__doc__.split("\n\n")[0]),
                                     epilog=_plain("\n\n".join(__doc__.split("\n\n")[1:])),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True,
                                  metavar="{sends,poison,optouts,inbound,outcomes,pacing,migrate-layout}")

    sends = verbs.add_parser("sends", help="the sends ledger: one row per outbound id").add_subparsers(
        dest="action", required=True)
    show = sends.add_parser("show", parents=[common, kind], help="one send: its row and what it means")
    show.add_argument("id", help="the send id (the queue message's id)")
    listing = sends.add_parser("list", parents=[common, kind], help="sends filtered by status and time")
    listing.add_argument("--status", action="append",
                         help="status (repeatable): " + ", ".join(STATUS_MEANINGS) + ", or Twilio's (delivered…)")
    listing.add_argument("--since", help="changed at or after: a duration back from now (30m, 2h, 7d) or ISO-8601")
    listing.add_argument("--until", help="changed before: a duration back from now or ISO-8601")
    listing.add_argument("--limit", type=int, default=200, help="print at most N rows (default 200)")
    cancel = sends.add_parser("cancel", parents=[common, kind],
                              help="stop sends not yet submitted to Twilio: one id, or a whole campaign")
    which = cancel.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="cancel_id", help="the send id to cancel")
    which.add_argument("--campaign", help="the campaign tag (the message field campaign) to cancel")

    poison = verbs.add_parser("poison", help="dead letters (<queue>-poison)").add_subparsers(dest="action",
                                                                                           required=True)
    select = argparse.ArgumentParser(add_help=False)
    select.add_argument("--reason", action="append", help="only dead letters with this code (repeatable)")
    select.add_argument("--id", dest="ids", action="append", help="only the dead letter(s) of this send id")
    plist = poison.add_parser("list", parents=[common, kind, select], help="counts by reason, then entries")
    plist.add_argument("--limit", type=int, default=100, help="print at most N entries (default 100)")
    pshow = poison.add_parser("show", parents=[common, kind],
                              help="a send's dead letter(s) whole: the reason, what to do, the original message")
    pshow.add_argument("id", help="the send id")
    replay = poison.add_parser("replay", parents=[common, kind, select],
                               help="put resendable dead letters back on their queue, with their original id")
    replay.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    replay.add_argument("--force", action="store_true",
                        help="also replay entries that reached Twilio or are ambiguous (after showing Twilio's view)")
    purge = poison.add_parser("purge", parents=[common, kind, select], help="delete dead letters (asks first)")
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    optouts = verbs.add_parser("optouts", help="the opt-out list (STOP)").add_subparsers(dest="action",
                                                                                       required=True)
    optouts.add_parser("list", parents=[common], help="every opted-out address")
    add = optouts.add_parser("add", parents=[common], help="opt an address out (no more sends to it)")
    add.add_argument("number", help="E.164 number or whatsapp:+E164")
    add.add_argument("--keyword", default="OPS", help="recorded as the keyword (default OPS)")
    remove = optouts.add_parser("remove", parents=[common], help="opt an address back in")
    remove.add_argument("number", help="E.164 number or whatsapp:+E164")

    for verb, what in (("inbound", "the inbound queue (INBOUND_QUEUE): SMS, WhatsApp and voicemail events, oldest "
                                   "first (numbers masked in the table; --json prints the events as queued)"),
                       ("outcomes", "the outcomes queue (OUTCOMES_QUEUE): what became of each queued send, oldest "
                                    "first (--json prints the events as queued)")):
        events = verbs.add_parser(verb, parents=[common], help=what)
        events.add_argument("--limit", type=int, default=32, help="show at most N events (default 32)")
        events.add_argument("--take", action="store_true",
                            help="remove what is shown from the queue, as a consumer would (default: only look)")
        events.set_defaults(action="list")

    pacing = verbs.add_parser("pacing", help="the pacing table (turns of messages waiting for a sender's rate)"
                              ).add_subparsers(dest="action", required=True)
    prune = pacing.add_parser("prune", parents=[common],
                              help="delete the tickets and line places of turns long past (the budget rows stay)")
    prune.add_argument("--older-than", default="1d",
                       help="turns further back than this: a duration (12h, 7d) or ISO-8601 (default 1d)")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")

    migrate = verbs.add_parser("migrate-layout", parents=[common],
                               help="move rows of the one-partition layout to spread partitions (idempotent)")
    migrate.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")
    migrate.set_defaults(action="run")
    return parser


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``30m`` / ``2h`` / ``7d`` back from now, or an ISO-8601 time (UTC when it names no zone)."""
    now = now or datetime.now(timezone.utc)
    match = _DURATION.fullmatch(text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
        try:
            return now - timedelta(**{unit: int(match[1])})
        except (OverflowError, ValueError):  # further back than year 1, or more digits than int() reads
            raise OpsError(f"time out of range: {text!r} reaches back before the year 1") from None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise OpsError(f"not a time: {text!r} (use 30m, 2h, 7d or ISO-8601 like 2030-01-01T09:00:00Z)") from None
    try:  # the query is sent in UTC: 0001-01-01T00:00:00+01:00 has no UTC time
        return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    except OverflowError:
        raise OpsError(f"time out of range: {text!r} has no UTC time between the years 1 and 9999") from None


# ---------------------------------------------------------------- output


@dataclass
class Output:
    """Where results go: a table (or text) on ``out``, JSON with ``--json``; progress and errors on ``err``."""

    as_json: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def line(self, text: str = "") -> None:
        if not self.as_json:
            print(inert(text), file=self.out)

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
        if self.as_json:
            return
        if not rows:
            print("(none)", file=self.out)
            return
        last = len(columns) - 1  # the last column is printed whole: a reason or advice cut short misleads
        cells = [[_cell(r.get(c), whole=i == last) for i, c in enumerate(columns)] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=self.out)
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=self.out)

    def document(self, value: Any) -> None:
        if self.as_json:
            text = json.dumps(value, indent=2, default=_json_default, ensure_ascii=False)
            # These can only stand inside JSON strings, where a \uXXXX escape means the same character.
            print(_UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text), file=self.out)

    def progress(self, what: str, count: int) -> None:
        if count and count % PROGRESS_EVERY == 0:
            print(f"… {count} {what} read", file=self.err, flush=True)


def _cell(value: Any, whole: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    text = inert(str(value).replace("\n", " "))
    return text if whole or len(text) <= 60 else text[:57] + "..."


def _plain(text: str) -> str:
    """Docstring text for --help: without reStructuredText's double backticks."""
    return text.replace("``", "")


def inert(text: str) -> str:
    """``text`` safe to print on a terminal: controls, bidi overrides and lone surrogates as visible escapes."""
    return _UNSAFE_TEXT.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# ---------------------------------------------------------------- connection


def connect(args: argparse.Namespace) -> None:
    """Point ``shared.storage`` at the account the operator named (flags, env, or local.settings.json)."""
    from . import config, storage
    from .enqueue import LocalSettingsError, load_local_settings

    _queues.clear()
    try:
        load_local_settings()
    except LocalSettingsError as exc:
        raise OpsError(str(exc)) from None
    if args.connection_string:
        os.environ["AzureWebJobsStorage"] = args.connection_string
    elif args.account_name:
        if not re.fullmatch(r"[a-z0-9]{3,24}", args.account_name):
            raise OpsError(f"not a storage account name: {args.account_name!r} (3-24 lowercase letters/digits)")
        os.environ["AzureWebJobsStorage"] = ""
        for service in ("queue", "table"):
            os.environ.pop(f"AzureWebJobsStorage__{service}ServiceUri", None)
        os.environ["AzureWebJobsStorage__accountName"] = args.account_name
        from azure.identity import DefaultAzureCredential

        storage.use_credential(DefaultAzureCredential())
    if not args.account_name:
        from . import localstack

        try:  # UseDevelopmentStorage=true: the Azurite of the make run running here, whatever its ports
            localstack.use_local_stack(os.environ, prog="ops: ", services=["queue", "table"])
        except localstack.PortSettingError as exc:
            raise OpsError(str(exc)) from None
    config.reset_settings()
    storage.reset_clients()
    if not config.get_settings().storage_connection and not os.environ.get("AzureWebJobsStorage__accountName"):
        raise OpsError("no storage account: pass --connection-string or --account-name, or set AzureWebJobsStorage "
                       "(environment or local.settings.json)")
    if config.get_settings().storage_connection:
        source = "--connection-string" if args.connection_string else "AzureWebJobsStorage"
        try:
            conn = storage.connection_string()
        except storage.StorageSettingError as exc:  # names the problem, never a value from the string
            raise OpsError(f"{source} is malformed: {exc.problem} (the value is not shown)") from None
        _check_connection_string(conn, source)


def _check_connection_string(conn: str, source: str) -> None:
    """Parse the connection string as both SDKs will, so a malformed one is one line now, not a traceback later.
    The string itself is never shown: it may hold an account key."""
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    try:
        TableServiceClient.from_connection_string(conn)
        QueueServiceClient.from_connection_string(conn)
    except (ValueError, TypeError) as exc:
        raise OpsError(f"{source} is malformed: expected a storage connection string like UseDevelopmentStorage=true "
                       "or DefaultEndpointsProtocol=https;AccountName=…;AccountKey=… "
                       f"({type(exc).__name__}; the value is not shown)") from None


# Queue clients of this run: short timeouts and few retries, as the table clients have (shared.storage).
_queues: dict[str, Any] = {}


def queue_client(name: str) -> Any:
    """A ``QueueClient`` for ``name`` with bounded timeouts and retries, created once per run; the queue is created
    if absent (as ``shared.storage.queue`` does)."""
    from azure.core.exceptions import ResourceExistsError

    from . import storage

    client = _queues.get(name)
    if client is None:
        client = storage.short_lived_queue(name, timeout_seconds=QUEUE_TIMEOUT_SECONDS, retries=QUEUE_RETRIES)
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        _queues[name] = client
    return client


def describe_storage_error(exc: BaseException) -> str:
    """One line for an Azure SDK error: what failed and what to check."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(exc, ClientAuthenticationError):
        return ("storage refused the credentials: sign in with `az login` and hold Storage Table/Queue Data "
                "Contributor on the account")
    if isinstance(exc, ServiceRequestError):
        return f"storage unreachable ({type(exc).__name__}): is Azurite running / the account name right?"
    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or exc.status_code
        return f"storage answered {exc.status_code} ({code})"
    return f"storage error: {type(exc).__name__}"


# ---------------------------------------------------------------- sends


def _row_kind(entity: Any) -> str:
    """sms / call for a table entity, whatever the partition layout (a kind field, or the partition key)."""
    kind = entity.get("kind") or entity.get("PartitionKey", "")
    return kind if kind in KINDS else str(kind)


def _send_view(kind: str, entity: Any) -> dict[str, Any]:
    status = str(entity.get("status", "") or "")
    view = {"kind": kind, "id": entity.get("RowKey", ""), "status": status,
            "twilio_status": entity.get("twilio_status", "") or "", "sid": entity.get("sid", "") or "",
            "attempts": entity.get("attempts", 0), "last_error": entity.get("last_error", "") or "",
            "error_code": entity.get("error_code", "") or "", "updated_at": entity.get("updated_at")}
    return view


def meaning(status: str, fields: dict[str, Any]) -> str:
    """What a ledger status tells the operator (Twilio's own statuses pass through as Twilio's word)."""
    if status in STATUS_MEANINGS:
        text = STATUS_MEANINGS[status]
    elif status in _TWILIO_STATUSES or status == "failed":
        text = f"Twilio reports {status!r}"
    else:
        text = "unrecognised status"
    if status in ("failed", "rejected") and fields.get("resendable"):
        if status == "rejected" and not fields.get("content_hash"):
            # Rows of messages that never parsed carry no content: replay refuses them, and says the same.
            text = "never sent, dead-lettered as an " + INVALID_ADVICE.format(
                id=fields.get("RowKey") or fields.get("id") or "ID")
        else:
            text += "; never reached Twilio, so `poison replay` may send it once the reason no longer holds"
    return text


# The one piece of advice for an invalid message, in `sends show`, `poison show` and `poison replay`.
INVALID_ADVICE = ("invalid message: fix it and enqueue it again (python -m shared.enqueue); "
                  "`python -m shared.ops poison show {id}` prints it")


def sends_show(args: argparse.Namespace, out: Output) -> int:
    from . import ledger

    if not ID_PATTERN.fullmatch(args.id):
        raise OpsError(f"not a send id: {args.id!r} (1-128 of A-Z a-z 0-9 . _ : -)")
    found = []
    for kind in ([args.kind] if args.kind else list(KINDS)):
        row = ledger.get(kind, args.id)
        if row is not None:
            found.append(row)
    if not found:
        if out.as_json:
            out.document({"id": args.id, "found": False})
        print(f"no send with id {args.id!r} in the ledger", file=out.err)
        return EXIT_NOT_FOUND
    documents = []
    for row in found:
        fields = {k: v for k, v in row.fields.items() if k not in ("PartitionKey",)}
        fields["kind"] = row.kind
        fields["meaning"] = meaning(row.status, fields)
        documents.append(fields)
        out.line(f"{row.kind} {row.id}: {row.status} — {fields['meaning']}")
        for name in sorted(fields):
            if name not in ("RowKey", "kind", "meaning", "status"):
                out.line(f"  {name:<22} {_cell(fields[name], whole=True)}")
        if len(row.sids) > 1:
            out.line(f"  double send: Twilio holds {len(row.sids)} messages for this id: {', '.join(row.sids)}")
        resolution = {k: v for k, v in fields.items() if "resol" in k or "reconcil" in k}
        if not resolution and row.status in ("unknown", "claimed"):
            out.line("  in doubt: not resolved yet (a status callback or reconciliation fills it in)")
    out.document(documents[0] if len(documents) == 1 else documents)
    return EXIT_OK


def sends_cancel(args: argparse.Namespace, out: Output) -> int:
    """Cancel what has not reached Twilio yet. By id: the ledger row says ``cancelled`` (a row that reached
    Twilio, or is being sent or settled right now, is reported and left alone: cancelling cannot recall a message).
    By campaign: every message of it still waiting in our queue (pacing, ``send_at``) is dropped when it comes up."""
    from . import ledger, pacing

    if args.campaign:
        if not outbound_campaign_ok(args.campaign):
            raise OpsError(f"not a campaign tag: {args.campaign!r} (1-64 of A-Z a-z 0-9 . _ : -)")
        pacing.cancel_campaign(args.campaign, by="ops")
        out.line(f"campaign {args.campaign}: cancelled; its messages not yet submitted to Twilio will not be")
        out.document({"campaign": args.campaign, "cancelled": True})
        return EXIT_OK
    ident = args.cancel_id
    if not ID_PATTERN.fullmatch(ident):
        raise OpsError(f"not a send id: {ident!r} (1-128 of A-Z a-z 0-9 . _ : -)")
    results = []
    for kind in ([args.kind] if args.kind else list(KINDS)):
        existing = ledger.insert_if_absent(kind, ident, status="cancelled", attempts=0,
                                           last_error="cancelled by an operator (ops sends cancel)")
        if existing is None:
            results.append({"kind": kind, "id": ident, "result": "cancelled (not seen yet: never sent)"})
        elif existing.status == "cancelled":
            results.append({"kind": kind, "id": ident, "result": "already cancelled"})
        elif existing.reached_twilio or existing.status in ("claimed", "unknown", "sent"):
            results.append({"kind": kind, "id": ident, "result": f"too late: {existing.status} "
                                                                 "(reached Twilio, or being sent right now)"})
        else:
            try:
                ledger.update(existing, status="cancelled", last_error="cancelled by an operator (ops sends cancel)")
                results.append({"kind": kind, "id": ident, "result": f"cancelled (was {existing.status})"})
            except ledger.LedgerConflictError:
                results.append({"kind": kind, "id": ident, "result": "changed while cancelling: run it again"})
    out.table(results, ["kind", "id", "result"])
    out.document(results)
    return EXIT_OK


def outbound_campaign_ok(tag: str) -> bool:
    from .outbound import CAMPAIGN_PATTERN

    return CAMPAIGN_PATTERN.fullmatch(tag) is not None


def _time_filter(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    statuses = [s.strip().lower() for s in args.status or [] if s.strip()]
    for status in statuses:
        if not _STATUS_WORD.fullmatch(status) or status not in KNOWN_STATUSES:
            raise OpsError(f"not a status: {status[:40]!r} (one of {', '.join(STATUS_MEANINGS)}, or Twilio's: "
                           f"{', '.join(s for s in KNOWN_STATUSES if s not in STATUS_MEANINGS)})")
    if statuses:
        parts = []
        for i, status in enumerate(statuses):
            params[f"s{i}"] = status
            parts.append(f"status eq @s{i}")
        clauses.append("( " + " or ".join(parts) + " )")  # the SDK substitutes @names between spaces
    if args.since:
        params["since"] = parse_when(args.since)
        clauses.append("updated_at ge @since")
    if args.until:
        params["until"] = parse_when(args.until)
        clauses.append("updated_at lt @until")
    return clauses, params


def query_table(table_name: str, query: str, parameters: dict[str, Any], out: Output,
                what: str) -> Iterator[Any]:
    """Every entity of ``table_name`` matching ``query`` (all partitions), with progress on stderr."""
    from . import storage

    client = storage.table(table_name)
    entities = (client.query_entities(query, parameters=parameters, results_per_page=1000) if query
                else client.list_entities(results_per_page=1000))
    for count, entity in enumerate(entities, 1):
        out.progress(what, count)
        yield entity


def sends_list(args: argparse.Namespace, out: Output) -> int:
    from . import ledger

    clauses, params = _time_filter(args)
    rows = []
    matched = 0
    for entity in query_table(ledger.TABLE, " and ".join(clauses), params, out, "ledger rows"):
        if not ledger.is_send_entity(entity):
            continue
        kind = _row_kind(entity)
        if args.kind and kind != args.kind:
            continue
        matched += 1
        rows.append(_send_view(kind, entity))
    rows.sort(key=lambda r: r["updated_at"] or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    shown = rows[:max(0, args.limit)]
    out.table(shown, ["kind", "id", "status", "attempts", "sid", "updated_at", "last_error"])
    out.line(f"{len(shown)} of {matched} send(s) shown (newest first)")
    out.document({"count": matched, "sends": shown})
    return EXIT_OK


# ---------------------------------------------------------------- poison


@dataclass
class DeadLetter:
    """One message of a poison queue as this tool holds it (hidden until released, replayed or deleted)."""

    queue: str                 # the poison queue it sits on
    message_id: str
    pop_receipt: str
    text: str
    document: dict[str, Any] | None
    inserted_on: datetime | None = None

    @property
    def error(self) -> dict[str, Any]:
        error = (self.document or {}).get("error")
        return error if isinstance(error, dict) else {}

    @property
    def code(self) -> str:
        return str(self.error.get("code") or ("unreadable" if self.document is None else "unknown"))

    @property
    def send_id(self) -> str:
        return str(self.error.get("id") or "")

    @property
    def kind(self) -> str:
        return str(self.error.get("kind") or "")

    def view(self) -> dict[str, Any]:
        from .redact import mask_numbers_in

        return {"queue": self.queue, "id": self.send_id, "kind": self.kind, "reason": self.code,
                "detail": mask_numbers_in(str(self.error.get("reason", ""))), "at": self.error.get("at", ""),
                "message_id": self.message_id}


def _json_object(content: Any) -> tuple[str, dict[str, Any] | None]:
    """A queue message's text, and the JSON object it holds (None when it holds none)."""
    text = content if isinstance(content, str) else str(content)
    try:
        document = json.loads(text)
    except ValueError:
        return text, None
    return text, document if isinstance(document, dict) else None


def poison_queues(kind: str | None) -> list[tuple[Kind, str, str]]:
    """(kind, queue, poison queue) for the queues the app reads (SMS_QUEUE / CALL_QUEUE settings)."""
    from .sender import poison_queue_name, queue_name_for

    return [(k, queue_name_for(k), poison_queue_name(queue_name_for(k))) for k in KINDS if not kind or k == kind]


def hold_dead_letters(poison_queue: str, out: Output) -> list[DeadLetter]:
    """Receive every message of ``poison_queue`` (hidden while held; :func:`release` shows them again)."""
    client = queue_client(poison_queue)
    held: list[DeadLetter] = []
    while True:
        batch = list(client.receive_messages(messages_per_page=32, max_messages=32,
                                             visibility_timeout=POISON_VISIBILITY_SECONDS))
        if not batch:
            return held
        for message in batch:
            text, document = _json_object(message.content)
            held.append(DeadLetter(poison_queue, message.id, message.pop_receipt, text, document,
                                   message.inserted_on))
            out.progress("dead letters", len(held))


def release(letters: Iterable[DeadLetter]) -> None:
    """Make held dead letters visible again at once (they stay in the poison queue)."""
    for letter in letters:
        queue_client(letter.queue).update_message(letter.message_id, letter.pop_receipt, visibility_timeout=0)


def delete(letter: DeadLetter) -> None:
    queue_client(letter.queue).delete_message(letter.message_id, letter.pop_receipt)


def _selected(letter: DeadLetter, args: argparse.Namespace) -> bool:
    if args.reason and letter.code not in args.reason:
        return False
    return not args.ids or letter.send_id in args.ids


def _hold_selected(args: argparse.Namespace, out: Output) -> tuple[list[tuple[Kind, str, DeadLetter]],
                                                                    list[DeadLetter]]:
    """(selected (kind, queue, letter), the rest). The rest must be released by the caller."""
    chosen: list[tuple[Kind, str, DeadLetter]] = []
    others: list[DeadLetter] = []
    for kind, queue, poison_queue in poison_queues(args.kind):
        for letter in hold_dead_letters(poison_queue, out):
            (chosen.append((kind, queue, letter)) if _selected(letter, args) else others.append(letter))
    return chosen, others


def poison_list(args: argparse.Namespace, out: Output) -> int:
    chosen, others = _hold_selected(args, out)
    try:
        counts: dict[tuple[str, str], int] = {}
        for _, _, letter in chosen:
            key = (letter.queue, letter.code)
            counts[key] = counts.get(key, 0) + 1
        summary = [{"queue": q, "reason": r, "count": n} for (q, r), n in sorted(counts.items(),
                                                                              key=lambda i: (-i[1], i[0]))]
        entries = [letter.view() for _, _, letter in chosen][:max(0, args.limit)]
        out.table(summary, ["queue", "reason", "count"])
        out.line()
        out.table(entries, ["queue", "id", "reason", "at", "detail"])
        out.line(f"{len(entries)} of {len(chosen)} dead letter(s) shown")
        out.document({"count": len(chosen), "by_reason": summary, "entries": entries})
    finally:
        release([letter for _, _, letter in chosen] + others)
    return EXIT_OK


def poison_show(args: argparse.Namespace, out: Output) -> int:
    """Every dead letter of one send id, whole: the reason, what ``poison replay`` would do, the original message."""
    if not ID_PATTERN.fullmatch(args.id):
        raise OpsError(f"not a send id: {args.id!r} (1-128 of A-Z a-z 0-9 . _ : -)")
    args.reason, args.ids = None, [args.id]
    chosen, others = _hold_selected(args, out)
    release(others)
    documents = []
    try:
        for kind, _queue, letter in chosen:
            plan = plan_replay(kind, letter)
            advice = {"replay": f"`poison replay --id {letter.send_id}` puts it back on its queue ({plan.why})",
                      "needs_force": f"{plan.why}: `poison replay --id {letter.send_id}` shows what Twilio has, "
                                     "and sends it again only with --force",
                      "skip": plan.why}[plan.action]
            message, shown = _original_message(letter)
            documents.append({"queue": letter.queue, "id": letter.send_id, "kind": letter.kind or kind,
                              "reason": letter.code, "error": letter.error, "advice": advice, "message": message})
            out.line(f"{letter.queue} {letter.send_id}: {letter.code}")
            for name in sorted(letter.error):
                if name not in ("code", "id"):
                    out.line(f"  {name:<18} {_cell(letter.error[name], whole=True)}")
            out.line(f"  {'what to do':<18} {advice}")
            out.line("  original message:")
            for text in shown.splitlines() or [""]:
                out.line(f"    {text}")
    finally:
        release([letter for _, _, letter in chosen])
    if not documents:
        if out.as_json:
            out.document({"id": args.id, "found": False})
        print(f"no dead letter for id {args.id!r} in {', '.join(q for _, _, q in poison_queues(args.kind))}",
              file=out.err)
        return EXIT_NOT_FOUND
    out.document(documents[0] if len(documents) == 1 else documents)
    return EXIT_OK


def _original_message(letter: DeadLetter) -> tuple[str, str]:
    """(the message as it was queued, the same for a terminal: indented JSON when it is JSON, else as stored)."""
    from . import outbound

    document = letter.document or {}
    text = str(document.get("message", letter.text if letter.document is None else ""))
    if document.get("message_base64"):
        return text, f"(not UTF-8 text: base64 of the {len(text) * 3 // 4} bytes received)\n{text}"
    note = " (cut: the original was too large to keep whole)" if document.get("message_truncated") else ""
    try:
        parsed = outbound.decode(text).document
        return text, json.dumps(parsed, indent=2, ensure_ascii=False) + note
    except (outbound.InvalidMessageError, UnicodeError):
        return text, text + note


@dataclass
class ReplayPlan:
    """What ``poison replay`` will do with one dead letter, and why."""

    action: str                # replay | needs_force | skip
    why: str
    text: str = ""             # the queue message to put back
    to: str = ""
    twilio: list[dict[str, Any]] = field(default_factory=list)
    row: Any = None


def plan_replay(kind: Kind, letter: DeadLetter) -> ReplayPlan:
    """Decide whether a dead letter may be sent again (the same rules the sender applies to a ledger row)."""
    from . import ledger, optouts, outbound

    if letter.document is None or "message" not in letter.document:
        return ReplayPlan("skip", "not a dead letter this app wrote (no error/message)")
    if letter.document.get("message_truncated") or letter.document.get("message_base64"):
        return ReplayPlan("skip", "the original message was not stored whole; enqueue it again yourself")
    if letter.code == "invalid_message":
        from .redact import mask_numbers_in

        reason = mask_numbers_in(str(letter.error.get("reason") or ""))
        return ReplayPlan("skip", INVALID_ADVICE.format(id=letter.send_id or "ID").replace(
            "invalid message:", f"invalid message ({reason}):" if reason else "invalid message:", 1))
    try:
        decoded = outbound.decode(str(letter.document["message"]))
        message = outbound.validate(kind, decoded.document, letter.send_id or None)
    except outbound.InvalidMessageError as exc:
        return ReplayPlan("skip", f"invalid message ({exc.reason})")
    except UnicodeError:  # a hand-written entry: JSON's "\ud800" makes a lone surrogate, which no queue can carry
        return ReplayPlan("skip", "the stored message holds a lone surrogate (not valid Unicode): fix it and enqueue "
                                  "it again")
    document = dict(decoded.document)
    if document.get("id") is None:  # absent or null: the id the ledger knows is the one the sender defaulted to
        document["id"] = message.id
    text = outbound.encode(document, as_base64=decoded.was_base64)
    if optouts.is_opted_out(message.to):
        return ReplayPlan("skip", "recipient is still opted out (python -m shared.ops optouts remove)", to=message.to)
    row = ledger.get(kind, message.id)
    plan = ReplayPlan("replay", "never reached Twilio", text=text, to=message.to, row=row)
    if row is None:
        plan.why = "no ledger row: never claimed"
    elif letter.code == "ambiguous" or row.status in ("unknown", "claimed"):
        plan.action, plan.why = "needs_force", f"ambiguous: may have reached Twilio (ledger: {row.status})"
    elif row.reached_twilio or row.status == "sent":
        plan.action, plan.why = "needs_force", f"reached Twilio ({row.sid or row.twilio_status})"
    elif row.status in ("failed", "rejected") and not row.fields.get("resendable"):
        plan.action, plan.why = "needs_force", f"Twilio refused it: {row.last_error or row.status}"
    return plan


def twilio_view(kind: Kind, plan: ReplayPlan, letter: DeadLetter) -> list[dict[str, Any]]:
    """What Twilio has for this send: by SID when the ledger has one, else recent messages/calls to the recipient;
    each with the id the SID index holds it for (``owner``: "" when no id holds it)."""
    from . import ledger, twilio_api
    from .redact import mask_number

    row = plan.row
    sid = getattr(row, "sid", "") if row is not None else ""
    if sid:
        client = twilio_api.get_client()
        fetched = client.messages(sid).fetch() if kind == "sms" else client.calls(sid).fetch()
        found = [twilio_api.recorded(kind, fetched)]
    else:
        since = datetime.now(timezone.utc) - TWILIO_LOOKBACK
        found = list(twilio_api.list_recent(kind, to=plan.to, from_=None, created_after=since,
                                            page_size=TWILIO_LIST_LIMIT, max_pages=1).items)
    body = (letter.document or {}).get("message", "")
    try:
        wanted = json.loads(body).get("body") if kind == "sms" else None
    except (ValueError, AttributeError):
        wanted = None
    views = []
    for item in found:
        when = item.created
        view = {"sid": item.sid, "status": item.status, "to": mask_number(item.to),
                "created": when.isoformat() if isinstance(when, datetime) else str(when or ""),
                "owner": ledger.id_for_sid(kind, item.sid) or ""}
        if kind == "sms" and wanted is not None:
            view["same_body"] = item.body == wanted
        views.append(view)
    return views


def poison_replay(args: argparse.Namespace, out: Output) -> int:
    from . import ledger, storage

    chosen, others = _hold_selected(args, out)
    release(others)
    results: list[dict[str, Any]] = []
    handled: set[int] = set()
    try:
        for index, (kind, queue, letter) in enumerate(chosen):
            entry: dict[str, Any] = {**letter.view(), "queue": queue, "action": "skip", "why": ""}
            try:
                if _replay_one(kind, queue, letter, entry, args, out):
                    handled.add(index)
            except ledger.LedgerConflictError:
                # A status callback or a worker changed the row after it was read: what was decided may be stale.
                entry["result"] = ("kept: its ledger row changed while replaying (a status callback?); "
                                   "run replay again to decide on what it says now")
            except Exception as exc:  # noqa: BLE001 - one bad entry is reported; the batch goes on
                if storage.is_storage_error(exc) or isinstance(exc, BrokenPipeError):
                    raise  # storage failing, or nobody reading: the whole run ends (held entries are released)
                entry["result"] = f"kept: could not replay it ({_twilio_error(exc)})"
            results.append(entry)
    finally:
        release([letter for i, (_, _, letter) in enumerate(chosen) if i not in handled])
    out.table(results, ["queue", "id", "reason", "result"])
    done = sum(1 for r in results if r["result"] in ("replayed", "forced"))
    out.line(f"{done} of {len(results)} dead letter(s) put back on their queue" +
             (" (dry run: nothing changed)" if args.dry_run else ""))
    out.document({"dry_run": args.dry_run, "replayed": done, "entries": results})
    return EXIT_OK


def _replay_one(kind: Kind, queue: str, letter: DeadLetter, entry: dict[str, Any], args: argparse.Namespace,
                out: Output) -> bool:
    """Decide on one dead letter, fill in ``entry``, and (unless a dry run) put it back; True when put back."""
    from . import ledger

    plan = plan_replay(kind, letter)
    entry.update(action=plan.action, why=plan.why)
    if plan.action == "needs_force":
        try:
            plan.twilio = twilio_view(kind, plan, letter)
            entry["twilio"] = plan.twilio
        except Exception as exc:  # noqa: BLE001 - shown, and then nothing is forced blind
            entry["twilio_error"] = _twilio_error(exc)
        _print_twilio(out, letter, entry)
        if "twilio_error" in entry:
            entry["result"] = "kept: Twilio could not be read, so it is not forced"
        elif not getattr(plan.row, "sid", "") and probably_this_send(letter.send_id, entry):
            # In doubt, and Twilio holds a match nobody else owns: a forced replay would likely double it.
            sid = probably_this_send(letter.send_id, entry)
            entry["result"] = (f"kept: Twilio's {sid} matches this send and belongs to no other id, so it "
                               "was probably sent; not forced")
        elif not args.force:
            entry["result"] = "kept: re-run with --force to send it again"
        else:
            entry["result"] = "would force" if args.dry_run else "forced"
    elif plan.action == "skip":
        entry["result"] = f"kept: {plan.why}"
    else:
        entry["result"] = "would replay" if args.dry_run else "replayed"
    if entry["result"] not in ("replayed", "forced"):
        return False
    if plan.action == "needs_force" and plan.row is not None:
        ledger.update(plan.row, status="failed", resendable=True, sid="", twilio_status="",
                      previous_sid=plan.row.sid or plan.row.fields.get("previous_sid", ""),
                      last_error=f"operator forced a replay (was {plan.row.status}: {plan.why})"[:1000])
    queue_client(queue).send_message(plan.text, time_to_live=-1)
    delete(letter)
    return True


def _twilio_error(exc: BaseException) -> str:
    from .redact import mask_numbers_in

    return mask_numbers_in(f"{type(exc).__name__}: {exc}")[:300]


def _print_twilio(out: Output, letter: DeadLetter, entry: dict[str, Any]) -> None:
    out.line(f"{letter.send_id} ({letter.code}): {entry['why']}")
    if "twilio_error" in entry:
        out.line(f"  Twilio: cannot read ({entry['twilio_error']})")
        return
    if not entry.get("twilio"):
        out.line("  Twilio: nothing found for this send (by SID, or to this recipient in the last 2 days)")
    for item in entry.get("twilio", []):
        same = {True: "  same body", False: "  other body"}.get(item.get("same_body"), "")
        owner = f"  belongs to id {item['owner']}" if item.get("owner") else "  belongs to no id"
        out.line(f"  Twilio: {item['sid']} {item['status']} to {item['to']} created {item['created']}{same}{owner}")


def probably_this_send(letter_id: str, entry: dict[str, Any]) -> str:
    """The SID in Twilio's view that no other id holds and that has this send's body (or is this id's): forcing a
    replay then would most likely send it a second time. "" when there is none."""
    for item in entry.get("twilio", []):
        if item.get("owner") == letter_id:
            return item["sid"]
        if not item.get("owner") and item.get("same_body") is not False:
            return item["sid"]
    return ""


def poison_purge(args: argparse.Namespace, out: Output, ask: Callable[[str], str]) -> int:
    chosen, others = _hold_selected(args, out)
    release(others)
    deleted = 0
    try:
        queues = sorted({letter.queue for _, _, letter in chosen})
        if not chosen:
            out.line("no dead letters match")
        elif args.dry_run:
            out.line(f"would delete {len(chosen)} dead letter(s) from {', '.join(queues)} (dry run)")
        else:
            answer = "yes" if args.yes else ask(
                f"Delete {len(chosen)} dead letter(s) from {', '.join(queues)} for good? Type 'yes': ")
            if answer.strip().lower() != "yes":
                print("not confirmed: nothing deleted", file=out.err)
            else:
                for _, _, letter in chosen:
                    delete(letter)
                    deleted += 1
                out.line(f"deleted {deleted} dead letter(s)")
    finally:
        if deleted < len(chosen):
            release([letter for _, _, letter in chosen[deleted:]])
    out.document({"dry_run": args.dry_run, "matched": len(chosen), "deleted": deleted})
    return EXIT_OK


# ---------------------------------------------------------------- opt-outs


def _address(number: str) -> str:
    prefix = "whatsapp:"
    if number[:len(prefix)].lower() == prefix:  # WhatsApp:+1… is the same address as whatsapp:+1…
        plain, address = number[len(prefix):], prefix + number[len(prefix):]
    else:
        plain = address = number
    if not E164.fullmatch(plain):
        raise OpsError(f"not an E.164 number: {number!r} (like +14155550100, or whatsapp:+14155550100)")
    return address


def optouts_list(args: argparse.Namespace, out: Output) -> int:
    from . import optouts

    rows = [{"number": e.get("RowKey", ""), "keyword": e.get("Keyword", ""),
             "opted_out_at": e.get("OptedOutAt", "")} for e in query_table(optouts.TABLE, "", {}, out, "opt-outs")]
    rows.sort(key=lambda r: str(r["opted_out_at"]), reverse=True)
    out.table(rows, ["number", "keyword", "opted_out_at"])
    out.line(f"{len(rows)} opted-out address(es)")
    out.document({"count": len(rows), "optouts": rows})
    return EXIT_OK


def optouts_add(args: argparse.Namespace, out: Output) -> int:
    from . import optouts

    number = _address(args.number)
    keyword = args.keyword.strip().upper() or "OPS"
    if len(keyword) > MAX_KEYWORD_CHARS:
        raise OpsError(f"--keyword of {len(keyword)} characters is over {MAX_KEYWORD_CHARS}")
    already = optouts.is_opted_out(number)
    optouts.record_optout(number, keyword)
    out.line(f"{number} {'was already' if already else 'is now'} opted out")
    out.document({"number": number, "opted_out": True, "changed": not already})
    return EXIT_OK


def optouts_remove(args: argparse.Namespace, out: Output) -> int:
    from . import optouts

    number = _address(args.number)
    was = optouts.is_opted_out(number)
    if was:
        optouts.clear_optout(number)
    out.line(f"{number} {'is opted in again' if was else 'was not opted out'}")
    out.document({"number": number, "opted_out": False, "changed": was})
    return EXIT_OK


# ---------------------------------------------------------------- inbound


def inbound_list(args: argparse.Namespace, out: Output) -> int:
    """The events on ``INBOUND_QUEUE``, oldest first: only looked at (peeked), or taken off with ``--take``."""
    from . import config
    from .redact import mask_number

    def row(event: dict[str, Any]) -> dict[str, Any]:
        summary = event.get("body") if event.get("type") == "sms" else (
            event.get("recording_url") or event.get("text") or "")
        if event.get("type") == "recording_status":
            summary = f"{event.get('recording_status', '')} {event.get('recording_url') or ''}".strip()
        return {"received_at": event.get("received_at", ""), "type": event.get("type", ""),
                "channel": event.get("channel", ""), "from": mask_number(event["from"]) if event.get("from") else "",
                "keyword": event.get("keyword") or "", "what": summary}

    return _queue_events(args, out, config.get_settings().inbound_queue, row,
                         ["received_at", "type", "channel", "from", "keyword", "what"])


def outcomes_list(args: argparse.Namespace, out: Output) -> int:
    """The events on ``OUTCOMES_QUEUE`` (shared/outcomes.py), oldest first, as :func:`inbound_list` shows its own."""
    from . import outcomes

    name = outcomes.queue_name()
    if not name:
        print("ops: OUTCOMES_QUEUE is off: no outcome events are written", file=out.err)
        return EXIT_NOT_FOUND

    def row(event: dict[str, Any]) -> dict[str, Any]:
        reason = event.get("reason") or {}
        error = event.get("error") or {}
        what = event.get("status") or event.get("sid") or ""
        if isinstance(reason, dict) and reason:
            what = f"{reason.get('code', '')}: {reason.get('text', '')}"
        if isinstance(error, dict) and error:
            what = f"{what} {error.get('code', '')} {error.get('meaning', '')}"
        return {"at": event.get("at", ""), "id": event.get("id", ""), "type": event.get("type", ""),
                "channel": event.get("channel", ""), "to": event.get("to", ""), "what": what}

    return _queue_events(args, out, name, row, ["at", "id", "type", "channel", "to", "what"])


def _queue_events(args: argparse.Namespace, out: Output, name: str, row: Callable[[dict[str, Any]], dict[str, Any]],
                  columns: list[str]) -> int:
    """Show the JSON events of queue ``name`` oldest first: peeked, or with ``--take`` received and deleted once
    shown (a reader that went away, ``| head``, leaves them on the queue)."""
    client = queue_client(name)
    limit = max(0, args.limit)
    messages: list[Any] = []
    if args.take:
        while len(messages) < limit:
            batch = list(client.receive_messages(messages_per_page=min(32, limit - len(messages)),
                                                 max_messages=min(32, limit - len(messages)),
                                                 visibility_timeout=POISON_VISIBILITY_SECONDS))
            if not batch:
                break
            messages += batch
    elif limit:
        messages = list(client.peek_messages(max_messages=min(32, limit)))
    events, rows = [], []
    for message in messages:
        text, parsed = _json_object(message.content)
        event = parsed if parsed is not None else {"type": "unreadable", "text": text}
        events.append(event)
        rows.append(row(event))
    waiting = max(0, (client.get_queue_properties().approximate_message_count or 0) - (len(messages) if args.take
                                                                                        else 0))
    out.table(rows, columns)
    verb = "taken off" if args.take else "shown (left on the queue; --take removes them)"
    out.line(f"{len(rows)} event(s) of {name} {verb}; about {waiting} more waiting" if args.take else
             f"{len(rows)} event(s) of {name} {verb}; about {waiting} waiting")
    out.document({"queue": name, "taken": bool(args.take), "count": len(events), "waiting": waiting,
                  "events": events})
    out.out.flush()
    if args.take:
        for message in messages:
            client.delete_message(message.id, message.pop_receipt)
    return EXIT_OK


# ---------------------------------------------------------------- layout


def pacing_prune(args: argparse.Namespace, out: Output) -> int:
    """Delete pacing rows of turns long past (``shared.pacing.prune``): nothing reads them once their message went."""
    from . import pacing

    before = parse_when(args.older_than)
    if before > datetime.now(timezone.utc):
        raise OpsError(f"--older-than {args.older_than!r} is in the future: that would drop the turns of "
                       "messages still waiting")
    pruned = pacing.prune(before.timestamp(), dry_run=args.dry_run,
                          progress=lambda seen: out.progress("pacing rows", seen))
    verb = "would delete" if args.dry_run else "deleted"
    out.line(f"pacing: {verb} {pruned.tickets} ticket(s) and {pruned.places} line place(s) older than "
             f"{before.isoformat(timespec='seconds')}")
    out.document({"dry_run": args.dry_run, "before": before, "tickets": pruned.tickets, "places": pruned.places})
    return EXIT_OK


def migrate_layout(args: argparse.Namespace, out: Output) -> int:
    """Move legacy-layout rows (PartitionKey ``sms`` / ``call`` / ``optout``) to their spread partitions."""
    from . import ledger, optouts

    sends = ledger.migrate_legacy_layout(dry_run=args.dry_run)
    opted = optouts.migrate_legacy_layout(dry_run=args.dry_run)
    verb = "would move" if args.dry_run else "moved"
    out.line(f"sends: {verb} {sends.moved} row(s) to spread partitions; {len(sends.conflicts)} conflict(s)")
    for conflict in sends.conflicts:
        out.line(f"  conflict: {conflict} has a row in both layouts (see `sends show`; delete the stale one)")
    out.line(f"optouts: {verb} {opted.moved} row(s) to spread partitions")
    out.document({"dry_run": args.dry_run, "sends_moved": sends.moved, "sends_conflicts": sends.conflicts,
                  "optouts_moved": opted.moved})
    return EXIT_USAGE if sends.conflicts else EXIT_OK


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         ask: Callable[[str], str] | None = None) -> int:
    try:
        return _main(argv, stdout or sys.stdout, stderr or sys.stderr, ask)
    except BrokenPipeError:
        # The reader went away (``ops … | head``): stop quietly, as a tool killed by SIGPIPE does; held dead
        # letters were released on the way out. Point stdout at /dev/null so the exit-time flush cannot fail again.
        if (stdout or sys.stdout) is sys.stdout:
            _detach_stdout()
        return EXIT_BROKEN_PIPE


_NULL_HANDLER = logging.NullHandler()
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _undecodable_argument(args: argparse.Namespace) -> str | None:
    """The first argument holding bytes that are not UTF-8 (``$'\\xff'``: Python keeps them as lone surrogates, which
    no request can carry), named; None when every argument is text."""
    for name, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            bad = _LONE_SURROGATE.search(item) if isinstance(item, str) else None
            if bad:
                code = ord(bad.group())
                shown = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
                label = {"id": "id", "number": "number", "ids": "--id"}.get(name, "--" + name.replace("_", "-"))
                return f"{label} is not valid UTF-8 text ({shown})"
    return None


def _detach_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (stdout replaced): nothing to flush later anyway
        pass


def _main(argv: Sequence[str] | None, stdout: TextIO, stderr: TextIO, ask: Callable[[str], str] | None) -> int:
    args = _parser().parse_args(argv)
    out = Output(args.json, stdout, stderr)
    undecodable = _undecodable_argument(args)
    if undecodable:
        print(f"ops: {undecodable}", file=out.err)
        return EXIT_USAGE
    # Without logging configured, Python prints library warnings on stderr (azure-core's "Unable to stream
    # download." per retry); the CLI's answer is its own one line. Handlers configured by a caller still get them.
    logging.getLogger("azure").addHandler(_NULL_HANDLER)
    handlers: dict[tuple[str, str], Callable[[argparse.Namespace, Output], int]] = {
        ("sends", "show"): sends_show, ("sends", "list"): sends_list, ("sends", "cancel"): sends_cancel,
        ("poison", "list"): poison_list, ("poison", "show"): poison_show, ("poison", "replay"): poison_replay,
        ("inbound", "list"): inbound_list, ("outcomes", "list"): outcomes_list,
        ("poison", "purge"): lambda a, o: poison_purge(a, o, ask or _ask_tty(o)),
        ("optouts", "list"): optouts_list, ("optouts", "add"): optouts_add, ("optouts", "remove"): optouts_remove,
        ("pacing", "prune"): pacing_prune, ("migrate-layout", "run"): migrate_layout,
    }
    from azure.core.exceptions import AzureError

    try:
        connect(args)
        code = handlers[(args.verb, args.action)](args, out)
        out.out.flush()  # a reader that went away (| head) is found here, inside the try, not at exit
        return code
    except OpsError as exc:
        print(f"ops: {inert(str(exc))}", file=out.err)
    except AzureError as exc:
        print(f"ops: {describe_storage_error(exc)}", file=out.err)
    except KeyboardInterrupt:
        print("ops: interrupted", file=out.err)
    return EXIT_USAGE


def _ask_tty(out: Output) -> Callable[[str], str]:
    def ask(prompt: str) -> str:
        print(prompt, end="", file=out.err, flush=True)
        line = sys.stdin.readline()
        return line if line else ""

    return ask


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
