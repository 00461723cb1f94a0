"""The HTTP half of the local Functions host (``func`` cannot be installed everywhere; the tests use this too).

It serves the indexed HTTP functions: route templates, methods and output bindings are read from each function's
own binding metadata (``get_function_json()``), ``routePrefix`` from host.json, and a queue output is written to
the real queue (Azurite) the way the host's binding does, with ``messageEncoding: none``.

What the real host + Python worker 4.34 do, and this host does too (observed, and relied on by the tests):
- a route that exists but not for this method → 404, as an unknown route, with an empty body (no 405);
- an unhandled exception → 500 with an empty body (the exception goes to the log, never to the caller);
- header names reach the function lower-cased;
- the response is encoded by azure.functions' own converter: ``text/*`` gets ``; charset=…``, other types
  (``application/json``) carry no charset;
- a sync function runs on the worker's thread pool, an ``async def`` one on its event loop
  (``devhost.worker.WorkerPool``);
- the listening socket's backlog is the real host's (Kestrel: 512), so a burst of connections queues instead of
  being dropped or reset.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import azure.functions as func
from azure.functions.http import HttpResponseConverter

from .settings import resolve_setting
from .worker import WorkerPool

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("devhost.http")
LISTEN_BACKLOG = 512  # Kestrel's default listen backlog (socketserver's default, 5, drops bursts)

__all__ = ["HttpHost", "OutBox", "resolve_setting"]


def _route_pattern(prefix: str, route: str) -> re.Pattern[str]:
    path = "/" + "/".join(p for p in (prefix, route) if p)
    # {name} and {name:constraint} route parameters become named groups.
    regex = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"(?P<\1>[^/]+)", re.escape(path).replace(r"\{", "{").replace(r"\}", "}"))
    return re.compile(f"^{regex}/?$", re.IGNORECASE)


class OutBox(func.Out):
    """What an output binding received; the host writes it to the queue after the function returns."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


class _Server(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that hung up before its answer was written is not the host's error (no traceback)."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Route:
    def __init__(self, pattern: re.Pattern[str], methods: set[str], fn: Any, bindings: dict[str, dict]) -> None:
        self.pattern, self.methods, self.fn, self.bindings = pattern, methods, fn, bindings
        self.name = fn.get_function_name()


class HttpHost:
    """Serve ``functions`` (the app's indexed functions) over HTTP on ``host``:``port`` (0 = a free port)."""

    def __init__(self, functions: list[Any], queue_writer: Callable[[str, str], None] | None = None, *,
                 pool: WorkerPool | None = None, host: str = "127.0.0.1", port: int = 0,
                 public_host: str | None = None) -> None:
        host_json = json.loads((ROOT / "host.json").read_text())
        self.route_prefix = host_json.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        self.routes: list[_Route] = []
        for fn in functions:
            bindings = json.loads(fn.get_function_json())["bindings"]
            trigger = next((b for b in bindings if b["type"] == "httpTrigger"), None)
            if trigger is None:
                continue
            methods = {m.upper() for m in trigger.get("methods") or ["GET", "POST"]}
            route = trigger.get("route") or fn.get_function_name()
            self.routes.append(_Route(_route_pattern(self.route_prefix, route), methods, fn,
                                      {b["name"]: b for b in bindings}))
        self.queue_writer = queue_writer or _write_to_storage_queue
        self._own_pool = pool is None
        self.pool = pool or WorkerPool()
        self.bind_host, self.bind_port = host, port
        self.public_host = public_host
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None, "host not started"
        return f"http://{self.public_host or self.bind_host}:{self.server.server_address[1]}"

    def describe(self) -> list[str]:
        """One line per HTTP function, as ``func start`` lists them."""
        lines = []
        for route in self.routes:
            template = "/".join(p for p in (self.route_prefix, _template(route)) if p)
            lines.append(f"{route.name}: [{','.join(sorted(route.methods))}] {self.base_url}/{template}")
        return lines

    def start(self) -> str:
        host = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # invocations are logged by the host, not per socket
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, headers_out, payload = host.dispatch(self.command, self.path, headers, body)
                self.send_response(status)
                for name, value in headers_out.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        self.server = _Server((self.bind_host, self.bind_port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="devhost-http", daemon=True)
        self.thread.start()
        return self.base_url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self._own_pool:
            self.pool.shutdown()

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        path = raw_path.partition("?")[0]
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match and method.upper() in route.methods:
                return self._invoke(route, method, raw_path, headers, body, match.groupdict())
        # The real host answers a wrong method exactly like an unknown route.
        return 404, {}, b""

    def _invoke(self, route: _Route, method: str, raw_path: str, headers: dict[str, str], body: bytes,
                route_params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        url = self.base_url + raw_path
        params = dict(parse_qsl(raw_path.partition("?")[2], keep_blank_values=True))
        kwargs: dict[str, Any] = {}
        outputs: list[tuple[dict, OutBox]] = []
        for name, binding in route.bindings.items():
            if binding["type"] == "httpTrigger":
                kwargs[name] = func.HttpRequest(method=method.upper(), url=url, headers=headers, params=params,
                                                route_params=route_params, body=body)
            elif binding["direction"] == "OUT" and binding["type"] == "queue":
                box = OutBox()
                outputs.append((binding, box))
                kwargs[name] = box
        invocation = str(uuid.uuid4())
        started = time.perf_counter()
        try:
            response = self.pool.invoke(route.fn.get_user_function(), **kwargs).result()
            for binding, box in outputs:
                if box.value is not None:
                    self.queue_writer(resolve_setting(binding["queueName"]), box.value)
            encoded = HttpResponseConverter.encode(response, expected_type=None).value
        except Exception:  # the real host logs it and answers 500 with an empty body
            log.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", route.name, invocation,
                          (time.perf_counter() - started) * 1000)
            return 500, {}, b""
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", route.name, invocation,
                 (time.perf_counter() - started) * 1000)
        headers_out = {name: datum.value for name, datum in encoded["headers"].items()}
        return int(encoded["status_code"].value), headers_out, encoded["body"].value or b""


def _template(route: _Route) -> str:
    trigger = next(b for b in route.bindings.values() if b["type"] == "httpTrigger")
    return trigger.get("route") or route.name


def _write_to_storage_queue(queue_name: str, message: str) -> None:
    """The queue output binding: the string as is (``messageEncoding: none``), to the app's storage account."""
    from shared import storage

    storage.queue(queue_name).send_message(message)
