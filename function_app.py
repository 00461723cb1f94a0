"""switchboard's routing table: each function adapts one trigger to one call into ``shared`` and back.

No business logic here. Heavy SDKs load inside ``shared`` on first use, so this import stays light.
"""

from urllib.parse import urlsplit

import azure.functions as func

from shared import routes
from shared.webhooks import WebhookRequest

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
INBOUND = {"arg_name": "inbound", "queue_name": "%INBOUND_QUEUE%", "connection": "AzureWebJobsStorage"}


def _request(req: func.HttpRequest) -> WebhookRequest:
    url = urlsplit(req.url)
    return WebhookRequest(req.method, url.path, url.query, dict(req.headers), req.get_body() or b"")


def _response(reply: routes.Reply, inbound: func.Out[str] | None = None) -> func.HttpResponse:
    if inbound is not None and reply.event is not None:
        inbound.set(reply.event)
    return func.HttpResponse(reply.body, status_code=reply.status, mimetype=reply.content_type.split(";")[0],
                             charset="utf-8")


@app.route(route="voice", methods=["POST"])
def voice(req: func.HttpRequest) -> func.HttpResponse:
    return _response(routes.voice(_request(req)))


@app.route(route="voice/menu", methods=["POST"])
def voice_menu(req: func.HttpRequest) -> func.HttpResponse:
    return _response(routes.voice_menu(_request(req)))


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
