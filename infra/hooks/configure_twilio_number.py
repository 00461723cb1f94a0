"""azd post-provision hook: point the Twilio number's voice and SMS webhooks at the deployed functions.

Why: without it, `azd up` ends with a number that still calls the old URLs (or none). It runs only when the number
(TWILIO_FROM_NUMBER), the account (TWILIO_ACCOUNT_SID) and a credential (TWILIO_AUTH_TOKEN, or TWILIO_API_KEY_SID +
TWILIO_API_KEY_SECRET) are in the azd environment; the URLs come from the Bicep outputs (VOICE_WEBHOOK_URL,
SMS_WEBHOOK_URL). Prints what it changed, never a secret. TWILIO_API_BASE_URL (default https://api.twilio.com) lets
the tests point it at the Twilio fake.

The number counts as configured only when both URLs are ours *and* both methods are POST (our routes answer POST
only; a GET webhook gets 404). Twilio's `PhoneNumber` list filter matches partial numbers, so only the entry whose
`phone_number` is exactly TWILIO_FROM_NUMBER is used. A number with a TwiML App (voice_application_sid,
sms_application_sid) or a SIP trunk (trunk_sid) ignores its URLs: the hook says so and exits 1, and clears them only
when TWILIO_NUMBER_CLEAR_OVERRIDES=true. Idempotent: a number already configured is left alone.

Standard library only (urllib): azd runs it with whatever system `python3` the user has, which has no `requests`.
Keep it runnable on Python 3.8+ (macOS's and older distributions' python3).

    python3 infra/hooks/configure_twilio_number.py     (infra/hooks/postprovision.sh|.ps1 run it; see azure.yaml)
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, TextIO, Tuple

TIMEOUT_SECONDS = 15
CLEAR_FLAG = "TWILIO_NUMBER_CLEAR_OVERRIDES"
# (url field, its form name, method field, its form name, the Bicep output with our URL)
WANTED = (("voice_url", "VoiceUrl", "voice_method", "VoiceMethod", "VOICE_WEBHOOK_URL"),
          ("sms_url", "SmsUrl", "sms_method", "SmsMethod", "SMS_WEBHOOK_URL"))
# Set on a number, each of these makes Twilio ignore the number's own voice or SMS URL.
OVERRIDES = (("voice_application_sid", "VoiceApplicationSid", "calls go to that TwiML App, not to voice_url"),
             ("trunk_sid", "TrunkSid", "calls go to that SIP trunk, not to voice_url"),
             ("sms_application_sid", "SmsApplicationSid", "messages go to that TwiML App, not to sms_url"))


class Unreachable(Exception):
    """No HTTP answer from Twilio (DNS, connection, TLS, timeout)."""


class Twilio:
    """The few REST calls the hook makes, over urllib with HTTP basic auth."""

    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/json",
                        "User-Agent": "switchboard-azd-hook"}

    def call(self, method: str, path: str, form: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, Any]]:
        url = path if path.startswith(("http://", "https://")) else self.base + path
        data = urllib.parse.urlencode(form).encode("utf-8") if form is not None else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - https/loopback
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            raise Unreachable(_reason(exc)) from None


def _json(raw: bytes) -> Dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8") or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    inner = reason if isinstance(reason, BaseException) else exc
    name = type(inner).__name__
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"{name}: this Python has no CA certificates (macOS: run its 'Install Certificates.command')"
    return name


def configure(env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    """Returns the exit code: 0 done or nothing to do; 1 Twilio refused or unreachable, the number is not on the
    account, or the number ignores its URLs (an application or trunk is set and not cleared)."""
    number, account = env.get("TWILIO_FROM_NUMBER", ""), env.get("TWILIO_ACCOUNT_SID", "")
    if env.get("TWILIO_API_KEY_SID") and env.get("TWILIO_API_KEY_SECRET"):
        auth = (env["TWILIO_API_KEY_SID"], env["TWILIO_API_KEY_SECRET"])
    else:
        auth = (account, env.get("TWILIO_AUTH_TOKEN", ""))
    missing = [n for n, v in (("TWILIO_FROM_NUMBER", number), ("TWILIO_ACCOUNT_SID", account),
                              ("TWILIO_AUTH_TOKEN", auth[1])) if not v]
    urls = {url_field: env.get(output, "") for url_field, _, _, _, output in WANTED}
    if missing or not all(urls.values()):
        skipped = missing + [output for url_field, _, _, _, output in WANTED if not urls[url_field]]
        print(f"twilio number: not configured ({', '.join(skipped)} not set); set the webhooks in the console",
              file=out)
        return 0
    twilio = Twilio(env.get("TWILIO_API_BASE_URL", "https://api.twilio.com"), *auth)
    numbers = f"/2010-04-01/Accounts/{account}/IncomingPhoneNumbers"
    clear = env.get(CLEAR_FLAG, "").strip().lower() in ("1", "true", "yes")
    try:
        found = _find_exact(twilio, numbers, number, out)
        if not isinstance(found, dict):
            return found
        changes = _changes(found, urls)
        overrides = [(f, form, what) for f, form, what in OVERRIDES if found.get(f)]
        if clear:
            changes.update({form: "" for _, form, _ in overrides})
        if changes:
            status, updated = twilio.call("POST", f"{numbers}/{found['sid']}.json", changes)
            if status != 200:
                return _refused(out, "updating the number", status, updated)
    except Unreachable as exc:
        print(f"twilio number: Twilio unreachable ({exc}); set the webhooks in the console", file=out)
        return 1
    for url_field, url_form, method_field, method_form, _ in WANTED:
        for field, form in ((url_field, url_form), (method_field, method_form)):
            if form in changes:
                print(f"twilio number: {number} {field}: {found.get(field) or '(none)'} -> {changes[form]}",
                      file=out)
    if clear:
        for field, _, _ in overrides:
            print(f"twilio number: {number} {field}: {found[field]} -> (cleared, {CLEAR_FLAG}=true)", file=out)
    if not changes:
        print(f"twilio number: {number} already points at {urls['voice_url']} and {urls['sms_url']} (POST)",
              file=out)
    if overrides and not clear:
        for field, _, what in overrides:
            print(f"twilio number: {number} has {field} {found[field]}: {what}", file=out)
        print(f"twilio number: webhooks will not reach the app until that is cleared: in the console, or "
              f"`azd env set {CLEAR_FLAG} true` and `azd provision` to let this hook clear it", file=out)
        return 1
    return 0


def _find_exact(twilio: Twilio, numbers: str, number: str, out: TextIO) -> Any:
    """The account's entry whose phone_number is exactly ``number`` (the list filter also matches partial numbers),
    or an exit code after saying why there is none."""
    path: Optional[str] = f"{numbers}.json?" + urllib.parse.urlencode({"PhoneNumber": number, "PageSize": "1000"})
    others: List[str] = []
    while path:
        status, page = twilio.call("GET", path)
        if status != 200:
            return _refused(out, "listing phone numbers", status, page)
        for entry in page.get("incoming_phone_numbers") or []:
            if entry.get("phone_number") == number:
                return entry
            others.append(str(entry.get("phone_number")))
        path = page.get("next_page_uri") or None
    if others:
        print(f"twilio number: {number} is not a number of the account; Twilio's partial match found only "
              f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''} (TWILIO_FROM_NUMBER must be the exact E.164 "
              "number)", file=out)
    else:
        print(f"twilio number: {number} is not a number of the account", file=out)
    return 1


def _changes(current: Mapping[str, Any], urls: Mapping[str, str]) -> Dict[str, str]:
    changes: Dict[str, str] = {}
    for url_field, url_form, method_field, method_form, _ in WANTED:
        if current.get(url_field) != urls[url_field]:
            changes[url_form] = urls[url_field]
        if str(current.get(method_field) or "").upper() != "POST":
            changes[method_form] = "POST"
    return changes


def _refused(out: TextIO, what: str, status: int, body: Mapping[str, Any]) -> int:
    detail = str(body.get("message", "") or "")
    print(f"twilio number: Twilio refused {what}: HTTP {status} {detail}".rstrip(), file=out)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(configure(os.environ))
