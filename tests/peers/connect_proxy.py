"""A tiny CONNECT proxy on 127.0.0.1 that records every tunnel asked of it and opens tunnels only to 127.0.0.1
(any other target gets 502), so nothing leaves the machine; the ``proxy`` fixture (tests/integration/conftest.py)
points HTTPS_PROXY at it."""

from __future__ import annotations

import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ConnectProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.tunnels: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    server: ConnectProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_CONNECT(self) -> None:  # noqa: N802 - http.server's naming
        with self.server.lock:
            self.server.tunnels.append(self.path)
        host, _, port = self.path.rpartition(":")
        if host != "127.0.0.1":
            self.send_error(502, "this test proxy only tunnels to 127.0.0.1")
            return
        upstream = socket.create_connection((host, int(port)), timeout=5)
        self.send_response(200, "Connection established")
        self.end_headers()
        self._pipe(self.connection, upstream)

    @staticmethod
    def _pipe(client: socket.socket, upstream: socket.socket) -> None:
        sockets = [client, upstream]
        try:
            while True:
                readable, _, broken = select.select(sockets, [], sockets, 5)
                if broken or not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        finally:
            upstream.close()
