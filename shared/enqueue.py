"""``python -m shared.enqueue``: put an SMS or a call on its queue, validated by the same schema the function uses.

Why a CLI: it is the quickest way to try the app (``make run`` + one command) and the reference producer for
other systems. A bad message is refused here (exit 2, the reason on stderr) instead of in the poison queue.

    python -m shared.enqueue sms --to +14155550100 --body "hello" [--from +1…] [--media-url URL …] [--at ISO] [--id ID]
                                 [--priority high|normal] [--campaign TAG]
    python -m shared.enqueue sms --to whatsapp:+14155550100 --content-sid HX… --content-variables '{"1": "Ann"}'
    python -m shared.enqueue call --to +14155550100 (--say TEXT | --twiml XML | --url URL) [--voice V] [--language L]
                                  [--timeout S] [--machine-detection [--voicemail TEXT]]

Settings (``AzureWebJobsStorage``, ``SMS_QUEUE``, ``CALL_QUEUE``) come from the environment, else from
``local.settings.json`` ("Values") in the current directory or the app's root. ``UseDevelopmentStorage=true`` is
the local stack: the Azurite of the ``make run`` running in this folder (or ``AZURITE_QUEUE_PORT``), named in one
line on stderr. Prints the message id (the ledger key). ``--at`` makes the message invisible until then (at most
7 days a hop; the function requeues the rest). ``--base64`` encodes the message for producers that insist on it;
the function accepts both.

A recipient outside ``ALLOWED_DESTINATIONS`` (README, Guardrails) is refused here too, naming its region.

Exit codes: 0 enqueued; 2 the message or a setting is invalid, or the destination is not allowed (stderr names the
rule; nothing enqueued); 3 storage could not be reached (one line on stderr within seconds; try again).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from .outbound import InvalidMessageError, Kind, encode, validate

ROOT = Path(__file__).resolve().parents[1]
MAX_HOP_SECONDS = 7 * 24 * 3600 - 60
EXIT_INVALID = 2
EXIT_STORAGE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.enqueue", description=_plain(__doc__.split("\n\n")[0]),
                                     epilog=_plain("\n\n".join(__doc__.split("\n\n")[1:])),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--to", required=True,
                        help="recipient, E.164 (+14155550100); for sms also whatsapp:+14155550100")
    common.add_argument("--from", dest="from_", help="sender, E.164 or whatsapp:+E.164 (default: TWILIO_FROM_NUMBER)")
    common.add_argument("--at", dest="send_at", help="send at this ISO-8601 UTC time (2030-01-01T09:00:00Z)")
    common.add_argument("--id", help="message id (default: a new UUID); the ledger key, so duplicates are sent once")
    common.add_argument("--priority", help="high (one-time codes, alerts: ahead of a waiting campaign) or normal")
    common.add_argument("--campaign", help="a tag (1-64 of A-Z a-z 0-9 . _ : -): ops sends cancel --campaign TAG")
    common.add_argument("--base64", action="store_true", help="base64-encode the queue message")
    sms = kinds.add_parser("sms", parents=[common], help="send an SMS/MMS")
    sms.add_argument("--body", help="text, up to 1600 chars")
    sms.add_argument("--media-url", dest="media_urls", action="append", help="https URL of media (repeatable)")
    sms.add_argument("--messaging-service-sid", help="MG… service to send from instead of a number")
    sms.add_argument("--content-sid", help="HX… Content template to send instead of --body/--media-url")
    sms.add_argument("--content-variables", help='template variables as a JSON object of strings: {"1": "Ann"}')
    call = kinds.add_parser("call", parents=[common], help="place a call")
    content = call.add_mutually_exclusive_group(required=True)
    content.add_argument("--say", help="text to say (built into <Say>)")
    content.add_argument("--twiml", help="TwiML document, up to 4000 chars")
    content.add_argument("--url", help="https URL returning TwiML")
    call.add_argument("--voice", help="voice for --say (e.g. alice, Polly.Joanna)")
    call.add_argument("--language", help="language for --say (e.g. en-US)")
    call.add_argument("--timeout", type=int, help="seconds to let it ring (5-600)")
    call.add_argument("--machine-detection", action="store_true",
                      help="detect answering machines (asynchronous AMD; AnsweredBy goes on the ledger row)")
    call.add_argument("--voicemail", help="with --machine-detection: text said after the beep when a machine answers")
    return parser


def _plain(text: str) -> str:
    """Docstring text for --help: without reStructuredText's double backticks."""
    return text.replace("``", "")


def build_message(args: argparse.Namespace) -> dict[str, Any]:
    """The queue message document for parsed CLI arguments (only the fields given)."""
    # Only an absent --id gets a new one: --id "" is refused by the schema, not silently replaced.
    fields: dict[str, Any] = {"id": uuid.uuid4().hex if args.id is None else args.id, "to": args.to, "from": args.from_,
                              "send_at": args.send_at, "priority": args.priority, "campaign": args.campaign}
    if args.kind == "sms":
        fields.update(body=args.body, media_urls=args.media_urls, messaging_service_sid=args.messaging_service_sid,
                      content_sid=args.content_sid, content_variables=_json_object(args.content_variables))
    else:
        fields.update(say=args.say, twiml=args.twiml, url=args.url, voice=args.voice, language=args.language,
                      timeout=args.timeout, machine_detection=args.machine_detection or None,
                      voicemail=args.voicemail)
    return {k: v for k, v in fields.items() if v is not None}


def _json_object(text: str | None) -> Any:
    """``--content-variables``: the JSON as given (the schema then says whether it is an object of strings)."""
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise InvalidMessageError("content_variables", f"not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidMessageError("content_variables", "JSON nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class LocalSettingsError(ValueError):
    """local.settings.json exists but cannot be used; the message is one line naming the file and what is wrong."""


def load_local_settings(environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Fill settings missing from the environment from local.settings.json ("Values"), as ``func start`` does.
    Raises :class:`LocalSettingsError` for a file that is unreadable, not JSON, or not shaped as func expects."""
    for folder in (Path.cwd(), ROOT):
        path = folder / "local.settings.json"
        if path.is_file():
            try:
                document = json.loads(path.read_text(encoding="utf-8-sig"))
            except ValueError as exc:  # UnicodeDecodeError included
                raise LocalSettingsError(f"{path}: not valid JSON ({exc})") from None
            except OSError as exc:
                raise LocalSettingsError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
            if not isinstance(document, dict):
                raise LocalSettingsError(f"{path}: must be a JSON object with \"Values\", not {_json_kind(document)}")
            values = document.get("Values", {})
            if not isinstance(values, dict):
                raise LocalSettingsError(f"{path}: \"Values\" must be an object of settings, not {_json_kind(values)}")
            for name, value in values.items():
                if isinstance(value, str) and not environ.get(name):
                    environ[name] = value
            return


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def visibility_delay(send_at: datetime | None, now: datetime | None = None) -> int:
    """Seconds to keep the message invisible: until ``send_at``, capped at Storage's 7-day maximum."""
    if send_at is None:
        return 0
    now = now or datetime.now(timezone.utc)
    return max(0, min(MAX_HOP_SECONDS, math.ceil((send_at - now).total_seconds())))


def main(argv: Sequence[str] | None = None) -> int:
    # The app's log lines are for a host's log; this CLI says what went wrong in its own one line.
    logging.getLogger("switchboard").addHandler(logging.NullHandler())
    args = _parser().parse_args(argv)
    kind: Kind = args.kind
    try:
        document = build_message(args)
        message = validate(kind, document)
    except InvalidMessageError as exc:
        print(f"invalid {kind} message: {exc.reason}", file=sys.stderr)
        return EXIT_INVALID
    try:
        load_local_settings()
    except LocalSettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    from . import config, destinations, localstack, storage
    from .sender import queue_name_for

    try:  # UseDevelopmentStorage=true means the running make run's Azurite, on whatever port it is
        localstack.use_local_stack(os.environ, prog="", services=["queue"])
    except localstack.PortSettingError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    config.reset_settings()
    try:  # the function would dead-letter it as destination_not_allowed: refuse it here instead
        destinations.check_allowed(message.to, config.get_settings().allowed_destinations)
    except destinations.DestinationNotAllowedError as exc:
        print(f"refused {kind} message: {exc.reason}", file=sys.stderr)
        return EXIT_INVALID
    if not config.get_settings().storage_connection:
        print("AzureWebJobsStorage is not set (environment or local.settings.json)", file=sys.stderr)
        return EXIT_INVALID
    queue = queue_name_for(kind)
    delay = visibility_delay(message.send_at)
    text = encode(document, as_base64=args.base64)
    try:
        client = storage.short_lived_queue(queue)
    except storage.StorageSettingError as exc:  # says what is wrong, never a value from the setting
        print(f"AzureWebJobsStorage is malformed: {exc.problem}", file=sys.stderr)
        return EXIT_INVALID
    except (ValueError, config.MissingSettingError) as exc:
        # Never echo the setting: it may hold an account key.
        print("AzureWebJobsStorage is malformed: expected a storage connection string (e.g. UseDevelopmentStorage=true)"
              f" or AzureWebJobsStorage__* identity settings ({type(exc).__name__})", file=sys.stderr)
        return EXIT_INVALID
    from azure.core.exceptions import ClientAuthenticationError

    try:
        _ensure_queue(client)
        client.send_message(text, visibility_timeout=delay or None, time_to_live=-1)
    except ClientAuthenticationError as exc:  # a key that cannot sign, or one the service refuses
        print(f"AzureWebJobsStorage is malformed or refused: {_first_line(exc)}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as exc:  # noqa: BLE001 - any storage failure is one line for the user, not a traceback
        print(f"storage unreachable at {_endpoint(client)}: {_first_line(exc)}", file=sys.stderr)
        return EXIT_STORAGE
    print(message.id)
    return 0


def _ensure_queue(client: Any) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        client.create_queue()
    except ResourceExistsError:
        pass


def _endpoint(client: Any) -> str:
    """scheme://host[:port] of the queue service only (a URL's query may hold a SAS token)."""
    parts = urlsplit(str(getattr(client, "primary_endpoint", "") or getattr(client, "url", "")))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.netloc else "(unknown endpoint)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0] if text else ""
    if "Connection refused" in str(exc):
        reason = "connection refused"
    elif "timed out" in str(exc).lower():
        reason = "timed out"
    return f"{type(exc).__name__}: {reason[:200]}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
