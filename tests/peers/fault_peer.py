"""A raw TCP peer on 127.0.0.1 that breaks an HTTP exchange at a chosen point, for the send path's "may this
request have reached Twilio?" rule. Each connection gets the server's current ``mode``:

- ``close_on_accept``: reset the connection as soon as it is accepted (the client may have written already);
- ``close_after_request``: read the whole request, then reset without answering;
- ``hang_after_request``: read the whole request and never answer (the client's read timeout fires);
- ``partial_answer``: read the request, send a status line and half a body, then close;
- ``not_tls``: answer a TLS ClientHello with plain bytes (the handshake fails before any request is written);
- ``answer``: a whole ``201`` answer with a Twilio Message body (over TLS when the peer has a certificate).

``requests`` counts the requests read whole, so a test can say whether the request got through.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import uuid
from pathlib import Path

MODES = ("close_on_accept", "close_after_request", "hang_after_request", "partial_answer", "not_tls", "answer")


class FaultPeer:
    def __init__(self, mode: str = "answer", *, cert: tuple[Path, Path] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
        self.mode = mode
        self.requests = 0
        self._tls: ssl.SSLContext | None = None
        if cert is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*cert)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._serve, name="fault-peer", daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for conn in self._open:
                _close(conn)

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        mode = self.mode
        try:
            if mode == "close_on_accept":
                _reset(conn)
                return
            if mode == "not_tls":
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                _close(conn)
                return
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            _read_request(conn)
            with self._lock:
                self.requests += 1
            if mode == "close_after_request":
                _reset(conn)
            elif mode == "hang_after_request":
                self._stopped.wait(30)
            elif mode == "partial_answer":
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"si")
                _close(conn)
            else:
                body = json.dumps({"sid": "SM" + uuid.uuid4().hex, "status": "queued"}).encode()
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                _close(conn)
        except (OSError, ssl.SSLError):
            _close(conn)


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


def _reset(conn: socket.socket) -> None:
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(conn)


def _close(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass
