"""Shared fixtures: the indexed app, signed requests, and the local peers (each started on 127.0.0.1, free ports,
stopped at the end). Peer processes are session-scoped; app state (settings, caches) is reset per test."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import azure.functions as func
import pytest

from devhost.http import OutBox
from tests.twilio_signing import PUBLIC_BASE_URL, TEST_AUTH_TOKEN, TEST_SHARED_KEY, form_body, sign_form

ROOT = Path(__file__).resolve().parents[1]
TEST_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TEST_FROM = "+15005550006"

# Settings every test starts from; storage is pointed at nothing until a test asks for Azurite.
BASE_ENV = {
    "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
    "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
    "TWILIO_WEBHOOK_SHARED_KEY": TEST_SHARED_KEY,
    "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
    "TWILIO_FROM_NUMBER": TEST_FROM,
    "SMS_QUEUE": "outbound-sms",
    "CALL_QUEUE": "outbound-calls",
    "INBOUND_QUEUE": "inbound-sms",
    "OUTCOMES_QUEUE": "outbound-outcomes",
    # Pacing is on in production; tests that are about pacing turn it on (tests/integration/test_pacing_azurite.py).
    "PACING": "off",
    "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=bm9uZQ==;"
                           "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
                           "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;",
}
# Set before anything imports function_app: its status callbacks' output binding then names %OUTCOMES_QUEUE%, which
# the local host resolves per call (so each test's own outcomes queue), as the Functions host does from settings.
os.environ.setdefault("OUTCOMES_QUEUE", BASE_ENV["OUTCOMES_QUEUE"])
_APP_SETTINGS = [
    "KEY_VAULT_URL", "AZURE_CLIENT_ID", "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET",
    "TWILIO_API_BASE_URL", "VOICE_GREETING", "SMS_AUTO_REPLY", "FORWARD_TO_NUMBER", "SECRET_CACHE_SECONDS",
    "TWILIO_HTTP_TIMEOUT_SECONDS", "SENDER_RATES", "PACING_LEAD_SECONDS",
]


def reset_app_state() -> None:
    """Forget every process-wide cache the app keeps (settings, secrets, storage and Twilio clients)."""
    from shared import config, secrets, storage, transport, webhooks

    config.reset_settings()
    transport.reset_http_environment()
    secrets.reset_secrets()
    storage.reset_clients()
    webhooks.forget_reported()
    try:
        from shared import twilio_api
    except ImportError:
        return
    reset = getattr(twilio_api, "reset_client", None)
    if reset:
        reset()


@pytest.fixture(autouse=True)
def app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A clean, known environment for the app in every test."""
    for name in _APP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)
    reset_app_state()
    yield BASE_ENV
    reset_app_state()


@pytest.fixture
def set_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Change settings inside a test; the app re-reads them."""

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        reset_app_state()

    return apply


# ---------------------------------------------------------------- the indexed app


@pytest.fixture(scope="session")
def indexed_functions() -> dict[str, Any]:
    """The function app as the host indexes it: name -> FunctionBuilder-built Function."""
    import function_app

    return {fn.get_function_name(): fn for fn in function_app.app.get_functions()}


def http_request(method: str, path: str, *, body: bytes = b"", query: str = "",
                 headers: dict[str, str] | None = None) -> func.HttpRequest:
    url = "http://localhost:7071" + path + (f"?{query}" if query else "")
    return func.HttpRequest(method=method, url=url, headers=headers or {}, params={}, route_params={}, body=body)


def signed_form_request(path: str, params: dict, *, query: str = "", token: str | None = None,
                        algorithm: str = "HMAC_SHA1", shared_key: bool = False) -> func.HttpRequest:
    """A POST exactly as Twilio sends it to ``PUBLIC_BASE_URL`` + path (+ query): signed with the auth token, or,
    with ``shared_key`` (a Webhook Rule), with the SharedKey and the settings header naming ``algorithm``."""
    public = PUBLIC_BASE_URL + path + (f"?{query}" if query else "")
    key = token or (TEST_SHARED_KEY if shared_key else TEST_AUTH_TOKEN)
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": sign_form(public, params, key, algorithm)}
    if shared_key:
        headers["X-Twilio-Webhooks-Signature-Settings"] = f"key=webhooks_sharedkey_test,algorithm={algorithm}"
    return http_request("POST", path, body=form_body(params), query=query, headers=headers)


@pytest.fixture
def call_function(indexed_functions: dict[str, Any]) -> Callable[..., tuple[func.HttpResponse, OutBox]]:
    """Invoke an indexed HTTP function in process; returns the response and its inbound-queue output."""

    def invoke(name: str, req: func.HttpRequest) -> tuple[func.HttpResponse, OutBox]:
        fn = indexed_functions[name]
        user_fn = fn.get_user_function()
        box = OutBox()
        kwargs: dict[str, Any] = {}
        for binding in json.loads(fn.get_function_json())["bindings"]:
            if binding["direction"] == "IN" and binding["type"] == "httpTrigger":
                kwargs[binding["name"]] = req
            elif binding["direction"] == "OUT" and binding["type"] == "queue":
                kwargs[binding["name"]] = box
        return user_fn(**kwargs), box

    return invoke


# ---------------------------------------------------------------- Azurite (queues + tables)


@pytest.fixture(scope="session")
def azurite_peer() -> Iterator[Any]:
    from tests.peers.azurite import start_azurite

    peer = start_azurite()
    yield peer
    peer.stop()


@pytest.fixture
def azurite(azurite_peer: Any, set_env: Callable[..., None]) -> Any:
    """Azurite with the app pointed at it (``AzureWebJobsStorage``)."""
    set_env(AzureWebJobsStorage=azurite_peer.connection_string)
    return azurite_peer


@pytest.fixture
def unique_queues(set_env: Callable[..., None]) -> dict[str, str]:
    """Fresh queue names for this test, so tests sharing one Azurite never see each other's messages."""
    suffix = uuid.uuid4().hex[:8]
    names = {"SMS_QUEUE": f"sms-{suffix}", "CALL_QUEUE": f"calls-{suffix}", "INBOUND_QUEUE": f"inbound-{suffix}",
             "OUTCOMES_QUEUE": f"outcomes-{suffix}"}
    set_env(**names)
    return names


# ---------------------------------------------------------------- the local host (devhost), HTTP half


@pytest.fixture
def standin_http(indexed_functions: dict[str, Any], azurite: Any) -> Iterator[Any]:
    """The indexed HTTP functions served on 127.0.0.1 (queue outputs written to Azurite)."""
    from devhost.http import HttpHost

    host = HttpHost(list(indexed_functions.values()))
    host.start()
    yield host
    host.stop()


# ---------------------------------------------------------------- log capture for secret/PII checks


@pytest.fixture
def all_log_text(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    caplog.set_level(logging.DEBUG)
    return lambda: "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)


# ---------------------------------------------------------------- Key Vault (issue 4): fake vault, credential guard,
# ---------------------------------------------------------------- and the session-wide "no secret in any log line" check

from tests.secret_scan import LogRecorder, register_secret  # noqa: E402

register_secret(TEST_AUTH_TOKEN)
register_secret(TEST_SHARED_KEY)
VAULT_AUTH_TOKEN = register_secret("vault-auth-token-7c1e9a0b5d2f4e68a1")
VAULT_API_KEY_SECRET = register_secret("vault-api-key-secret-3b8d6f1a9e2c07")

# Every record of the session from every logger (root at INFO, as the Functions worker sets it), checked against
# every registered secret and for unmasked phone numbers when the session ends.
SESSION_LOGS = LogRecorder()
WORKER_ROOT_LEVEL = logging.INFO


def pytest_sessionstart(session: pytest.Session) -> None:
    import shared  # noqa: F401 - as in production, importing the app installs its log redaction

    root = logging.getLogger()
    root.addHandler(SESSION_LOGS)
    root.setLevel(WORKER_ROOT_LEVEL)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(SESSION_LOGS)
    leaks = SESSION_LOGS.leaks()
    numbers = SESSION_LOGS.unmasked_numbers()
    if not leaks and not numbers:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = []
    if leaks:
        lines.append(f"SECRET LEAK: {len(leaks)} log record(s) contain a secret value used by the tests:")
        lines += [f"  [{name}] {text}" for name, text in leaks[:20]]
    if numbers:
        lines.append(f"PHONE NUMBER LEAK: {len(numbers)} log record(s) hold an unmasked phone number:")
        lines += [f"  [{name}] {text}" for name, text in numbers[:20]]
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:  # pragma: no cover
            print(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def no_real_azure_credential(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any test that builds DefaultAzureCredential or asks a managed identity for a token: that traffic
    (169.254.169.254, Entra ID) would leave the machine. Inject a credential (the ``keyvault`` fixture does).
    Recorded as well as raised, because the app turns credential errors into "secret unavailable"."""
    import azure.identity

    attempts: list[str] = []

    class ForbiddenDefaultAzureCredential:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            attempts.append("DefaultAzureCredential()")
            raise AssertionError("test built DefaultAzureCredential: use shared.secrets.set_credential_factory")

    def forbidden_token(self: Any, *scopes: str, **kwargs: Any) -> Any:
        attempts.append(f"ManagedIdentityCredential token for {scopes}")
        raise AssertionError("test asked a managed identity for a token")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", ForbiddenDefaultAzureCredential)
    monkeypatch.setattr(azure.identity.ManagedIdentityCredential, "get_token", forbidden_token)
    monkeypatch.setattr(azure.identity.ManagedIdentityCredential, "get_token_info", forbidden_token)
    yield attempts
    assert not attempts, f"real Azure credential used: {attempts}"


@pytest.fixture(scope="session")
def keyvault_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.peers.keyvault import start_keyvault

    peer = start_keyvault(tmp_path_factory.mktemp("keyvault"))
    yield peer
    peer.stop()


@pytest.fixture
def keyvault(keyvault_peer: Any, monkeypatch: pytest.MonkeyPatch, set_env: Callable[..., None]) -> Iterator[Any]:
    """The fake vault holding twilio-auth-token = VAULT_AUTH_TOKEN and twilio-api-key-secret =
    VAULT_API_KEY_SECRET, with the app pointed at it (KEY_VAULT_URL; the TWILIO_* secret variables removed;
    a fake credential and the test certificate injected into the real SecretClient)."""
    from shared import secrets
    from tests.peers.keyvault import FakeCredential

    keyvault_peer.reset()
    keyvault_peer.set_secret(secrets.AUTH_TOKEN, VAULT_AUTH_TOKEN)
    keyvault_peer.set_secret(secrets.API_KEY_SECRET, VAULT_API_KEY_SECRET)
    for name in secrets.ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    secrets.set_credential_factory(FakeCredential, verify_challenge_resource=False,
                                   connection_verify=str(keyvault_peer.cert_path))
    set_env(KEY_VAULT_URL=keyvault_peer.url)
    yield keyvault_peer
    keyvault_peer.reset()
    secrets.set_credential_factory(None)


class ManualClock:
    """A monotonic clock that only moves when told (secret cache TTLs and rate limits without sleeping)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def secret_clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """Replace shared.secrets' clock for this test."""
    from shared import secrets

    clock = ManualClock()
    monkeypatch.setattr(secrets, "_clock", clock)
    return clock


# ---------------------------------------------------------------- Outbound (issue 3): fake Twilio, Prism, queue host


def twilio_oai_spec_path() -> Path:
    """Twilio's OpenAPI spec: ``$TWILIO_OAI_SPEC``, else ``<repo>/../shared/twilio-oai/``, else ``make twilio-spec``'s
    cache. Tests never download it (CI has the shared copy)."""
    candidates = [os.environ.get("TWILIO_OAI_SPEC", ""),
                  str(ROOT.parent / "shared" / "twilio-oai" / "twilio_api_v2010.json"),
                  str(ROOT / ".cache" / "twilio-oai" / "twilio_api_v2010.json")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("Twilio OpenAPI spec not found: set TWILIO_OAI_SPEC or run 'make twilio-spec'")


@pytest.fixture
def twilio_fake(set_env: Callable[..., None]) -> Iterator[Any]:
    """The Twilio fake on a free loopback port, the app pointed at it (2 s timeout on every request)."""
    from tests.peers.twilio_fake import start_twilio_fake

    fake = start_twilio_fake(TEST_ACCOUNT_SID, {TEST_ACCOUNT_SID: TEST_AUTH_TOKEN}, slow_seconds=2.5)
    set_env(TWILIO_API_BASE_URL=fake.base_url, TWILIO_HTTP_TIMEOUT_SECONDS="2")
    yield fake
    fake.stop()


@pytest.fixture
def outbound_env(azurite: Any, unique_queues: dict[str, str], twilio_fake: Any) -> Any:
    """Azurite + fresh queues + the Twilio fake: everything a queue function needs."""
    return twilio_fake


@pytest.fixture(scope="session")
def prism_peer() -> Iterator[str]:
    """Stoplight Prism mocking Twilio's spec (``--errors``: requests that break the spec are rejected)."""
    import subprocess

    from tests.peers.ports import free_port, port_open, wait_until

    port = free_port()
    binary = ROOT / "node_modules" / ".bin" / "prism"
    proc = subprocess.Popen([str(binary), "mock", str(twilio_oai_spec_path()), "-h", "127.0.0.1", "-p", str(port),
                             "--errors"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 60, "Prism to listen")
        if proc.poll() is not None:
            raise RuntimeError(f"prism exited with {proc.returncode}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def standin_queues(indexed_functions: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """Start the local host's queue half (devhost, after the test set its env); stopped at the end."""
    from devhost.queues import QueueHost

    hosts: list[Any] = []

    def start(**options: Any) -> Any:
        host = QueueHost(list(indexed_functions.values()), **options).start()
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop()


# ---------------------------------------------------------------- metrics (shared/telemetry.py)


@pytest.fixture
def metric_points() -> Iterator[Callable[[str], list[tuple[dict[str, Any], Any]]]]:
    """Record the app's metrics into an in-memory OpenTelemetry reader; returns ``points(name)``: each data point
    of that metric as (attributes, point)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from shared import telemetry

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_meter_provider(provider)

    def points(name: str) -> list[tuple[dict[str, Any], Any]]:
        data = reader.get_metrics_data()
        found = [m for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics for m in sm.metrics
                 if m.name == name]
        return [(dict(p.attributes), p) for m in found for p in m.data.data_points]

    yield points
    telemetry.use_meter_provider(None)
    provider.shutdown()
