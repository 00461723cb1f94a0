"""switchboard's routing table: each function adapts one trigger to one call into ``shared`` and back.

No business logic here. Heavy SDKs load inside ``shared`` on first use, so this import stays light.
"""

from urllib.parse import urlsplit

import azure.functions as func

from shared import outcomes, routes
from shared.webhooks import WebhookRequest

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
STORAGE = {"connection": "AzureWebJobsStorage"}
INBOUND = {"arg_name": "inbound", "queue_name": "%INBOUND_QUEUE%", **STORAGE}
# Status callbacks put outcome events here (the send path writes its own with the SDK); see shared/outcomes.py.
OUTCOMES = {"arg_name": "outcome", "queue_name": outcomes.output_queue_binding_name(), **STORAGE}


def _request(req: func.HttpRequest) -> WebhookRequest:
    url = urlsplit(req.url)
    return WebhookRequest(req.method, url.path, url.query, dict(req.headers), req.get_body() or b"")


def _response(reply: routes.Reply, inbound: func.Out[str] | None = None,
              outcome: func.Out[str] | None = None) -> func.HttpResponse:
    if inbound is not None and reply.event is not None:
        inbound.set(reply.event)
    if outcome is not None and reply.outcome is not None:
        outcome.set(reply.outcome)
    return func.HttpResponse(reply.body, status_code=reply.status, mimetype=reply.content_type.split(";")[0],
                             charset="utf-8")


@app.route(route="voice", methods=["POST"])
def voice(req: func.HttpRequest) -> func.HttpResponse:
    return _response(routes.voice(_request(req)))


@app.route(route="voice/menu", methods=["POST"])
def voice_menu(req: func.HttpRequest) -> func.HttpResponse:
    return _response(routes.voice_menu(_request(req)))


@app.route(route="voice/node", methods=["POST"])
def voice_node(req: func.HttpRequest) -> func.HttpResponse:
    return _response(routes.voice_node(_request(req)))


@app.route(route="voice/recorded", methods=["POST"])
@app.queue_output(**INBOUND)
def voice_recorded(req: func.HttpRequest, inbound: func.Out[str]) -> func.HttpResponse:
    return _response(routes.voice_recorded(_request(req)), inbound)


@app.route(route="twiml/say", methods=["GET", "POST"])
def twiml_say(req: func.HttpRequest) -> func.HttpResponse:
    return _response(routes.twiml_say(_request(req)))


@app.route(route="sms", methods=["POST"])
@app.queue_output(**INBOUND)
def sms(req: func.HttpRequest, inbound: func.Out[str]) -> func.HttpResponse:
    return _response(routes.sms(_request(req)), inbound)


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    return _response(routes.health(_request(req)))


# ---------------------------------------------------------------- outbound: queue-triggered sends + status callbacks


@app.queue_trigger(arg_name="msg", queue_name="%SMS_QUEUE%", **STORAGE)
def send_sms(msg: func.QueueMessage) -> None:
    from shared import sender  # loaded by the first queue message, not by every cold start (webhooks)

    sender.process_sms(msg.get_body(), msg.id or "", msg.dequeue_count or 1)


@app.queue_trigger(arg_name="msg", queue_name="%CALL_QUEUE%", **STORAGE)
def place_call(msg: func.QueueMessage) -> None:
    from shared import sender

    sender.process_call(msg.get_body(), msg.id or "", msg.dequeue_count or 1)


@app.route(route="status/message", methods=["POST"])
@app.queue_output(**OUTCOMES)
def status_message(req: func.HttpRequest, outcome: func.Out[str]) -> func.HttpResponse:
    return _response(routes.status_message(_request(req)), outcome=outcome)


@app.route(route="status/call", methods=["POST"])
@app.queue_output(**OUTCOMES)
def status_call(req: func.HttpRequest, outcome: func.Out[str]) -> func.HttpResponse:
    return _response(routes.status_call(_request(req)), outcome=outcome)


@app.route(route="status/amd", methods=["POST"])
def status_amd(req: func.HttpRequest) -> func.HttpResponse:
    return _response(routes.status_amd(_request(req)))


@app.route(route="status/recording", methods=["POST"])
@app.queue_output(**INBOUND)
def status_recording(req: func.HttpRequest, inbound: func.Out[str]) -> func.HttpResponse:
    return _response(routes.status_recording(_request(req)), inbound)
