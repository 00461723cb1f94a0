"""An HTTP fake of Twilio's Messages.json and Calls.json create endpoints: the tests' Twilio, and the offline
Twilio that ``make run`` starts (``python -m devhost.twilio_fake``).

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` and ``Calls.json`` on 127.0.0.1 (free port).
- Records every request (parsed form with repeated keys, e.g. several ``MediaUrl``), checks basic auth.
- Answers 201 with bodies shaped like Twilio's OpenAPI spec (``api.v2010.account.message`` / ``.call``).
- Injects faults per request (``fail_next``) or by probability (``fault_rate``): 429/20429, 500, 400/21211,
  400/21610, 401/20003, a slow answer past the client's timeout (the message is created at once and answered
  late, as Twilio would),
  a connection reset before anything is processed, and a 5xx answer *after* the resource was created
  (``500-created``, ``503-created``: Twilio's edge can fail after the create went through). ``fail_when`` scripts
  faults for the requests a predicate picks (e.g. one recipient's), whatever order concurrent requests arrive in.
- Posts signed status callbacks (twilio's ``RequestValidator.compute_signature``) to a URL you give.
- Lists what it created, as Twilio does for reconciliation: ``GET Messages.json`` (``To``, ``From``, ``DateSent``,
  ``DateSent<``, ``DateSent>``) and ``GET Calls.json`` (``To``, ``From``, ``Status``, ``StartTime`` and its
  ``<``/``>`` forms), newest first, paged with ``PageSize`` / ``Page`` / ``PageToken`` and ``next_page_uri``.
  ``list_lag`` hides a new resource from lists for that many seconds (Twilio's lists are eventually consistent);
  ``fail_lists_next`` makes the next list reads answer 500, 429 or hang (``slow``).
- Checks the channel parameters as the spec describes them (:data:`PARAMETER_RULES`: ``ContentSid``,
  ``ContentVariables``, ``MachineDetection``, ``AsyncAmd``…) and answers 400 to a value outside them, updates a
  live call's TwiML (``POST Calls/{CallSid}.json``, 21220 once the call has ended: :meth:`TwilioFake.end_call`)
  and posts signed asynchronous AMD callbacks (:meth:`TwilioFake.post_amd_callback`).
"""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from twilio.request_validator import RequestValidator

from .ports import free_port

FAULTS = ("429", "500", "21211", "21610", "21614", "21408", "401", "slow", "reset", "500-created", "503-created")
TRANSIENT_FAULTS = ("429", "500", "reset")

_ERRORS = {
    "429": (429, 20429, "Too Many Requests"),
    "500": (500, 20500, "Internal Server Error"),
    "503": (503, 20503, "Service Unavailable"),
    "21211": (400, 21211, "The 'To' number is not a valid phone number."),
    "21610": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "21614": (400, 21614, "'To' number is not a valid mobile number"),
    "21408": (400, 21408, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"),
    "401": (401, 20003, "Authenticate"),
    "21611": (400, 21611, "This 'From' number has exceeded the maximum number of queued messages"),
}

# What a local user sees each fault do (``python -m devhost.twilio_fake fail --help``, README "Trying the outcomes").
FAULT_MEANINGS = {
    "429": "429 / 20429 Too Many Requests: nothing sent; retried after the queue's visibility timeout",
    "500": "500 / 20500, nothing created: in doubt; the next try reads Twilio's list back and sends it again once "
           "the settle window (RECONCILE_SETTLE_SECONDS) passed with nothing found",
    "21211": "400 / 21211 not a valid 'To' number: dead-lettered as twilio_rejected, not retried",
    "21610": "400 / 21610 recipient unsubscribed at the carrier: dead-lettered as twilio_rejected, not retried",
    "21614": "400 / 21614 not a mobile number: dead-lettered as twilio_rejected, not retried",
    "21408": "400 / 21408 region not enabled on the account: dead-lettered as twilio_rejected, not retried",
    "401": "401 / 20003: the app re-reads its secret and tries once more (--count 2: dead-lettered)",
    "slow": "created at once, answered after the app's timeout (TWILIO_HTTP_TIMEOUT_SECONDS): in doubt; its status "
            "callback or the read-back records it, never sent twice",
    "reset": "connection reset before anything was created: in doubt; read back, sent again after the settle window",
    "500-created": "created, then answered 500: in doubt; its status callback or the read-back records it, never "
                   "sent twice",
    "503-created": "created, then answered 503: as 500-created",
}
# GET on this path answers who the fake is (``make run`` reuses a fake on its port only when it answers this);
# POST on FAULTS_PATH queues faults for the next creates (``python -m devhost.twilio_fake fail``).
FINGERPRINT_PATH = "/_switchboard/twilio-fake"
FAULTS_PATH = "/_switchboard/twilio-fake/faults"
FINGERPRINT = "switchboard-twilio-fake"


# Values the spec allows for the channel parameters (twilio_api_v2010.json: a pattern, an enum, or "Can be: `a` or
# `b`" in the description; tests/integration/test_twilio_contract.py checks these against the spec itself).
PARAMETER_RULES: dict[str, Callable[[str], bool]] = {
    "ContentSid": lambda v: re.fullmatch(r"HX[0-9a-fA-F]{32}", v) is not None,
    "ContentVariables": lambda v: _json_object_of_strings(v),
    "MachineDetection": lambda v: v in ("Enable", "DetectMessageEnd"),
    "AsyncAmd": lambda v: v in ("true", "false"),
    "AsyncAmdStatusCallback": lambda v: urlsplit(v).scheme in ("http", "https") and bool(urlsplit(v).netloc),
    "AsyncAmdStatusCallbackMethod": lambda v: v in ("GET", "POST"),
}


def _json_object_of_strings(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


@dataclass
class Recorded:
    """One request as the fake saw it, and what it answered."""

    kind: str                    # "sms" | "call"
    account_sid: str
    form: dict[str, list[str]]
    username: str
    answered: int = 0            # HTTP status (0 = connection reset)
    sid: str = ""
    fault: str = ""
    created_anyway: bool = False  # answered 5xx after the resource was created (faults ``500-created`` …)
    submitted_at: float = 0.0     # monotonic time the create was accepted into a modelled sender queue

    def first(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    @property
    def send_id(self) -> str:
        """The ``id`` in the StatusCallback URL (our ledger key)."""
        query = parse_qs(urlsplit(self.first("StatusCallback")).query)
        return query.get("id", [""])[0]

    @property
    def created(self) -> bool:
        return self.answered == 201 or self.created_anyway


@dataclass
class TwilioFake:
    account_sid: str
    credentials: dict[str, str]
    port: int = 0
    fault_rate: float = 0.0
    timeout_rate: float = 0.0    # share of creates accepted at once but answered only after slow_seconds
    fault_choices: tuple[str, ...] = TRANSIENT_FAULTS
    slow_seconds: float = 2.0
    latency_seconds: float = 0.0  # every answer waits this long, as Twilio's API does (~150 ms)
    seed: int = 1234
    list_lag: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    listed: list[dict[str, Any]] = field(default_factory=list)   # creates in order, with when lists show them
    list_reads: list[dict[str, list[str]]] = field(default_factory=list)
    _next_list_faults: list[str] = field(default_factory=list)
    _next_faults: list[str] = field(default_factory=list)
    _scripted: list[tuple[Callable[["Recorded"], bool], list[str]]] = field(default_factory=list)
    # Auto status callbacks: after each create, post ``callback_status`` after ``callback_delay`` seconds, signed
    # with ``callback_token``, to ``callback_deliver_to`` (scheme + host replacing the public URL's).
    callback_status: str = ""            # for messages; set = callbacks on
    callback_call_status: str = "initiated"
    callback_delay: float = 0.0
    callback_token: str = ""
    callback_deliver_to: str | None = None
    callbacks_posted: list[tuple[str, int]] = field(default_factory=list)
    # Per-sender delivery, as Twilio queues it (see "Sender queues" below): messages per second by sender (a From
    # number or a MessagingServiceSid; ``default_mps`` for the rest, 0 = not modelled), the queue's depth limit in
    # seconds of sending (past it: 21611 for a number, a later 30001 for a service), and the account's concurrency.
    sender_mps: dict[str, float] = field(default_factory=dict)
    default_mps: float = 0.0
    queue_limit_seconds: float = 36_000.0
    concurrency_limit: int = 0
    sender_queues: dict[str, dict[str, float]] = field(default_factory=dict)
    overflow_30001: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _rng: random.Random = field(default_factory=random.Random)
    # Created messages/calls by SID, and the account's phone numbers (see "Read-back and phone numbers" below).
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    phone_numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Called once per Messages/Calls create request, after it was answered (the local runs' report and callback).
    on_create: Callable[["Recorded"], None] | None = None

    # ------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, *faults: str) -> None:
        """The next requests get these faults, in order (then normal answers again)."""
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; choose from {FAULTS}")
        with self._lock:
            self._next_faults.extend(faults)

    def fail_when(self, match: Callable[["Recorded"], bool], *faults: str) -> None:
        """The next requests ``match`` picks get these faults, in order (checked before ``fail_next``)."""
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; choose from {FAULTS}")
        with self._lock:
            self._scripted.append((match, list(faults)))

    def fail_lists_next(self, *faults: str) -> None:
        """The next list reads get these faults (``429``, ``500``, ``slow``), in order."""
        unknown = [f for f in faults if f not in ("429", "500", "slow")]
        if unknown:
            raise ValueError(f"unknown list faults {unknown}")
        with self._lock:
            self._next_list_faults.extend(faults)

    def created(self, kind: str | None = None) -> list[Recorded]:
        """Every request that created a message or call (answered 201, or created and then answered 5xx)."""
        with self._lock:
            return [r for r in self.requests if r.created and (kind is None or r.kind == kind)]

    def _post_later(self, record: "Recorded") -> None:
        time.sleep(self.callback_delay)  # a stand-in for Twilio's own delay before a status callback
        try:
            status = self.callback_status if record.kind == "sms" else self.callback_call_status
            answer = self.post_status_callback(record, status, token=self.callback_token,
                                               deliver_to=self.callback_deliver_to).status_code
        except requests.RequestException:
            answer = 0
        with self._lock:
            self.callbacks_posted.append((record.sid, answer))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.resources.clear()
            self.listed.clear()
            self.list_reads.clear()
            self._next_faults.clear()
            self._scripted.clear()
            self._next_list_faults.clear()
            self.fault_rate = 0.0

    def _pick_fault(self, record: "Recorded | None" = None) -> str:
        with self._lock:
            for match, faults in self._scripted:
                if faults and record is not None and match(record):
                    return faults.pop(0)
            if self._next_faults:
                return self._next_faults.pop(0)
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_choices)
            if self.timeout_rate and self._rng.random() < self.timeout_rate:
                return "slow"
        return ""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "TwilioFake":
        fake = self
        self._rng.seed(self.seed)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                if urlsplit(self.path).path == FAULTS_PATH:
                    fake._handle_fault_control(self)
                else:
                    fake._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                if urlsplit(self.path).path == FINGERPRINT_PATH:
                    fake._json(self, 200, fake.fingerprint())
                elif urlsplit(self.path).path.endswith(("/Messages.json", "/Calls.json")):
                    fake._handle_get(self)
                else:
                    fake._handle_more(self, "GET", b"")

        self.port = self.port or free_port()
        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="twilio-fake", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------ requests

    def fingerprint(self) -> dict[str, Any]:
        """Who this fake is: what ``make run`` checks before reusing a server on the Twilio fake's port."""
        import os

        with self._lock:
            pending = list(self._next_faults)
        return {"fake": FINGERPRINT, "account_sid": self.account_sid, "pid": os.getpid(), "pending_faults": pending}

    def _handle_fault_control(self, h: BaseHTTPRequestHandler) -> None:
        """``POST FAULTS_PATH`` with ``fault=21610&count=2`` (queued for the next creates) or ``clear=1``."""
        length = int(h.headers.get("Content-Length") or 0)
        form = parse_qs(h.rfile.read(length).decode("utf-8", "replace") if length else "")
        try:
            if form.get("clear"):
                with self._lock:
                    self._next_faults.clear()
            for fault in form.get("fault", []):
                count = int(form.get("count", ["1"])[0])
                if not 1 <= count <= 1000:
                    raise ValueError("count must be 1-1000")
                self.fail_next(*[fault] * count)
        except ValueError as exc:
            return self._json(h, 400, {"error": str(exc), "faults": list(FAULTS)})
        self._json(h, 200, self.fingerprint())

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        record = self._handle_create(h)
        if record is not None and self.on_create is not None:
            self.on_create(record)

    def _handle_create(self, h: BaseHTTPRequestHandler) -> Recorded | None:
        """Answer one POST; the create's record (None for other requests)."""
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if len(raw) < length:
            h.close_connection = True  # the client died mid-request: Twilio would create nothing
            return None
        parts = urlsplit(h.path).path.strip("/").split("/")
        # 2010-04-01 / Accounts / {sid} / Messages.json
        if len(parts) != 4 or parts[0] != "2010-04-01" or parts[1] != "Accounts" or \
                parts[3] not in ("Messages.json", "Calls.json"):
            return self._handle_more(h, "POST", raw)
        kind = "sms" if parts[3] == "Messages.json" else "call"
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        username, password = _basic_auth(h.headers.get("Authorization", ""))
        record = Recorded(kind, parts[2], form, username)
        with self._lock:
            self.requests.append(record)
        self._answer_create(h, record, password)
        return record

    def _answer_create(self, h: BaseHTTPRequestHandler, record: Recorded, password: str) -> None:
        kind, form = record.kind, record.form
        if self.credentials.get(record.username) != password or record.account_sid != self.account_sid:
            return self._error(h, record, "401")
        with self._lock:
            self._in_flight += 1
            too_many = bool(self.concurrency_limit) and self._in_flight > self.concurrency_limit
        try:
            if too_many:
                return self._error(h, record, "429")
            self._create(h, record, kind, form)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _create(self, h: BaseHTTPRequestHandler, record: Recorded, kind: str, form: dict[str, list[str]]) -> None:
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        fault = self._pick_fault(record)
        record.fault = fault
        if fault == "reset":
            record.answered = 0
            h.close_connection = True
            sock = h.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return None
        if fault in _ERRORS:
            return self._error(h, record, fault)
        invalid = [name for name, ok in PARAMETER_RULES.items() if name in form and not ok(form[name][0])]
        if invalid or ("ContentVariables" in form and "ContentSid" not in form):
            record.answered = 400
            return self._json(h, 400, {"code": 21656 if invalid[:1] == ["ContentVariables"] else 20001,
                                       "message": f"Invalid parameter: {(invalid or ['ContentVariables'])[0]}",
                                       "more_info": "https://www.twilio.com/docs/errors/20001", "status": 400})
        if kind == "sms" and not self._enqueue_for_delivery(record):
            return self._error(h, record, "21611")
        body = self._message(record) if kind == "sms" else self._call(record)
        record.sid, record.answered = body["sid"], 201
        with self._lock:
            self.resources[body["sid"]] = body
            self.listed.append({"kind": kind, "visible_at": time.monotonic() + self.list_lag,
                                "created": time.time(), "body": body})
        if self.callback_status:
            threading.Thread(target=self._post_later, args=(record,), daemon=True).start()
        if fault.endswith("-created"):
            status, code, message = _ERRORS[fault.split("-")[0]]
            record.answered = status  # created all the same: it is in the lists and in created_after_error()
            record.created_anyway = True
            return self._json(h, status, {"code": code, "message": message, "status": status,
                                          "more_info": f"https://www.twilio.com/docs/errors/{code}"})
        if fault == "slow":
            time.sleep(self.slow_seconds)  # accepted (and listed) at once, answered after the client gave up
        try:
            self._json(h, 201, body)
        except OSError:
            pass  # the client gave up (timeout): the resource exists all the same, as on Twilio

    def _handle_get(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        parts = split.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["2010-04-01", "Accounts"] or \
                parts[3] not in ("Messages.json", "Calls.json"):
            return self._json(h, 404, {"code": 20404, "message": "The requested resource was not found",
                                       "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404})
        username, password = _basic_auth(h.headers.get("Authorization", ""))
        if self.credentials.get(username) != password or parts[2] != self.account_sid:
            status, code, message = _ERRORS["401"]
            return self._json(h, status, {"code": code, "message": message, "status": status,
                                          "more_info": f"https://www.twilio.com/docs/errors/{code}"})
        query = parse_qs(split.query, keep_blank_values=True)
        with self._lock:
            self.list_reads.append(query)
            fault = self._next_list_faults.pop(0) if self._next_list_faults else ""
        if fault == "slow":
            time.sleep(self.slow_seconds)
        elif fault:
            status, code, message = _ERRORS[fault]
            return self._json(h, status, {"code": code, "message": message, "status": status,
                                          "more_info": f"https://www.twilio.com/docs/errors/{code}"})
        kind = "sms" if parts[3] == "Messages.json" else "call"
        try:
            page = self._list_page(kind, split.path, query)
        except ValueError:
            return self._json(h, 400, {"code": 20001, "message": "Invalid paging parameter", "status": 400,
                                       "more_info": "https://www.twilio.com/docs/errors/20001"})
        self._json(h, 200, page)

    def _list_page(self, kind: str, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """One page of a Messages / Calls list, newest first, filtered as Twilio filters."""
        def one(name: str) -> str:
            return query.get(name, [""])[0]

        now = time.monotonic()
        with self._lock:
            visible = [r for r in self.listed if r["kind"] == kind and r["visible_at"] <= now]
        visible.sort(key=lambda r: r["created"], reverse=True)
        rows = [r["body"] for r in visible if _list_filter_matches(kind, r["body"], one)]
        size = min(1000, max(1, int(one("PageSize") or 50)))
        page = max(0, int(one("Page") or 0))
        start = page * size
        chunk = rows[start:start + size]
        key = "messages" if kind == "sms" else "calls"
        keep = [(k, v) for k, vs in query.items() if k not in ("Page", "PageSize", "PageToken") for v in vs]

        def uri(n: int) -> str:
            return path + "?" + urlencode(keep + [("PageSize", str(size)), ("Page", str(n)),
                                                  ("PageToken", f"PA{n}")])

        more = start + size < len(rows)
        return {key: chunk, "end": start + len(chunk) - 1 if chunk else start, "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1) if more else None, "page": page, "page_size": size,
                "previous_page_uri": uri(page - 1) if page > 0 else None, "start": start, "uri": uri(page)}

    def _error(self, h: BaseHTTPRequestHandler, record: Recorded, fault: str) -> None:
        status, code, message = _ERRORS[fault]
        record.answered = status
        self._json(h, status, {"code": code, "message": message,
                               "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status})

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _message(self, r: Recorded) -> dict[str, Any]:
        sid = ("MM" if r.form.get("MediaUrl") else "SM") + uuid.uuid4().hex
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": r.first("Body"),
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": r.first("From") or None,
            "messaging_service_sid": r.first("MessagingServiceSid") or None,
            "num_media": str(len(r.form.get("MediaUrl", []))), "num_segments": "1", "price": None,
            "price_unit": "USD", "sid": sid, "status": "queued" if r.first("From") else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"}, "to": r.first("To"), "uri": f"{uri}.json",
        }

    def _call(self, r: Recorded) -> dict[str, Any]:
        sid = "CA" + uuid.uuid4().hex
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}"
        return {
            "account_sid": self.account_sid, "answered_by": None, "api_version": "2010-04-01",
            "caller_name": None, "date_created": now, "date_updated": now, "direction": "outbound-api",
            "duration": None, "end_time": None, "forwarded_from": None, "from": r.first("From"),
            "from_formatted": r.first("From"), "group_sid": None, "parent_call_sid": None,
            "phone_number_sid": "PN" + uuid.uuid4().hex, "price": None, "price_unit": "USD", "sid": sid,
            "start_time": None, "status": "queued", "queue_time": "0", "to": r.first("To"),
            "to_formatted": r.first("To"), "trunk_sid": None, "uri": f"{uri}.json",
            "subresource_uris": {"notifications": f"{uri}/Notifications.json",
                                 "recordings": f"{uri}/Recordings.json", "events": f"{uri}/Events.json"},
        }

    # ------------------------------------------------------------ sender queues
    # Twilio delivers each sender's messages at its rate and holds the rest in a per-sender queue; the depth, in
    # seconds of sending, is what a create adds to. ``sender_queues[sender]`` keeps ``busy_until`` (monotonic),
    # ``peak_seconds``, ``peak_segments``, and ``dry_seconds`` / ``dry_gaps``: how long, in how many gaps, the
    # queue stood empty between its first and its last create (a paced sender's lost sending time).

    def _enqueue_for_delivery(self, record: "Recorded") -> bool:
        sender = record.first("From") or record.first("MessagingServiceSid")
        mps = self.sender_mps.get(sender, self.default_mps)
        if mps <= 0:
            return True
        cost = _segments(record.first("Body"))
        record.submitted_at = time.monotonic()
        with self._lock:
            queue = self.sender_queues.setdefault(sender, {"busy_until": 0.0, "peak_seconds": 0.0,
                                                           "peak_segments": 0.0, "dry_seconds": 0.0,
                                                           "dry_gaps": 0.0})
            now = time.monotonic()
            if 0.0 < queue["busy_until"] < now:
                queue["dry_seconds"] += now - queue["busy_until"]
                queue["dry_gaps"] += 1
            start = max(now, queue["busy_until"])
            if start - now + cost / mps > self.queue_limit_seconds:
                if record.first("From"):
                    return False  # 21611: the number's queue is full
                self.overflow_30001 += 1  # a service accepts it, and the message fails later with 30001
                return True
            queue["busy_until"] = start + cost / mps
            depth = queue["busy_until"] - now
            queue["peak_seconds"] = max(queue["peak_seconds"], depth)
            queue["peak_segments"] = max(queue["peak_segments"], depth * mps)
        return True

    # ------------------------------------------------------------ status callbacks

    def post_status_callback(self, record: Recorded, status: str, *, token: str, deliver_to: str | None = None,
                             error_code: str = "", extra: dict[str, str] | None = None) -> requests.Response:
        """POST Twilio's status callback for ``record`` to its StatusCallback URL, signed with ``token``.

        ``deliver_to`` replaces scheme+host of the URL (the public URL is signed; the app listens on loopback).
        """
        url = record.first("StatusCallback")
        params = {"AccountSid": self.account_sid, "To": record.first("To"), "From": record.first("From"),
                  "ApiVersion": "2010-04-01"}
        if record.kind == "sms":
            params.update(MessageSid=record.sid, SmsSid=record.sid, MessageStatus=status, SmsStatus=status)
        else:
            params.update(CallSid=record.sid, CallStatus=status, Direction="outbound-api")
        if error_code:
            params["ErrorCode"] = error_code
        params.update(extra or {})  # e.g. CallDuration, AnsweredBy
        return _post_signed(url, params, token=token, deliver_to=deliver_to)

    # ------------------------------------------------------------ read-back and phone numbers
    # Kept apart from the create path above: fetch one message/call by SID, list them by ``To`` (used by
    # ``python -m shared.ops poison replay``), and the IncomingPhoneNumbers list/update the azd hook uses.

    def add_phone_number(self, number: str, *, voice_url: str | None = None, sms_url: str | None = None,
                         voice_method: str = "POST", sms_method: str = "POST",
                         voice_application_sid: str | None = None, sms_application_sid: str | None = None,
                         trunk_sid: str | None = None) -> str:
        """Give the account a phone number (as bought in the console); returns its PN SID. An application or trunk
        SID makes Twilio ignore the number's own URLs (as on the real number)."""
        sid = "PN" + uuid.uuid4().hex
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        with self._lock:
            self.phone_numbers[sid] = {
                "account_sid": self.account_sid, "address_requirements": "none", "address_sid": None,
                "api_version": "2010-04-01", "beta": False,
                "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
                "date_created": now, "date_updated": now, "emergency_status": "Inactive",
                "emergency_address_sid": None, "emergency_address_status": "unregistered",
                "friendly_name": number, "identity_sid": None, "origin": "twilio", "phone_number": number,
                "sid": sid, "sms_application_sid": sms_application_sid, "sms_fallback_method": "POST",
                "sms_fallback_url": "", "sms_method": sms_method, "sms_url": sms_url or "", "status_callback": "",
                "status_callback_method": "POST", "trunk_sid": trunk_sid,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/IncomingPhoneNumbers/{sid}.json",
                "voice_application_sid": voice_application_sid, "voice_caller_id_lookup": False,
                "voice_fallback_method": "POST", "voice_fallback_url": None, "voice_method": voice_method,
                "voice_url": voice_url, "bundle_sid": None,
                "voice_receive_mode": "voice", "status": "in-use", "type": "local",
            }
        return sid

    _NUMBER_UPDATES = {"VoiceUrl": "voice_url", "VoiceMethod": "voice_method", "SmsUrl": "sms_url",
                       "SmsMethod": "sms_method", "StatusCallback": "status_callback"}
    # SID fields: an empty value clears them (null in the answer), as Twilio does.
    _NUMBER_SID_UPDATES = {"VoiceApplicationSid": "voice_application_sid", "SmsApplicationSid": "sms_application_sid",
                           "TrunkSid": "trunk_sid"}

    @staticmethod
    def _phone_number_filter_matches(wanted: str, number: str) -> bool:
        """Twilio's ``PhoneNumber`` list filter matches partial numbers: any number containing those digits."""
        digits = "".join(c for c in wanted if c.isdigit())
        return not wanted or (bool(digits) and digits in "".join(c for c in number if c.isdigit()))

    def _handle_more(self, h: BaseHTTPRequestHandler, method: str, raw: bytes) -> None:
        split = urlsplit(h.path)
        parts = split.path.strip("/").split("/")
        query = parse_qs(split.query)
        if len(parts) < 4 or parts[:2] != ["2010-04-01", "Accounts"]:
            return self._not_found(h)
        username, password = _basic_auth(h.headers.get("Authorization", ""))
        if self.credentials.get(username) != password or parts[2] != self.account_sid:
            status, code, message = _ERRORS["401"]
            return self._json(h, status, {"code": code, "message": message, "status": status,
                                          "more_info": f"https://www.twilio.com/docs/errors/{code}"})
        rest = parts[3:]
        if method == "GET" and len(rest) == 2 and rest[0] in ("Messages", "Calls") and rest[1].endswith(".json"):
            with self._lock:
                body = self.resources.get(rest[1][:-5])
            if body is None or (rest[0] == "Calls") != body["sid"].startswith("CA"):
                return self._not_found(h)
            return self._json(h, 200, body)
        if method == "POST" and len(rest) == 2 and rest[0] == "Calls" and rest[1].endswith(".json"):
            return self._update_call(h, rest[1][:-5], parse_qs(raw.decode("utf-8"), keep_blank_values=True),
                                     username)
        if rest == ["IncomingPhoneNumbers.json"] and method == "GET":
            number = query.get("PhoneNumber", [""])[0]
            with self._lock:
                items = [dict(n) for n in self.phone_numbers.values()
                         if self._phone_number_filter_matches(number, n["phone_number"])]
            return self._json(h, 200, self._page(h.path, "incoming_phone_numbers", items, query))
        if len(rest) == 2 and rest[0] == "IncomingPhoneNumbers" and rest[1].endswith(".json") and method == "POST":
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            with self._lock:
                number = self.phone_numbers.get(rest[1][:-5])
                if number is not None:
                    for name, key in self._NUMBER_UPDATES.items():
                        if name in form:
                            number[key] = form[name][0]
                    for name, key in self._NUMBER_SID_UPDATES.items():
                        if name in form:
                            number[key] = form[name][0] or None
                    number["date_updated"] = formatdate(usegmt=True).replace("GMT", "+0000")
                    self.requests.append(Recorded("number", parts[2], form, username, answered=200,
                                                  sid=number["sid"]))
                    body = dict(number)
            if number is None:
                return self._not_found(h)
            return self._json(h, 200, body)
        return self._not_found(h)

    # ------------------------------------------------------------ live calls: update, end, AMD callbacks

    def end_call(self, sid: str) -> None:
        """The called party hung up: the call is ``completed`` and can no longer be redirected."""
        with self._lock:
            self.resources[sid]["status"] = "completed"

    def call_updates(self, sid: str | None = None) -> list[Recorded]:
        """``POST Calls/{sid}.json`` requests (new TwiML for a live call), in order."""
        with self._lock:
            return [r for r in self.requests if r.kind == "call_update" and (sid is None or r.sid == sid)]

    def _update_call(self, h: BaseHTTPRequestHandler, sid: str, form: dict[str, list[str]], username: str) -> None:
        with self._lock:
            body = self.resources.get(sid)
            record = Recorded("call_update", self.account_sid, form, username, sid=sid)
            self.requests.append(record)
        if body is None or not sid.startswith("CA"):
            return self._not_found(h)
        fault = self._pick_fault()  # fail_next applies to updates too (error answers only)
        if fault in _ERRORS:
            return self._error(h, record, fault)
        if body["status"] in ("completed", "busy", "failed", "no-answer", "canceled"):
            record.answered = 400
            return self._json(h, 400, {"code": 21220, "message": "Call is not in-progress. Cannot redirect.",
                                       "more_info": "https://www.twilio.com/docs/errors/21220", "status": 400})
        with self._lock:
            body["status"] = "in-progress"
            body["date_updated"] = formatdate(usegmt=True).replace("GMT", "+0000")
            answer = dict(body)
        record.answered = 200
        self._json(h, 200, answer)

    def post_amd_callback(self, record: Recorded, answered_by: str, *, token: str, deliver_to: str | None = None,
                          call_sid: str | None = None) -> requests.Response:
        """POST Twilio's asynchronous AMD result for the call ``record`` created to its AsyncAmdStatusCallback,
        signed with ``token`` (``deliver_to`` as in :meth:`post_status_callback`)."""
        url = record.first("AsyncAmdStatusCallback")
        params = {"AccountSid": self.account_sid, "CallSid": call_sid or record.sid, "AnsweredBy": answered_by,
                  "MachineDetectionDuration": "2500"}
        return _post_signed(url, params, token=token, deliver_to=deliver_to)

    def _page(self, path: str, key: str, items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
        size = max(1, min(1000, int(query.get("PageSize", ["50"])[0] or 50)))
        items = items[:size]
        uri = urlsplit(path).path + (f"?{urlsplit(path).query}" if urlsplit(path).query else "")
        return {key: items, "end": max(0, len(items) - 1), "first_page_uri": uri, "next_page_uri": None, "page": 0,
                "page_size": size, "previous_page_uri": None, "start": 0, "uri": uri}

    def _not_found(self, h: BaseHTTPRequestHandler) -> None:
        self._json(h, 404, {"code": 20404, "message": "The requested resource was not found",
                            "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404})


def _segments(body: str) -> int:
    """Segments of a body as Twilio counts them (GSM-7 160/153, else UCS-2 70/67), near enough for the model:
    characters outside ASCII count as UCS-2."""
    if not body:
        return 1
    if body.isascii():
        return 1 if len(body) <= 160 else -(-len(body) // 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def _list_filter_matches(kind: str, body: dict[str, Any], one: Callable[[str], str]) -> bool:
    """Twilio's list filters: exact To / From (/ Status); date filters compare the day of DateSent / StartTime
    (a resource without that date, e.g. a message still queued, never matches a date filter)."""
    for name, key in (("To", "to"), ("From", "from"), ("Status", "status")):
        if one(name) and body.get(key) != one(name):
            return False
    field_name = "DateSent" if kind == "sms" else "StartTime"
    stamp = body.get("date_sent" if kind == "sms" else "start_time")
    day = parsedate_to_datetime(stamp).date().isoformat() if stamp else None
    for suffix, test in (("", lambda d, v: d == v), ("<", lambda d, v: d <= v), (">", lambda d, v: d >= v)):
        wanted = one(field_name + suffix)[:10]
        if wanted and (day is None or not test(day, wanted)):
            return False
    return True


def _post_signed(url: str, params: dict[str, str], *, token: str, deliver_to: str | None) -> requests.Response:
    """POST ``params`` signed for ``url`` as Twilio signs webhooks; ``deliver_to`` replaces scheme and host (the
    public URL is what is signed; the app listens on loopback)."""
    signature = RequestValidator(token).compute_signature(url, params)
    target = url
    if deliver_to:
        parts = urlsplit(url)
        target = deliver_to.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    return requests.post(target, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


class _Server(ThreadingHTTPServer):
    # The default backlog (5) drops connections when a stand-in host opens 16 at once under load.
    request_queue_size = 128


def _basic_auth(header: str) -> tuple[str, str]:
    if not header.lower().startswith("basic "):
        return "", ""
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    return user, password


def start_twilio_fake(account_sid: str, credentials: dict[str, str], **options: Any) -> TwilioFake:
    return TwilioFake(account_sid=account_sid, credentials=dict(credentials), **options).start()


def _serve_for_local_runs(argv: list[str] | None = None) -> None:
    """python -m devhost.twilio_fake: the offline Twilio that make run starts on 127.0.0.1:4010.

    Reads the account SID and auth token from local.settings.json (the environment wins), accepts sends, prints each
    one (numbers masked), and posts a signed delivered / completed status callback so the ledger moves on locally.
    TWILIO_FAKE_FAIL=21610,429 answers the first sends with those faults, in order; ``fail`` does the same for a
    running fake (python -m devhost.twilio_fake fail --help).
    """
    import argparse
    import os
    import sys
    from pathlib import Path

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["fail"], ["clear"]):
        sys.exit(_control(argv))
    parser = argparse.ArgumentParser(prog="python -m devhost.twilio_fake", description=_plain(
        _serve_for_local_runs.__doc__ or ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=4010)
    parser.add_argument("--settings", default="local.settings.json")
    args = parser.parse_args(argv)
    values = json.loads(Path(args.settings).read_text()).get("Values", {}) if Path(args.settings).exists() else {}
    env = {**values, **{k: v for k, v in os.environ.items() if v}}
    sid, token = env.get("TWILIO_ACCOUNT_SID", ""), env.get("TWILIO_AUTH_TOKEN", "")
    credentials = {sid: token}
    if env.get("TWILIO_API_KEY_SID"):
        credentials[env["TWILIO_API_KEY_SID"]] = env.get("TWILIO_API_KEY_SECRET", "")

    printing = threading.Lock()

    def report(record: Recorded) -> None:  # once per create, from the thread that answered it
        from shared.redact import mask_number

        fault = f" (injected fault {record.fault})" if record.fault else ""
        line = f"twilio-fake: {record.kind} to {mask_number(record.first('To'))} -> {record.answered} {record.sid}"
        with printing:  # one write per line: print() writes the newline apart, so concurrent lines would interleave
            sys.stdout.write(line.rstrip() + fault + "\n")
            sys.stdout.flush()
        if record.created and record.first("StatusCallback"):
            final = "delivered" if record.kind == "sms" else "completed"
            threading.Thread(target=_callback_quietly, args=(fake, record, final, token), daemon=True).start()

    try:  # "slow" answers after the app gave up, as a Twilio that never answers in time
        slow = float(env.get("TWILIO_HTTP_TIMEOUT_SECONDS") or 10) + 1
    except ValueError:
        slow = 11.0
    fake = TwilioFake(account_sid=sid, credentials=credentials, port=args.port, on_create=report, slow_seconds=slow)
    faults = [f.strip() for f in os.environ.get("TWILIO_FAKE_FAIL", "").split(",") if f.strip()]
    try:
        fake.fail_next(*faults)
    except ValueError as exc:
        print(f"twilio-fake: TWILIO_FAKE_FAIL: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    fake.start()
    print(f"twilio-fake: offline Twilio on {fake.base_url} for account {sid[:6]}…" +
          (f"; the next {len(faults)} send(s) fail with {', '.join(faults)} (TWILIO_FAKE_FAIL)" if faults else ""),
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass  # the server's threads are daemons: nothing to wait for


def _control(argv: list[str]) -> int:
    """python -m devhost.twilio_fake fail FAULT [--count N] | clear: script the running local fake."""
    import argparse
    import os
    import sys

    from shared import localstack

    parser = argparse.ArgumentParser(prog="python -m devhost.twilio_fake", description="Make the running local "
                                     "Twilio fake (make run) answer the next sends with a chosen Twilio error.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="faults:\n" + "\n".join(f"  {name:<12} {meaning}"
                                                                     for name, meaning in FAULT_MEANINGS.items()))
    verbs = parser.add_subparsers(dest="verb", required=True)
    fail = verbs.add_parser("fail", help="answer the next send(s) with a fault", epilog=parser.epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    fail.add_argument("fault", choices=FAULTS, metavar="FAULT", help="one of: " + ", ".join(FAULTS))
    fail.add_argument("--count", type=int, default=1, help="how many sends in a row (default 1)")
    clear = verbs.add_parser("clear", help="forget faults not used yet")
    for sub in (fail, clear):
        sub.add_argument("--port", type=int, help="the fake's port (default: the running make run's, else "
                                                  "TWILIO_FAKE_PORT, else 4010)")
    args = parser.parse_args(argv)
    try:
        port = args.port or localstack.find(os.environ).ports["twilio"]
    except localstack.PortSettingError as exc:
        print(f"twilio-fake: {exc}", file=sys.stderr)
        return 2
    form = {"clear": "1"} if args.verb == "clear" else {"fault": args.fault, "count": str(args.count)}
    try:
        answer = requests.post(f"http://127.0.0.1:{port}{FAULTS_PATH}", data=form, timeout=5)
        state = answer.json()
    except (requests.RequestException, ValueError):
        print(f"twilio-fake: no Twilio fake answers on 127.0.0.1:{port} (is make run running? --port moves it)",
              file=sys.stderr)
        return 1
    if answer.status_code != 200 or state.get("fake") != FINGERPRINT:
        print(f"twilio-fake: 127.0.0.1:{port} refused: {state.get('error', answer.status_code)}", file=sys.stderr)
        return 1
    pending = state.get("pending_faults", [])
    if args.verb == "clear":
        print(f"twilio-fake on 127.0.0.1:{port}: no faults pending; sends succeed again")
    else:
        print(f"twilio-fake on 127.0.0.1:{port}: the next {args.count} send(s) get {args.fault}: "
              f"{FAULT_MEANINGS[args.fault]} ({len(pending)} fault(s) pending)")
    return 0


def _plain(text: str) -> str:
    """Docstring text for --help: without reStructuredText's double backticks."""
    return text.replace("``", "")


def _callback_quietly(fake: TwilioFake, record: Recorded, status: str, token: str) -> None:
    try:
        fake.post_status_callback(record, status, token=token)
    except requests.RequestException as exc:
        print(f"twilio-fake: status callback failed: {type(exc).__name__}", flush=True)


if __name__ == "__main__":
    _serve_for_local_runs()
