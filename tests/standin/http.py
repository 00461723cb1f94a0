"""The HTTP half of a stand-in Functions host, for e2e tests (``func`` cannot be installed here).

It serves the indexed HTTP functions on 127.0.0.1: route templates, methods and output bindings are read from
each function's own binding metadata (``get_function_json()``), ``routePrefix`` from host.json, and a queue
output is written to the real queue (Azurite) the way the host's binding does, with ``messageEncoding: none``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import azure.functions as func

ROOT = Path(__file__).resolve().parents[2]


def resolve_setting(expression: str) -> str:
    """``%SETTING%`` binding expressions → the setting's value, as the host resolves them."""
    return re.sub(r"%([^%]+)%", lambda m: os.environ[m.group(1)], expression)


def _route_pattern(prefix: str, route: str) -> re.Pattern[str]:
    path = "/" + "/".join(p for p in (prefix, route) if p)
    # {name} and {name:constraint} route parameters become named groups.
    regex = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"(?P<\1>[^/]+)", re.escape(path).replace(r"\{", "{").replace(r"\}", "}"))
    return re.compile(f"^{regex}$", re.IGNORECASE)


class OutBox(func.Out):
    """What an output binding received; the host writes it to the queue after the function returns."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


class StandinHttpHost:
    """Serve ``functions`` (the app's indexed functions) over HTTP on a free loopback port."""

    def __init__(self, functions: list[Any], queue_writer: Callable[[str, str], None] | None = None) -> None:
        host_json = json.loads((ROOT / "host.json").read_text())
        prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        self.routes: list[tuple[re.Pattern[str], set[str], Any, dict]] = []
        for fn in functions:
            bindings = json.loads(fn.get_function_json())["bindings"]
            trigger = next((b for b in bindings if b["type"] == "httpTrigger"), None)
            if trigger is None:
                continue
            methods = {m.upper() for m in trigger.get("methods") or ["GET", "POST"]}
            self.routes.append((_route_pattern(prefix, trigger.get("route") or fn.get_function_name()),
                                methods, fn, {b["name"]: b for b in bindings}))
        self.queue_writer = queue_writer or _write_to_storage_queue
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None, "host not started"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> str:
        host = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = host.dispatch(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="standin-http", daemon=True)
        self.thread.start()
        return self.base_url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        path, _, query = raw_path.partition("?")
        for pattern, methods, fn, bindings in self.routes:
            match = pattern.fullmatch(path)
            if not match:
                continue
            if method.upper() not in methods:
                return 405, {"Content-Type": "text/plain"}, b"method not allowed\n"
            return self._invoke(fn, bindings, method, raw_path, headers, body, match.groupdict())
        return 404, {"Content-Type": "text/plain"}, b"not found\n"

    def _invoke(self, fn: Any, bindings: dict, method: str, raw_path: str, headers: dict[str, str], body: bytes,
                route_params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        from urllib.parse import parse_qsl, urlsplit

        url = self.base_url + raw_path
        params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        kwargs: dict[str, Any] = {}
        outputs: dict[str, tuple[dict, OutBox]] = {}
        for name, binding in bindings.items():
            if binding["type"] == "httpTrigger":
                kwargs[name] = func.HttpRequest(method=method, url=url, headers=headers, params=params,
                                                route_params=route_params, body=body)
            elif binding["direction"] == "OUT" and binding["type"] == "queue":
                outputs[name] = (binding, OutBox())
                kwargs[name] = outputs[name][1]
        try:
            response: func.HttpResponse = fn.get_user_function()(**kwargs)
        except Exception:  # the real host answers 500 for an unhandled exception; so do we
            return 500, {"Content-Type": "text/plain"}, b"unhandled exception\n"
        for binding, box in outputs.values():
            if box.value is not None:
                self.queue_writer(resolve_setting(binding["queueName"]), box.value)
        headers_out = dict(response.headers)
        headers_out["Content-Type"] = response.mimetype + (f"; charset={response.charset}" if response.charset else "")
        return response.status_code, headers_out, response.get_body()


def _write_to_storage_queue(queue_name: str, message: str) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], queue_name)
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    client.send_message(message)
