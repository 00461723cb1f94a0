"""The HTTP routes' behaviour, one function per route, free of ``azure.functions`` types.

Each takes a :class:`WebhookRequest` and returns a :class:`Reply`; ``function_app.py`` only converts types.
Errors a caller can cause become 4xx here; a dependency that is down becomes 503 (Twilio retries or falls back
to the number's fallback URL), never a stack trace in the response.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from . import __version__, outcomes, secrets, storage, telemetry
from .config import MissingSettingError, get_settings
from .throttled_log import log_throttled
from .webhooks import MalformedRequestError, Params, WebhookRejected, WebhookRequest, verify

if TYPE_CHECKING:
    from .outbound import Kind

# inbound, twiml and status_callbacks (with the outbound schema and the ledger) are imported by the handlers
# that use them: every cold start imports this module, and each route needs only some of them.

log = logging.getLogger("switchboard.routes")

XML = "text/xml; charset=utf-8"
MAX_SAY_MESSAGES = 50
_MESSAGE_INDEX = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, plus optional events for the inbound queue and the outcomes queue (output bindings)."""

    status: int = 200
    body: str = ""
    content_type: str = XML
    event: str | None = None
    outcome: str | None = None


def _text(status: int, message: str) -> Reply:
    return Reply(status=status, body=message + "\n", content_type="text/plain; charset=utf-8")


def answer_webhook(req: WebhookRequest, handler: Callable[[Params], Reply]) -> Reply:
    """Verify the request's signature, run ``handler`` on its parameters, and map failures to status codes."""
    try:
        return handler(verify(req))
    except WebhookRejected as exc:
        # A forged request gets no TwiML, only the status and a reason.
        telemetry.count_webhook_rejection(exc.code, req.path.removeprefix("/api/"))
        return _text(exc.status, exc.reason)
    except (MissingSettingError, secrets.SecretUnavailableError) as exc:
        log_throttled(log, logging.ERROR, f"unavailable {req.path} {exc}", "%s %s unavailable: %s",
                      req.method, req.path, exc)
        return _text(503, "service not configured")
    except Exception as exc:  # noqa: BLE001
        if storage.is_storage_error(exc):
            log_throttled(log, logging.ERROR, f"storage {req.path} {type(exc).__name__}",
                          "%s %s: storage unavailable: %s", req.method, req.path, type(exc).__name__)
            return _text(503, "storage unavailable")
        raise


def twilio_webhook(handler: Callable[[Params], Reply]) -> Callable[[WebhookRequest], Reply]:
    """Decorator form of :func:`answer_webhook` for handlers that need only the parameters."""

    @functools.wraps(handler)
    def route(req: WebhookRequest) -> Reply:
        return answer_webhook(req, handler)

    return route


def _flow_reply(serve: Callable[[], str]) -> Reply:
    """A flow answer, or the safe one (sorry, goodbye) when the flow cannot give it: the file was refused at load
    (logged once, there), or a request names a node the file does not have (a call that outlived a deploy)."""
    from . import flows, twiml

    try:
        return Reply(body=serve())
    except flows.FlowFileError:
        return Reply(body=twiml.unavailable())
    except flows.FlowError as exc:
        log_throttled(log, logging.WARNING, f"flow {type(exc).__name__}", "voice flow: %s; answered the fallback",
                      exc)
        return Reply(body=twiml.unavailable())


@twilio_webhook
def voice(params: Params) -> Reply:
    """An incoming call: the flow file's start node (the default flows.json: greeting, pause, menu)."""
    from . import flows

    return _flow_reply(lambda: flows.start(params))


@twilio_webhook
def voice_menu(params: Params) -> Reply:
    """The answer to the gather of the flow node named ``menu`` (Digits, else SpeechResult)."""
    from . import flows, twiml

    return _flow_reply(lambda: flows.answer(twiml.MENU_NODE, params))


def _node_query(req: WebhookRequest) -> tuple[str, str]:
    """``?node=NAME`` (enter a node) or ``?gather=NAME`` (answer its gather): exactly one, once, a node name."""
    from . import flows

    query = req.query_params
    given = [(key, query.getlist(key)) for key in ("node", "gather") if key in query]
    if len(given) != 1 or len(given[0][1]) != 1:
        raise MalformedRequestError("give exactly one of ?node=NAME or ?gather=NAME, once")
    key, (name,) = given[0]
    if not flows.NODE_NAME.fullmatch(name):
        raise MalformedRequestError(f"{key} is not a node name ({flows.NODE_NAME_RULE})")
    return key, name


def voice_node(req: WebhookRequest) -> Reply:
    """The walk of the flow file: ``?node=NAME`` enters node NAME (a redirect), ``?gather=NAME`` answers its
    gather. The name is checked against :data:`shared.flows.NODE_NAME` and looked up in the loaded file, never
    used as a path; the signature covers the query string as received, so it cannot be swapped."""
    from . import flows

    def walk(params: Params) -> Reply:
        key, name = _node_query(req)
        if key == "node":
            return _flow_reply(lambda: flows.enter(name, params))
        return _flow_reply(lambda: flows.answer(name, params))

    return answer_webhook(req, walk)


@twilio_webhook
def voice_recorded(params: Params) -> Reply:
    from . import inbound

    result = inbound.handle_voicemail(params)
    return Reply(body=result.twiml, event=result.event)


def _say_messages(params: Params) -> list[str]:
    """``Message`` and/or ``Message[0]``, ``Message[1]``… in index order (twimlets/message style)."""
    indexed: list[tuple[int, str]] = []
    for name, values in params.items():
        if name.startswith("Message[") and name.endswith("]"):
            index = name[len("Message["):-1]
            if not _MESSAGE_INDEX.fullmatch(index):
                raise MalformedRequestError(f"parameter {name!r}: index must be a number 0-9999 in ASCII digits")
            indexed.extend((int(index), v) for v in values)
    messages = list(params.getlist("Message")) + [v for _, v in sorted(indexed, key=lambda item: item[0])]
    messages = [m for m in messages if m.strip()]
    if not messages:
        raise MalformedRequestError("no Message parameter: pass Message or Message[0], Message[1]…")
    if len(messages) > MAX_SAY_MESSAGES:
        raise MalformedRequestError(f"{len(messages)} messages > {MAX_SAY_MESSAGES}")
    return messages


@twilio_webhook
def twiml_say(params: Params) -> Reply:
    from . import twiml

    voice, language = params.first("Voice"), params.first("Language")
    for name, value in (("Voice", voice), ("Language", language)):
        if value and not twiml.SAY_ATTRIBUTE.fullmatch(value):
            raise MalformedRequestError(f"parameter {name} is not a voice or language name "
                                        f"({twiml.SAY_ATTRIBUTE_RULE})")
    return Reply(body=twiml.say(_say_messages(params), voice, language))


@twilio_webhook
def sms(params: Params) -> Reply:
    from . import inbound

    settings = get_settings()
    result = inbound.handle_sms(params, settings.sms_auto_reply, settings.auto_reply_min_interval_seconds)
    return Reply(body=result.twiml, event=result.event)


def health(req: WebhookRequest | None = None) -> Reply:
    """Version and whether storage and secrets are reachable; never a secret's value."""
    secrets_ok = secrets.secrets_readable()  # cached: health checks do not read the vault each time
    storage_ok = storage.storage_reachable()
    body = {"status": "ok" if storage_ok and secrets_ok else "degraded", "version": __version__,
            "storage": storage_ok, "secrets": secrets_ok}
    return Reply(status=200, body=json.dumps(body), content_type="application/json")


# ---------------------------------------------------------------- status callbacks of outbound sends


def _status_callback(kind: Kind, req: WebhookRequest) -> Reply:
    from . import status_callbacks

    def apply(params: Params) -> Reply:
        event = status_callbacks.handle(kind, req.query_params, params)  # the id is in the callback URL's query
        return Reply(status=204, body="", content_type="text/plain; charset=utf-8",
                     outcome=outcomes.for_binding(event))

    return answer_webhook(req, apply)


def status_message(req: WebhookRequest) -> Reply:
    """Twilio's status callback for an SMS we sent (``?id=`` names the ledger row) → 204."""
    return _status_callback("sms", req)


def status_call(req: WebhookRequest) -> Reply:
    """Twilio's status callback for a call we placed (``?id=`` names the ledger row) → 204."""
    return _status_callback("call", req)


def status_amd(req: WebhookRequest) -> Reply:
    """Twilio's asynchronous AMD callback for a call we placed (``?id=``): ``AnsweredBy`` onto the ledger row,
    and the voicemail dropped when a machine's greeting has ended → 204."""
    from . import status_callbacks

    def apply(params: Params) -> Reply:
        status_callbacks.handle_amd(req.query_params, params)
        return Reply(status=204, body="", content_type="text/plain; charset=utf-8")

    return answer_webhook(req, apply)


@twilio_webhook
def status_recording(params: Params) -> Reply:
    """A voicemail's recording status callback → an inbound-queue event (the recording is ready, or absent); 204."""
    from . import inbound

    return Reply(status=204, body="", content_type="text/plain; charset=utf-8",
                 event=inbound.handle_recording_status(params))
