"""azd post-provision hook: point the Twilio number's voice and SMS webhooks at the deployed functions.

Why: without it, `azd up` ends with a number that still calls the old URLs (or none). It runs only when the number
(TWILIO_FROM_NUMBER), the account (TWILIO_ACCOUNT_SID) and a credential (TWILIO_AUTH_TOKEN, or TWILIO_API_KEY_SID +
TWILIO_API_KEY_SECRET) are in the azd environment; the URLs come from the Bicep outputs (VOICE_WEBHOOK_URL,
SMS_WEBHOOK_URL). Idempotent: a number already pointing at them is left alone. Prints what it changed, never a
secret. TWILIO_API_BASE_URL (default https://api.twilio.com) lets the tests point it at the Twilio fake.

    python infra/hooks/configure_twilio_number.py     (azure.yaml runs it after `azd provision` / `azd up`)
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, TextIO

import requests

TIMEOUT_SECONDS = 15
WANTED = (("voice_url", "VoiceUrl", "VOICE_WEBHOOK_URL"), ("sms_url", "SmsUrl", "SMS_WEBHOOK_URL"))


def configure(env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    """Returns the exit code: 0 done or nothing to do, 1 Twilio refused or the number is not on the account."""
    number, account = env.get("TWILIO_FROM_NUMBER", ""), env.get("TWILIO_ACCOUNT_SID", "")
    if env.get("TWILIO_API_KEY_SID") and env.get("TWILIO_API_KEY_SECRET"):
        auth = (env["TWILIO_API_KEY_SID"], env["TWILIO_API_KEY_SECRET"])
    else:
        auth = (account, env.get("TWILIO_AUTH_TOKEN", ""))
    missing = [n for n, v in (("TWILIO_FROM_NUMBER", number), ("TWILIO_ACCOUNT_SID", account),
                              ("TWILIO_AUTH_TOKEN", auth[1])) if not v]
    urls = {field: env.get(output, "") for field, _, output in WANTED}
    if missing or not all(urls.values()):
        skipped = missing + [o for f, _, o in WANTED if not urls[f]]
        print(f"twilio number: not configured ({', '.join(skipped)} not set); set the webhooks in the console",
              file=out)
        return 0
    base = env.get("TWILIO_API_BASE_URL", "https://api.twilio.com").rstrip("/")
    numbers_url = f"{base}/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json"
    try:
        found = requests.get(numbers_url, params={"PhoneNumber": number}, auth=auth, timeout=TIMEOUT_SECONDS)
        if found.status_code != 200:
            return _refused(out, "listing phone numbers", found)
        matches = found.json().get("incoming_phone_numbers", [])
        if not matches:
            print(f"twilio number: {number} is not a number of account {account}", file=out)
            return 1
        current: dict[str, Any] = matches[0]
        changes = {form: urls[field] for field, form, _ in WANTED if current.get(field) != urls[field]}
        if not changes:
            print(f"twilio number: {number} already points at {urls['voice_url']} and {urls['sms_url']}", file=out)
            return 0
        changes.update({"VoiceMethod": "POST", "SmsMethod": "POST"})
        updated = requests.post(f"{base}/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{current['sid']}.json",
                                data=changes, auth=auth, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        print(f"twilio number: Twilio unreachable ({type(exc).__name__}); set the webhooks in the console", file=out)
        return 1
    if updated.status_code != 200:
        return _refused(out, "updating the number", updated)
    for field, form, _ in WANTED:
        if form in changes:
            print(f"twilio number: {number} {field}: {current.get(field) or '(none)'} -> {urls[field]}", file=out)
    return 0


def _refused(out: TextIO, what: str, response: requests.Response) -> int:
    try:
        detail = response.json().get("message", "")
    except ValueError:
        detail = ""
    print(f"twilio number: Twilio refused {what}: HTTP {response.status_code} {detail}".rstrip(), file=out)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(configure(os.environ))
