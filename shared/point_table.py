"""Point reads and writes on one table for a fraction of the SDK's CPU: what every send and status callback makes.

Why this exists: a send makes four point operations (opt-out read, claim, record, SID index). Through
``azure.data.tables.TableClient`` each costs ~1.8 ms of CPU with 16 threads in flight (azure-core's pipeline of
policies, the generated serializer, then requests), where the HTTP exchange itself costs ~0.4 ms on urllib3:
the SDK made a send cost ~7x a bare Twilio POST (bench.outbound). :class:`PointTableClient` does only the point
operations, with the SDK's method names, arguments, return values and azure-core exceptions
(:func:`shared.storage.point_table` hands it out), plus creating the table and asking whether a partition has rows,
so that a send never loads the tables SDK. Listings, batches and the ops CLI stay with the SDK.

What it keeps from the SDK, on purpose:
- Authentication for the same settings: SharedKeyLite for a connection string with an account key (Azurite, local
  runs), the connection string's SAS token, or a bearer token from the app's credential (identity-based
  ``AzureWebJobsStorage__*`` in Azure), renewed five minutes before it expires.
- Retries as configured in ``shared.storage`` for azure-core's RetryPolicy: a connection that could not be made is
  retried; a lost answer is retried for reads only; 408/429/500/502/503/504 are retried for reads, and 500/503/504
  for writes. ``Retry-After`` (seconds, ms or a date) is honoured, and one longer than
  ``STORAGE_RETRY_AFTER_MAX_SECONDS`` ends the call at once so the queue brings the message back later.
- Entity types: str, bool, int (Int32, or Int64 with its annotation), float, datetime (Edm.DateTime, UTC), bytes,
  UUID; values come back as the same Python types, ``Timestamp`` and the etag in ``entity.metadata``.
- Proxy and CA settings from ``shared.transport`` (read once per process).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote, urlsplit

API_VERSION = "2019-02-02"
USER_AGENT = "switchboard-point-table"
STORAGE_SCOPE = "https://storage.azure.com/.default"
TOKEN_RENEW_SECONDS = 300
_INT32 = range(-(2**31), 2**31)
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_WRITE_RETRY_STATUSES = frozenset({500, 503, 504})  # azure-core retries a POST/PATCH on these only


class Entity(dict):
    """A table row as a dict, with ``metadata`` (``etag``, ``timestamp``) beside it, as the SDK's TableEntity."""

    def __init__(self, values: Mapping[str, Any] = (), metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(values)
        self.metadata: dict[str, Any] = dict(metadata or {})


@dataclass(frozen=True)
class TableAccount:
    """Where a table service is and how to sign for it: the table endpoint (no trailing slash), the account name,
    and one of an account key, a SAS token, or a credential with ``get_token``."""

    endpoint: str
    account: str
    key: bytes = b""
    sas: str = ""
    credential: Any = None


class UnsupportedConnectionError(ValueError):
    """The connection string has neither an account key nor a SAS token (the SDK refuses it too)."""


def account_from_connection_string(connection: str) -> TableAccount:
    """Parse a storage connection string (keys case-insensitive, as the SDK reads them)."""
    parts: dict[str, str] = {}
    for item in connection.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts[name.strip().lower()] = value.strip()
    account = parts.get("accountname", "")
    endpoint = parts.get("tableendpoint", "")
    if not endpoint and account:
        protocol = parts.get("defaultendpointsprotocol", "https")
        endpoint = f"{protocol}://{account}.table.{parts.get('endpointsuffix', 'core.windows.net')}"
    if not endpoint:
        raise UnsupportedConnectionError("no TableEndpoint and no AccountName")
    if not account:
        account = (urlsplit(endpoint).hostname or "").split(".")[0]
    sas = parts.get("sharedaccesssignature", "").lstrip("?")
    if parts.get("accountkey"):
        try:
            key = base64.b64decode(parts["accountkey"], validate=True)
        except ValueError:
            raise UnsupportedConnectionError("AccountKey is not base64") from None
        return TableAccount(endpoint.rstrip("/"), account, key=key)
    if sas:
        return TableAccount(endpoint.rstrip("/"), account, sas=sas)
    raise UnsupportedConnectionError("neither AccountKey nor SharedAccessSignature")


# ---------------------------------------------------------------- entity encoding


def _encode(entity: Mapping[str, Any]) -> bytes:
    """JSON for the Table service, with the ``@odata.type`` annotations the SDK writes for the same values."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        if value is None:
            continue
        if isinstance(value, bool) or isinstance(value, str):
            out[name] = value
        elif isinstance(value, int):
            if value in _INT32:
                out[name] = value
            else:
                out[name], out[f"{name}@odata.type"] = str(value), "Edm.Int64"
        elif isinstance(value, float):
            if math.isfinite(value):
                out[name] = value
            else:
                out[name] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
                out[f"{name}@odata.type"] = "Edm.Double"
        elif isinstance(value, datetime):
            utc = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
            out[name], out[f"{name}@odata.type"] = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "Edm.DateTime"
        elif isinstance(value, (bytes, bytearray)):
            out[name], out[f"{name}@odata.type"] = base64.b64encode(value).decode("ascii"), "Edm.Binary"
        elif isinstance(value, uuid.UUID):
            out[name], out[f"{name}@odata.type"] = str(value), "Edm.Guid"
        else:
            raise TypeError(f"table property {name!r}: {type(value).__name__} is not a type a table can store")
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def parse_datetime(text: str) -> datetime:
    """An Edm.DateTime as the service writes it (``2026-11-28T22:58:23.5881234Z``: up to 7 fraction digits)."""
    main, _, fraction = text.rstrip("Z").partition(".")
    value = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return value.replace(microsecond=int((fraction + "000000")[:6])) if fraction else value


def _decode(document: Mapping[str, Any], etag: str) -> Entity:
    values: dict[str, Any] = {}
    types = {name[: -len("@odata.type")]: kind for name, kind in document.items() if name.endswith("@odata.type")}
    for name, value in document.items():
        if name.startswith("odata.") or name.endswith("@odata.type") or name == "Timestamp":
            continue
        kind = types.get(name)
        if kind == "Edm.DateTime":
            value = parse_datetime(value)
        elif kind == "Edm.Int64":
            value = int(value)
        elif kind == "Edm.Double":
            value = float(value)
        elif kind == "Edm.Binary":
            value = base64.b64decode(value)
        elif kind == "Edm.Guid":
            value = uuid.UUID(value)
        values[name] = value
    metadata: dict[str, Any] = {"etag": etag or document.get("odata.etag", "")}
    if isinstance(document.get("Timestamp"), str):
        metadata["timestamp"] = parse_datetime(document["Timestamp"])
    return Entity(values, metadata)


def _odata_string(value: str) -> str:
    """``value`` inside an OData string literal ``'…'``: single quotes doubled."""
    return value.replace("'", "''")


def _key(value: str) -> str:
    """A PartitionKey / RowKey inside ``table(PartitionKey='…',RowKey='…')``: an OData string, URL-escaped."""
    return quote(_odata_string(value), safe="")


# ---------------------------------------------------------------- the client


class _Response:
    """What azure-core's exceptions read from a response (status, reason, headers, text)."""

    def __init__(self, status: int, reason: str, headers: Any, body: bytes) -> None:
        self.status_code = status
        self.reason = reason
        self.headers = headers
        self.content_type = headers.get("Content-Type", "")
        self._body = body

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode(encoding or "utf-8", "replace")


class PointTableClient:
    """``get_entity``, ``create_entity``, ``update_entity``, ``upsert_entity``, ``delete_entity`` on one table,
    as ``azure.data.tables.TableClient`` has them (keyword ``mode`` takes ``UpdateMode`` or ``"merge"`` /
    ``"replace"``; ``match_condition`` takes ``MatchConditions``)."""

    def __init__(self, account: TableAccount, table_name: str, *, pool: Any, retries: int, backoff_seconds: float,
                 backoff_max_seconds: float, retry_after_max_seconds: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.account = account
        self.table_name = table_name
        self._pool = pool
        self._base_path = urlsplit(account.endpoint).path.rstrip("/")  # "/devstoreaccount1" on Azurite, "" in Azure
        self._retries = retries
        self._backoff = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self._retry_after_max = retry_after_max_seconds
        self._sleep = sleep
        self._token: Any = None
        self._token_lock = threading.Lock()

    # ------------------------------------------------------------ the SDK's point operations

    def get_entity(self, partition_key: str, row_key: str, *, select: Iterable[str] | None = None,
                   **_: Any) -> Entity:
        query = f"$select={quote(','.join(select), safe=',')}" if select else ""
        response = self._call("GET", self._entity_path(partition_key, row_key), query=query)
        return _decode(json.loads(response.data), response.headers.get("ETag", ""))

    def create_entity(self, entity: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        response = self._call("POST", f"/{self.table_name}", body=_encode(entity),
                              headers={"Prefer": "return-no-content"})
        return self._metadata(response)

    def update_entity(self, entity: Mapping[str, Any], mode: Any = "merge", *, etag: str | None = None,
                      match_condition: Any = None, **_: Any) -> dict[str, Any]:
        headers = {"If-Match": etag if (etag and _is_if_not_modified(match_condition)) else "*"}
        return self._write(entity, mode, headers)

    def upsert_entity(self, entity: Mapping[str, Any], mode: Any = "merge", **_: Any) -> dict[str, Any]:
        return self._write(entity, mode, {})

    def delete_entity(self, partition_key: str, row_key: str, *, etag: str | None = None,
                      match_condition: Any = None, **_: Any) -> None:
        """Delete a row; a missing row is fine (as the SDK: 404 is swallowed, 412 is raised)."""
        from azure.core.exceptions import ResourceNotFoundError

        headers = {"If-Match": etag if (etag and _is_if_not_modified(match_condition)) else "*"}
        try:
            self._call("DELETE", self._entity_path(partition_key, row_key), headers=headers)
        except ResourceNotFoundError:
            pass

    # ------------------------------------------------------------ the table itself

    def create_table(self) -> bool:
        """Create the table; False when it exists already (the SDK's ``create_table_if_not_exists``)."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self._call("POST", "/Tables", body=json.dumps({"TableName": self.table_name}).encode("utf-8"),
                       headers={"Prefer": "return-no-content"})
            return True
        except ResourceExistsError:
            return False

    def partition_has_rows(self, partition_key: str) -> bool:
        """Whether any row has ``partition_key`` (a query for one RowKey, answered from that partition only)."""
        condition = f"PartitionKey eq '{_odata_string(partition_key)}'"
        response = self._call("GET", f"/{self.table_name}()",
                              query=f"$filter={quote(condition, safe='')}&$top=1&$select=RowKey")
        return bool(json.loads(response.data).get("value"))

    # ------------------------------------------------------------ plumbing

    def _write(self, entity: Mapping[str, Any], mode: Any, headers: dict[str, str]) -> dict[str, Any]:
        method = "PUT" if str(getattr(mode, "value", mode)).lower() == "replace" else "PATCH"
        path = self._entity_path(str(entity["PartitionKey"]), str(entity["RowKey"]))
        return self._metadata(self._call(method, path, body=_encode(entity), headers=headers))

    def _entity_path(self, partition_key: str, row_key: str) -> str:
        return f"/{self.table_name}(PartitionKey='{_key(partition_key)}',RowKey='{_key(row_key)}')"

    @staticmethod
    def _metadata(response: Any) -> dict[str, Any]:
        return {"etag": response.headers.get("ETag", ""), "date": response.headers.get("Date", "")}

    def _headers(self, path: str, extra: Mapping[str, str], has_body: bool) -> dict[str, str]:
        date = email.utils.formatdate(usegmt=True)
        headers = {"x-ms-date": date, "x-ms-version": API_VERSION, "DataServiceVersion": "3.0",
                   "Accept": "application/json;odata=minimalmetadata", "User-Agent": USER_AGENT, **extra}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.account.key:
            signed = f"{date}\n/{self.account.account}{self._base_path}{path}".encode("utf-8")
            signature = base64.b64encode(hmac.new(self.account.key, signed, hashlib.sha256).digest()).decode()
            headers["Authorization"] = f"SharedKeyLite {self.account.account}:{signature}"
        elif self.account.credential is not None:
            headers["Authorization"] = f"Bearer {self._bearer_token()}"
        return headers

    def _bearer_token(self) -> str:
        token = self._token
        if token is None or token.expires_on - TOKEN_RENEW_SECONDS < time.time():
            with self._token_lock:
                token = self._token
                if token is None or token.expires_on - TOKEN_RENEW_SECONDS < time.time():
                    token = self._token = self.account.credential.get_token(STORAGE_SCOPE)
        return token.token

    def _call(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> Any:
        """One request with the retries described in the module docstring; raises azure-core's exceptions."""
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        from .transport import TransportError

        target = f"{self._base_path}{path}"
        params = "&".join(p for p in (query, self.account.sas) if p)
        if params:
            target = f"{target}?{params}"
        reads = method in ("GET", "HEAD")
        attempt = 0
        while True:
            try:
                response = self._pool.request(method, target, body=body,
                                              headers=self._headers(path, headers or {}, body is not None))
            except TransportError as exc:
                # Not connected: always safe to retry. Answer lost after the request went out: a write may have
                # happened, so only a read is retried (as azure-core does).
                if attempt >= self._retries or (exc.sent and not reads):
                    cls = ServiceResponseError if exc.sent else ServiceRequestError
                    raise cls(f"storage {'answer lost' if exc.sent else 'unreachable'}: {exc}", error=exc) from exc
                self._sleep(self._backoff_for(attempt))
                attempt += 1
                continue
            if response.status < 400:
                return response
            retryable = response.status in (_RETRY_STATUSES if reads else _WRITE_RETRY_STATUSES)
            wait = self._retry_after(response)
            if not retryable or attempt >= self._retries or (wait is not None and wait > self._retry_after_max):
                raise _error(response)
            self._sleep(wait if wait is not None else self._backoff_for(attempt))
            attempt += 1

    def _backoff_for(self, attempt: int) -> float:
        """azure-core's back-off: the first retry at once, then ``backoff * 2**n`` up to the maximum."""
        return 0.0 if attempt == 0 else min(self._backoff_max, self._backoff * 2 ** attempt)

    @staticmethod
    def _retry_after(response: Any) -> float | None:
        for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001)):
            if response.headers.get(name):
                try:
                    return float(response.headers[name]) * scale
                except ValueError:
                    pass
        after = response.headers.get("Retry-After")
        if not after:
            return None
        try:
            return max(0.0, float(after))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(after)
            except (TypeError, ValueError):
                return None
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _is_if_not_modified(match_condition: Any) -> bool:
    return getattr(match_condition, "name", str(match_condition)) == "IfNotModified"


def _error(response: Any) -> Exception:
    """The azure-core exception the SDK raises for this answer, with the service's error code and message."""
    from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                       ResourceNotFoundError)

    answer = _Response(response.status, response.reason or "", response.headers, response.data or b"")
    code = response.headers.get("x-ms-error-code", "")
    detail = ""
    try:
        error = json.loads(answer.text()).get("odata.error", {})
        code = code or str(error.get("code", ""))
        detail = str((error.get("message") or {}).get("value", "")).split("\n")[0]
    except (ValueError, AttributeError):
        pass
    cls = {404: ResourceNotFoundError, 409: ResourceExistsError, 412: ResourceModifiedError}.get(
        response.status, HttpResponseError)
    message = f"{response.status} {code or answer.reason}" + (f": {detail}" if detail else "")
    exc = cls(message=message, response=answer)
    exc.error_code = code
    return exc
