"""A tiny HTTP proxy in front of Azurite's table service that can answer as a throttled Storage account does:
503 Server Busy / 500 Operation Timeout, with or without ``Retry-After``. It records every request it sees."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Match = Callable[[str, str], bool]  # (method, path) -> should this request fail?


@dataclass
class Fault:
    match: Match
    status: int
    code: str
    retry_after: str | None
    remaining: int  # -1 = until healed


@dataclass
class Seen:
    at: float
    method: str
    path: str
    status: int


@dataclass
class StorageProxy:
    upstream_port: int
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def fail(self, match: Match, *, status: int = 503, code: str = "ServerBusy", retry_after: str | None = None,
             times: int = -1) -> None:
        with self._lock:
            self._faults.append(Fault(match, status, code, retry_after, times))

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining != 0 and fault.match(method, path):
                    fault.remaining -= 1 if fault.remaining > 0 else 0
                    return fault
        return None

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.seen.append(Seen(time.monotonic(), method, path, status))

    def start(self) -> "StorageProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault_for(self.command, self.path)
                if fault is not None:
                    payload = (f'{{"odata.error":{{"code":"{fault.code}","message":{{"lang":"en-US",'
                               f'"value":"injected {fault.code}"}}}}}}').encode()
                    # Recorded before answering: a client may look at ``seen`` the moment it has the answer.
                    proxy.record(self.command, self.path, fault.status)
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json;odata=minimalmetadata")
                    self.send_header("x-ms-error-code", fault.code)
                    if fault.retry_after is not None:
                        self.send_header("Retry-After", fault.retry_after)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                proxy.record(self.command, self.path, answer.status)
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_MERGE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
