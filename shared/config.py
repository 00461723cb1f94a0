"""All settings, read once from the environment and typed.

Why a module of its own: Functions hands settings to the worker as environment variables, and a setting that is
missing should fail with one clear line naming it instead of a stack trace on every request. ``SETTINGS`` is
also the list the infra consistency test checks against the Bicep app settings and
``local.settings.json.example``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Mapping

log = logging.getLogger("switchboard.config")


@dataclass(frozen=True)
class Setting:
    """One setting the app reads: its name, default ('' = none), and whether it holds a secret."""

    name: str
    default: str = ""
    required: bool = False
    secret: bool = False
    doc: str = ""


SETTINGS: tuple[Setting, ...] = (
    Setting("AzureWebJobsStorage", required=True,
            doc="storage connection (or identity-based AzureWebJobsStorage__* settings in Azure)"),
    Setting("FUNCTIONS_WORKER_RUNTIME", "python", doc="always python"),
    Setting("KEY_VAULT_URL", doc="vault holding twilio-auth-token; empty = read secrets from the environment"),
    Setting("AZURE_CLIENT_ID", doc="client id of the user-assigned managed identity"),
    Setting("TWILIO_ACCOUNT_SID", required=True, doc="AC… account SID"),
    Setting("TWILIO_FROM_NUMBER", doc="default sender (E.164)"),
    Setting("TWILIO_MESSAGING_SERVICE_SID", doc="MG… messaging service used when a message names no sender"),
    Setting("TWILIO_API_KEY_SID", doc="SK… API key; REST calls then use it with secret twilio-api-key-secret"),
    Setting("PUBLIC_BASE_URL", required=True, doc="the https base URL Twilio calls; signatures are checked on it"),
    Setting("TWILIO_API_BASE_URL", "https://api.twilio.com", doc="Twilio REST base URL (local runs: the fake)"),
    Setting("SMS_QUEUE", "outbound-sms", doc="queue of SMS/MMS to send"),
    Setting("CALL_QUEUE", "outbound-calls", doc="queue of calls to place"),
    Setting("INBOUND_QUEUE", "inbound-sms", doc="queue receiving inbound SMS and voicemail events"),
    Setting("OUTCOMES_QUEUE", "outbound-outcomes",
            doc="queue receiving an event per outcome of each queued send (shared/outcomes.py); empty or off = none"),
    Setting("VOICE_GREETING", "Hello from Azure!", doc="said when a call comes in"),
    Setting("SMS_AUTO_REPLY", doc="reply to ordinary inbound SMS; empty = no reply"),
    Setting("FORWARD_TO_NUMBER", doc="menu option 0 dials this number; empty = option off"),
    Setting("FLOWS_FILE", "flows.json",
            doc="the phone menu and SMS keyword file (shared/flows.py): absolute, or relative to function_app.py"),
    Setting("SECRET_CACHE_SECONDS", "300", doc="how long secrets are cached in process"),
    Setting("TWILIO_HTTP_TIMEOUT_SECONDS", "10", doc="timeout of every Twilio REST request"),
    Setting("RECONCILE_SETTLE_SECONDS", "60",
            doc="a send in doubt not found in Twilio's list this long after its attempt is sent again"),
    # Guardrails (shared/guardrails.py, shared/destinations.py; README, Guardrails): empty = off.
    Setting("ALLOWED_DESTINATIONS",
            doc="ISO 3166 region codes sends may go to, comma-separated (US,CA); empty = every region"),
    Setting("MAX_SENDS_PER_RECIPIENT_PER_HOUR",
            doc="sends to one phone number (SMS, WhatsApp and calls together) in any 60 minutes; over it: dead letter"),
    Setting("MAX_SENDS_PER_HOUR",
            doc="sends of the whole app per clock hour (UTC); over it: deferred to the next hour"),
    Setting("AUTO_REPLY_MIN_INTERVAL_SECONDS",
            doc="at most one reply (auto-reply, HELP) per inbound sender in this many seconds"),
    # Pacing (shared/pacing.py; README, Pacing): each sender's sends submitted at its real rate, from every instance.
    Setting("PACING", "on", doc="on = submit each sender's messages at its rate (SENDER_RATES); off = as fast as "
                                "the queue delivers"),
    Setting("SENDER_RATES", doc="messages per second by sender: +18005550100=3,MG…=50,longcode=1 (types: longcode 1, "
                                "tollfree 3, shortcode 100, whatsapp 80, service 1 by default)"),
    Setting("PACING_LEAD_SECONDS", "2", doc="how many seconds of a sender's sending may wait in Twilio's queue"),
    # Read by the Python worker itself; the app sizes its HTTP connection pools to it (see thread_count_setting).
    Setting("PYTHON_THREADPOOL_THREAD_COUNT",
            doc="worker threads for sync functions per instance; unset or invalid = the worker's default, "
                "min(32, cores + 4)"),
    # Local-only secrets: never app settings in Azure (the vault holds them there).
    Setting("TWILIO_AUTH_TOKEN", secret=True, doc="local runs only: auth token when KEY_VAULT_URL is empty"),
    Setting("TWILIO_API_KEY_SECRET", secret=True, doc="local runs only: API key secret when KEY_VAULT_URL is empty"),
    Setting("TWILIO_WEBHOOK_SHARED_KEY", secret=True,
            doc="local runs only: Twilio webhook SharedKey secret (Webhook Rules) when KEY_VAULT_URL is empty"),
)
SETTING_NAMES = frozenset(s.name for s in SETTINGS)


class MissingSettingError(RuntimeError):
    """A required setting is empty or absent; ``name`` says which."""

    def __init__(self, name: str) -> None:
        super().__init__(f"setting {name} is not set (see local.settings.json.example / README, Settings)")
        self.name = name


class InvalidSettingError(MissingSettingError):
    """A setting holds a value the app cannot use (``rule`` says why); handled like a missing one: the work that
    needs it waits (queue retries) instead of running without the guard the operator asked for."""

    def __init__(self, name: str, rule: str) -> None:
        RuntimeError.__init__(self, f"setting {name} {rule} (see README, Settings)")
        self.name = name
        self.rule = rule


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment; build it with :func:`get_settings`."""

    storage_connection: str
    key_vault_url: str
    azure_client_id: str
    account_sid: str
    from_number: str
    messaging_service_sid: str
    api_key_sid: str
    public_base_url: str
    twilio_api_base_url: str
    sms_queue: str
    call_queue: str
    inbound_queue: str
    voice_greeting: str
    sms_auto_reply: str
    forward_to_number: str
    secret_cache_seconds: float
    twilio_http_timeout: float
    reconcile_settle_seconds: float
    thread_count: int
    allowed_destinations: str = ""
    max_sends_per_recipient_per_hour: str = ""
    max_sends_per_hour: str = ""
    auto_reply_min_interval_seconds: str = ""
    pacing: str = "on"
    sender_rates: str = ""
    pacing_lead_seconds: float = 2.0
    flows_file: str = "flows.json"
    raw: Mapping[str, str] = field(default_factory=dict, repr=False)

    def require(self, name: str) -> str:
        """Return a setting's value, or raise :class:`MissingSettingError` (logged once per name)."""
        value = self.raw.get(name, "")
        if not value:
            _log_missing_once(name)
            raise MissingSettingError(name)
        return value


def _read(env: Mapping[str, str], name: str) -> str:
    default = next((s.default for s in SETTINGS if s.name == name), "")
    return (env.get(name) or default).strip()


def _number(env: Mapping[str, str], name: str) -> float:
    raw = _read(env, name)
    try:
        value = float(raw)
    except ValueError:
        log.error("setting %s=%r is not a number; using its default", name, raw)
        value = float(next(s.default for s in SETTINGS if s.name == name))
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    return Settings(
        storage_connection=_read(env, "AzureWebJobsStorage"),
        key_vault_url=_read(env, "KEY_VAULT_URL"),
        azure_client_id=_read(env, "AZURE_CLIENT_ID"),
        account_sid=_read(env, "TWILIO_ACCOUNT_SID"),
        from_number=_read(env, "TWILIO_FROM_NUMBER"),
        messaging_service_sid=_read(env, "TWILIO_MESSAGING_SERVICE_SID"),
        api_key_sid=_read(env, "TWILIO_API_KEY_SID"),
        public_base_url=_read(env, "PUBLIC_BASE_URL").rstrip("/"),
        twilio_api_base_url=_read(env, "TWILIO_API_BASE_URL").rstrip("/"),
        sms_queue=_read(env, "SMS_QUEUE"),
        call_queue=_read(env, "CALL_QUEUE"),
        inbound_queue=_read(env, "INBOUND_QUEUE"),
        voice_greeting=_read(env, "VOICE_GREETING"),
        sms_auto_reply=_read(env, "SMS_AUTO_REPLY"),
        forward_to_number=_read(env, "FORWARD_TO_NUMBER"),
        secret_cache_seconds=_number(env, "SECRET_CACHE_SECONDS"),
        twilio_http_timeout=_number(env, "TWILIO_HTTP_TIMEOUT_SECONDS"),
        reconcile_settle_seconds=_number(env, "RECONCILE_SETTLE_SECONDS"),
        thread_count=thread_count_setting(env),
        # Kept as text: shared.guardrails parses them where they are used, so a bad value stops only sends.
        allowed_destinations=_read(env, "ALLOWED_DESTINATIONS"),
        max_sends_per_recipient_per_hour=_read(env, "MAX_SENDS_PER_RECIPIENT_PER_HOUR"),
        max_sends_per_hour=_read(env, "MAX_SENDS_PER_HOUR"),
        auto_reply_min_interval_seconds=_read(env, "AUTO_REPLY_MIN_INTERVAL_SECONDS"),
        pacing=_read(env, "PACING").lower(),
        sender_rates=_read(env, "SENDER_RATES"),
        pacing_lead_seconds=_number(env, "PACING_LEAD_SECONDS"),
        flows_file=_read(env, "FLOWS_FILE"),
        raw={s.name: _read(env, s.name) for s in SETTINGS if not s.secret},
    )


THREAD_COUNT = "PYTHON_THREADPOOL_THREAD_COUNT"


def default_thread_count() -> int:
    """The Python worker's thread count when the setting is absent or invalid: ThreadPoolExecutor's own default
    (the worker passes no max_workers on Python 3.9+), min(32, cores + 4)."""
    return min(32, (os.cpu_count() or 1) + 4)


def parse_thread_count(raw: str | None) -> tuple[int, str]:
    """What the Python worker (4.34) makes of ``PYTHON_THREADPOOL_THREAD_COUNT``: ``(threads, problem)``.

    As the worker: absent → the default; otherwise ``int()`` of the value as set (so surrounding spaces are fine,
    ``"8.0"`` and ``""`` are not) and at least 1, with no upper bound (the worker's cap of 32 applied to Python
    3.7 only); anything else → the default, and ``problem`` says why (the caller warns, naming the value)."""
    if raw is None:
        return default_thread_count(), ""
    try:
        count = int(raw)
    except ValueError:
        return default_thread_count(), "is not an integer"
    if count < 1:
        return default_thread_count(), "is below 1"
    return count, ""


def thread_count_setting(env: Mapping[str, str]) -> int:
    """The worker's thread count for ``env``, warning once per call when the value is unusable (the worker
    warns too, and uses its default: so does the app, to size its connection pools to the real pool)."""
    raw = env.get(THREAD_COUNT)
    count, problem = parse_thread_count(raw)
    if problem:
        log.warning("setting %s=%r %s (it must be a whole number of at least 1): the Python worker ignores it and "
                    "runs its default, min(32, cores + 4) = %d threads; the app sizes its connection pools for "
                    "those", THREAD_COUNT, str(raw)[:40], problem, count)
    return count


_lock = threading.Lock()
_cached: Settings | None = None
_logged_missing: set[str] = set()


def get_settings() -> Settings:
    """The process-wide settings, read on first use (settings do not change while a worker runs)."""
    global _cached
    if _cached is None:
        with _lock:
            if _cached is None:
                _cached = load_settings()
    return _cached


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    global _cached
    with _lock:
        _cached = None
        _logged_missing.clear()


def _log_missing_once(name: str) -> None:
    if name not in _logged_missing:
        _logged_missing.add(name)
        log.error("setting %s is not set; requests that need it fail until it is", name)
