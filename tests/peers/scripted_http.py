"""A keep-alive HTTP/1.1 server on 127.0.0.1 that answers from a script, for the app's own HTTP clients' edge cases:
what it received (method, path, headers, body, which connection), answers in order, and faults a real peer shows
(an answer after a delay, a connection closed after the request was read, an idle connection closed)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0          # seconds before answering
    drop: bool = False          # close the connection instead of answering (the request was read)
    close_after: bool = False   # answer, then close the connection (no "Connection: close" header)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int


class ScriptedHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: list[Reply] = []
        self.seen: list[Seen] = []
        self.connections = 0
        self.closed = 0
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    def next_reply(self) -> Reply:
        with self.lock:
            return self.replies.pop(0) if self.replies else Reply()

    def wait_closed(self, count: int, timeout: float = 5.0) -> None:
        """Poll until ``count`` connections have been closed by this side (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.closed < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.closed} of {count} connections closed")
            time.sleep(0.005)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedHttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.number = self.server.connections

    def finish(self) -> None:
        super().finish()
        with self.server.lock:
            self.server.closed += 1

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body, self.number))
        reply = self.server.next_reply()
        if reply.delay:
            time.sleep(reply.delay)  # the peer being slow is the behaviour under test
        if reply.drop:
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)
        self.wfile.flush()
        if reply.close_after:
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve  # noqa: N815 - http.server's naming
