"""An HTTPS fake of the Key Vault secrets data plane on 127.0.0.1, for the real ``SecretClient``.

No Key Vault emulator exists, so this serves what ``SecretClient.get_secret`` uses, the way the service does:

- TLS with a self-signed certificate for 127.0.0.1/localhost made at start (``cert_path`` is what the client
  passes as ``connection_verify``);
- a request without a bearer token gets 401 + ``WWW-Authenticate: Bearer authorization=..., resource=...``
  (the challenge the SDK's ``ChallengeAuthPolicy`` answers with a token from its credential);
- ``GET /secrets/{name}[/{version}]?api-version=...`` → the SecretBundle JSON (``value``, ``id``,
  ``attributes``); an unknown name or version → 404 with Key Vault's error shape;
- faults: ``fail("503")`` (ServiceUnavailable), ``fail("drop")`` (connection closed without an answer),
  ``slow(seconds)``; ``fail(None)`` / ``slow(0)`` restore;
- ``reads(name)``: authorized GETs of a secret (what "one vault read" means); ``challenges``: 401s sent.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TENANT_ID = "72f988bf-0000-4000-8000-00000000cafe"
TEST_BEARER_TOKEN = "fake-kv-bearer-" + "5f3a" * 8


class FakeCredential:
    """A TokenCredential that hands out a fixed token and never talks to Entra ID or a managed-identity endpoint."""

    def __init__(self, token: str = TEST_BEARER_TOKEN) -> None:
        self.token = token
        self.requests: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        with self._lock:
            self.requests.append((scopes, dict(kwargs)))
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        with self._lock:
            self.requests.append((scopes, dict(options or {})))
        return AccessTokenInfo(self.token, int(time.time()) + 3600)

    def close(self) -> None:
        pass


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA-style certificate for 127.0.0.1 and localhost; returns (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchboard test key vault")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "keyvault-cert.pem", directory / "keyvault-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    # Without this every response waits for the peer's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def setup(self) -> None:
        # TLS handshake here, in the request's own thread, so a stuck client cannot block the accept loop.
        self.request.settimeout(10)
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: tests read counters
        pass

    def _send_json(self, status: int, document: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-ms-keyvault-service-version", "1.9.0.0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"code": code, "message": message}}, headers)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.vault.handle_get(self)

    def do_POST(self) -> None:  # noqa: N802
        self._error(405, "BadParameter", "this fake serves GET /secrets/{name} only")

    do_PUT = do_DELETE = do_PATCH = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, vault: "FakeKeyVault", tls: ssl.SSLContext) -> None:
        self.vault = vault
        self.tls = tls
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped connections and handshakes the client gave up on are part of the tests


class FakeKeyVault:
    """The fake vault; start with :func:`start_keyvault`."""

    def __init__(self, directory: Path) -> None:
        self.cert_path, self.key_path = make_certificate(directory)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(self.cert_path, self.key_path)
        self._server = _Server(self, tls)
        self.port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.accepted_tokens = {TEST_BEARER_TOKEN}
        self._lock = threading.Lock()
        self._secrets: dict[str, list[tuple[str, str, int]]] = {}  # name -> [(version, value, created)]
        self._reads: Counter[str] = Counter()
        self.challenges = 0
        self.requests = 0
        self._failure: str | None = None
        self._delay = 0.0
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-keyvault", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ test controls

    def set_secret(self, name: str, value: str) -> str:
        """Add a new current version of ``name`` (rotation); returns the version id."""
        version = uuid.uuid4().hex
        with self._lock:
            self._secrets.setdefault(name, []).append((version, value, int(time.time())))
        return version

    def delete_secret(self, name: str) -> None:
        with self._lock:
            self._secrets.pop(name, None)

    def fail(self, mode: str | None) -> None:
        """``"503"``: answer 503 ServiceUnavailable; ``"drop"``: close the connection unanswered; None: healthy."""
        if mode not in (None, "503", "drop"):
            raise ValueError(mode)
        self._failure = mode

    def slow(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each request (0 = answer at once)."""
        self._delay = seconds
        if seconds:
            self._release.clear()
        else:
            self._release.set()

    def reads(self, name: str) -> int:
        with self._lock:
            return self._reads[name]

    def reset(self) -> None:
        """Healthy, no secrets, counters at zero."""
        self.fail(None)
        self.slow(0)
        with self._lock:
            self._secrets.clear()
            self._reads.clear()
            self.challenges = 0
            self.requests = 0
        self.accepted_tokens = {TEST_BEARER_TOKEN}

    def reset_counts(self) -> None:
        with self._lock:
            self._reads.clear()
            self.challenges = 0
            self.requests = 0

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------ serving

    def handle_get(self, handler: _Handler) -> None:
        with self._lock:
            self.requests += 1
        if self._delay:
            self._release.wait(self._delay)
        if self._failure == "drop":
            handler.close_connection = True
            try:
                handler.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if self._failure == "503":
            handler._error(503, "ServiceUnavailable", "The service is temporarily unavailable (fault injected).",
                           {"Retry-After": "0"})
            return
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.accepted_tokens:
            with self._lock:
                self.challenges += 1
            challenge = (f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", '
                         f'resource="https://vault.azure.net"')
            handler._error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                           {"WWW-Authenticate": challenge})
            return
        split = urlsplit(handler.path)
        if not parse_qs(split.query).get("api-version"):
            handler._error(400, "BadParameter", "The 'api-version' query parameter is missing.")
            return
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        if parts and parts[-1] == "" and len(parts) > 2:
            parts = parts[:-1]  # /secrets/{name}/ (no version)
        if len(parts) not in (2, 3) or parts[0] != "secrets" or not parts[1]:
            handler._error(404, "NotFound", f"no route for {split.path}")
            return
        name = parts[1]
        version = parts[2] if len(parts) == 3 and parts[2] else None
        with self._lock:
            self._reads[name] += 1
            versions = list(self._secrets.get(name, ()))
        found = next((v for v in versions if v[0] == version), None) if version else (versions[-1] if versions else None)
        if found is None:
            what = f"{name}/{version}" if version else name
            handler._error(404, "SecretNotFound",
                           f"A secret with (name/id) {what} was not found in this key vault. If you recently "
                           "deleted this secret you may be able to recover it using the correct recovery command.")
            return
        version, value, created = found
        handler._send_json(200, {
            "value": value,
            "id": f"{self.url}/secrets/{name}/{version}",
            "attributes": {"enabled": True, "created": created, "updated": created,
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": {},
        })


def start_keyvault(directory: Path | None = None) -> FakeKeyVault:
    """Start the fake on a free loopback port; the certificate goes to ``directory`` (default: a temp dir)."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="fake-keyvault-"))
    return FakeKeyVault(directory)
