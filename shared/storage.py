"""Clients for the function app's own storage account (queues and tables), created once, on first use.

Locally ``AzureWebJobsStorage`` is a connection string (Azurite's ``UseDevelopmentStorage=true`` included);
in Azure it is identity-based (``AzureWebJobsStorage__queueServiceUri`` / ``__tableServiceUri`` /
``__accountName`` + ``__clientId``), the same settings the Functions host reads, so both share one account.
The SDKs are imported here, inside functions, to keep cold start light (a webhook that touches no storage loads
none of them). Every table and queue operation goes through the official SDK clients (``azure-data-tables``,
``azure-storage-queue``), which Microsoft tests against Azure on every release, on one pooled HTTP session per
service (``shared.transport``: proxy and CA settings read once, one connection per worker thread). azure-core's
HTTP logging policy (request URLs, which hold table keys such as an opt-out's number) logs at WARNING only.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from .config import MissingSettingError, get_settings

log = logging.getLogger("switchboard.storage")

# Azurite's published development account (not a secret: it is the same on every machine).
_AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + _AZURITE_KEY + ";"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
# Storage calls on a request path must not hang a webhook or a send.
STORAGE_TIMEOUT_SECONDS = 10
# Backpressure (503 Server Busy, 500 Operation Timeout, 429): azure-core's RetryPolicy retries these with
# exponential back-off, and sleeps for a Retry-After the service sends instead. A few short tries in the call;
# a longer Retry-After is not slept on a worker thread: the error goes up and the queue message comes back later.
STORAGE_RETRIES = 3
STORAGE_BACKOFF_SECONDS = 0.5
STORAGE_BACKOFF_MAX_SECONDS = 4
STORAGE_RETRY_AFTER_MAX_SECONDS = 10

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}
# Whether a table partition of the pre-spread layout still holds rows: (table, partition) -> (checked at, answer).
_legacy_rows: dict[tuple[str, str], tuple[float, bool]] = {}
LEGACY_CHECK_SECONDS = 300.0
# A credential chosen by a tool (the ops CLI signs in as the operator, not as the app's managed identity).
_credential_override: Any = None


class StorageSettingError(RuntimeError):
    """``AzureWebJobsStorage`` holds a connection string no storage client can use (not ``Name=value`` pairs, no
    account or endpoint, an ``AccountKey`` that is not base64, no key or SAS). Storage trouble like any other
    (:func:`is_storage_error`: webhooks answer 503, sends retry), logged once per process by
    :func:`connection_string`; the message names the setting and the problem, never a value from it."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"setting AzureWebJobsStorage is not a usable storage connection string: {problem}")
        self.problem = problem


def connection_string() -> str:
    """``AzureWebJobsStorage`` as a connection string ('' = identity-based settings); raises
    :class:`StorageSettingError` when it is one no client can use."""
    raw = get_settings().storage_connection
    if raw.replace(" ", "").lower() == "usedevelopmentstorage=true":
        return DEVELOPMENT_CONNECTION
    if raw:
        problem = connection_problem(raw)
        if problem:
            _report_unusable_once(problem)
            raise StorageSettingError(problem)
    return raw


def connection_problem(connection: str) -> str:
    """Why the storage SDKs (and the point client) cannot use ``connection``, or '' when they can. The answer
    never quotes the string: it may hold the account key."""
    import base64
    import binascii

    items = connection.strip().rstrip(";").split(";")
    if not all("=" in item for item in items):
        return "it is not a list of Name=value pairs separated by ';'"
    parts = {name.strip().lower(): value.strip() for name, _, value in (i.partition("=") for i in items)}
    endpoints = ("queueendpoint", "tableendpoint")
    if not parts.get("accountname") and not all(parts.get(name) for name in endpoints):
        return "it names no AccountName (nor both a QueueEndpoint and a TableEndpoint)"
    if parts.get("accountkey"):
        try:
            base64.b64decode(parts["accountkey"], validate=True)
        except (binascii.Error, ValueError):
            return "its AccountKey is not base64 (copy the key again from the storage account's Access keys)"
        return ""
    if not parts.get("sharedaccesssignature"):
        return "it has neither an AccountKey nor a SharedAccessSignature"
    return ""


_reported_problems: set[str] = set()
_reported_lock = threading.Lock()  # not _lock: client creation holds that one while reading the setting


def _report_unusable_once(problem: str) -> None:
    with _reported_lock:
        if problem in _reported_problems:
            return
        _reported_problems.add(problem)
    log.error("setting AzureWebJobsStorage is not a usable storage connection string: %s; every storage call "
              "fails (webhooks answer 503, queue messages are retried) until it is fixed", problem)


def _identity_endpoint(service: str) -> str:
    prefix = "AzureWebJobsStorage__"
    uri = os.environ.get(f"{prefix}{service}ServiceUri", "")
    if uri:
        return uri
    account = os.environ.get(f"{prefix}accountName", "")
    if account:
        return f"https://{account}.{service}.core.windows.net"
    raise MissingSettingError("AzureWebJobsStorage")


def use_credential(credential: Any) -> None:
    """Make identity-based clients use ``credential`` (e.g. the operator's ``az login``) instead of the app's."""
    global _credential_override
    _credential_override = credential
    reset_clients()


def _credential() -> Any:
    if _credential_override is not None:
        return _credential_override
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = os.environ.get("AzureWebJobsStorage__clientId") or get_settings().azure_client_id
    return ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()


def _service(kind: str) -> Any:
    key = ("service", kind)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _make_service(kind)
            _clients[key] = client
    return client


HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


def _make_service(kind: str) -> Any:
    conn = connection_string()
    from .transport import azure_transport

    http_log = logging.getLogger(HTTP_LOGGER)
    if http_log.level == logging.NOTSET:  # a level set on purpose (debugging) is left alone
        http_log.setLevel(logging.WARNING)

    # One pooled session per service, proxy/CA settings read once (shared.transport).
    options: dict[str, Any] = {"transport": azure_transport(connection_timeout=STORAGE_TIMEOUT_SECONDS,
                                                            read_timeout=STORAGE_TIMEOUT_SECONDS)}
    if kind == "table":
        options.update(table_retry_options())
        from azure.data.tables import TableServiceClient

        if conn:
            return TableServiceClient.from_connection_string(conn, **options)
        return TableServiceClient(endpoint=_identity_endpoint("table"), credential=_credential(), **options)
    from azure.storage.queue import QueueServiceClient

    if conn:
        return QueueServiceClient.from_connection_string(conn, **options)
    return QueueServiceClient(account_url=_identity_endpoint("queue"), credential=_credential(), **options)


def _refuse_long_retry_after(pipeline_response: Any) -> None:
    """Per-response hook (inside the SDK's retry loop): a ``Retry-After`` longer than a worker thread should sleep
    ends the call now with the throttling error, so the queue message comes back later instead."""
    from azure.core.exceptions import HttpResponseError

    response = pipeline_response.http_response
    after = response.headers.get("Retry-After")
    if response.status_code >= 400 and after:
        try:
            seconds = float(after)
        except ValueError:
            return  # an HTTP date: azure-core parses it; such waits are short in practice
        if seconds > STORAGE_RETRY_AFTER_MAX_SECONDS:
            raise HttpResponseError(message=f"storage busy, Retry-After {after} s", response=response)


def table_retry_options() -> dict[str, Any]:
    """Options for the tables SDK's retry policy (azure-core's RetryPolicy, which honours ``Retry-After``)."""
    return {"retry_total": STORAGE_RETRIES, "retry_status": STORAGE_RETRIES,
            "retry_backoff_factor": STORAGE_BACKOFF_SECONDS, "retry_backoff_max": STORAGE_BACKOFF_MAX_SECONDS,
            "raw_response_hook": _refuse_long_retry_after}


def table(name: str) -> Any:
    """The ``TableClient`` for ``name``: one per table per process, sharing the service's pooled session; the
    table is created on first use."""
    key = ("table", name)
    client = _clients.get(key)
    if client is None:
        service = _service("table")
        service.create_table_if_not_exists(name)
        client = _clients.setdefault(key, service.get_table_client(name))
    return client


def write_if_unchanged(table_name: str, existing: Any, entity: dict[str, Any]) -> bool:
    """Insert ``entity`` when ``existing`` is None, else MERGE it over ``existing`` only if that row is unchanged
    since it was read (its etag). False when another writer got there first: re-read and decide again. The one
    primitive behind every shared counter (guardrails, pacing)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import UpdateMode

    client = table(table_name)
    try:
        if existing is None:
            client.create_entity(entity)
        else:
            client.update_entity(entity, mode=UpdateMode.MERGE, etag=existing.metadata["etag"],
                                 match_condition=MatchConditions.IfNotModified)
        return True
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        return False


def queue(name: str) -> Any:
    """A ``QueueClient`` for ``name``, made once per process; the queue is created on first use."""
    from azure.core.exceptions import ResourceExistsError

    key = ("queue", name)
    client = _clients.get(key)
    if client is None:
        client = _service("queue").get_queue_client(name)
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        client = _clients.setdefault(key, client)
    return client


def short_lived_queue(name: str, *, timeout_seconds: float = 3, retries: int = 1) -> Any:
    """A fresh, uncached ``QueueClient`` with tight timeouts and few, short retries, for a one-shot process (the
    enqueue CLI): the SDK's defaults (3 retries from 15 s back-off) make a user wait ~90 s for "unreachable"."""
    from azure.storage.queue import ExponentialRetry, QueueClient

    options: dict[str, Any] = {"connection_timeout": timeout_seconds, "read_timeout": timeout_seconds,
                               "retry_policy": ExponentialRetry(initial_backoff=0, increment_base=1,
                                                                retry_total=retries, random_jitter_range=0)}
    conn = connection_string()
    if conn:
        return QueueClient.from_connection_string(conn, name, **options)
    return QueueClient(account_url=_identity_endpoint("queue"), queue_name=name, credential=_credential(), **options)


def storage_reachable() -> bool:
    """Cheap round trip to the table service (used by /api/health), with no retries.

    Listing tables needs only the data role the app already has (Storage Table Data Contributor), unlike
    service-properties calls, so a green check in Azure means what the app itself can do.
    """
    try:
        tables = _service("table").query_tables("TableName eq 'optouts'", results_per_page=1, retry_total=0)
        next(iter(tables.by_page()), None)
        return True
    except Exception:  # noqa: BLE001 - health reports any failure as unreachable
        return False


def reset_clients() -> None:
    """Forget clients (tests point the app at a fresh Azurite)."""
    with _lock:
        _clients.clear()
        _legacy_rows.clear()
    with _reported_lock:
        _reported_problems.clear()


def partition_has_rows(table_name: str, partition: str, *, fresh: bool = False) -> bool:
    """Whether ``partition`` of ``table_name`` holds any row, asked at most every ``LEGACY_CHECK_SECONDS`` per
    process (``fresh`` asks now). The ledger and the opt-out list use it to skip reading the layout written before
    partitions were spread (one partition per kind) once that layout is empty: migrated, or never used."""
    import time

    key = (table_name, partition)
    now = time.monotonic()
    cached = _legacy_rows.get(key)
    if cached is not None and not fresh and now - cached[0] < LEGACY_CHECK_SECONDS:
        return cached[1]
    pages = table(table_name).query_entities("PartitionKey eq @pk", parameters={"pk": partition},
                                             select=["RowKey"], results_per_page=1).by_page()
    present = any(True for _ in next(iter(pages), []))
    _legacy_rows[key] = (now, present)
    return present


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from an Azure SDK call (storage down, throttled, …) or from an unusable
    ``AzureWebJobsStorage`` (:class:`StorageSettingError`): transient for callers."""
    if isinstance(exc, StorageSettingError):
        return True
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError)


def transient_reason(exc: BaseException) -> str:
    """One line for a transient storage failure: ``storage busy: 503 ServerBusy, Retry-After 30 s`` (Storage's
    backpressure: retry later, never resend blindly), or ``storage unavailable: <error class>``."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    if status in (429, 500, 503):
        headers = response.headers if response is not None else {}
        code = getattr(exc, "error_code", None) or headers.get("x-ms-error-code") or ""
        after = headers.get("Retry-After")
        return f"storage busy: {status} {code}".rstrip() + (f", Retry-After {after} s" if after else "")
    return f"storage unavailable: {type(exc).__name__}"
