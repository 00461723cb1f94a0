"""Where a send may go: whether a number can exist at all, and whether its region is allowed.

Why: a queue anyone's systems can write to is one compromised producer away from SMS pumping (mass sends to
premium or foreign numbers the attacker is paid for). ``ALLOWED_DESTINATIONS`` (ISO 3166 region codes, ``US,CA``)
refuses every other region before a request leaves. Numbers are read with ``phonenumbers`` (Google's
libphonenumber metadata), not a regex, so the region is the real one: +1 876… is Jamaica, not the US.

- A number that *cannot exist* (a length no number of its country code has, or one dialable only locally) is an
  invalid message: :func:`check_possible` raises :class:`~shared.outbound.InvalidMessageError`. Whether a possible
  number is *in service* stays Twilio's to judge (it answers 21211), so Twilio's test numbers (+1 500 555 …) and
  ranges newer than our metadata keep working.
- The region of a number the metadata knows is its own (``region_code_for_number``); a possible number it does not
  know (a new range) counts as the main region of its country code (+1 → US, +44 → GB), which is what Twilio
  would route it as. Non-geographic numbers (+800, +882 satellite…) have no region and are refused by any
  allowlist.
- A WhatsApp address is checked on its number.

``phonenumbers`` is imported inside the functions (~20 ms and a few MB of metadata): the first send pays it,
not every cold start (``tests/unit/test_cold_import.py``).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

log = logging.getLogger("switchboard.destinations")

WHATSAPP_PREFIX = "whatsapp:"
NON_GEOGRAPHIC = "001"  # phonenumbers' region for +800, +808, +870, +881, +882, +883, +888, +979


class DestinationNotAllowedError(ValueError):
    """The number's region is not in ``ALLOWED_DESTINATIONS``; ``region`` and ``allowed`` say which."""

    def __init__(self, region: str, allowed: tuple[str, ...]) -> None:
        shown = "non-geographic (no region)" if region == NON_GEOGRAPHIC else f"region {region}"
        super().__init__(f"to: {shown} is not in ALLOWED_DESTINATIONS ({','.join(allowed) or 'none valid'})")
        self.region = region
        self.allowed = allowed

    @property
    def reason(self) -> str:
        return str(self)


def phone_number(address: str) -> str:
    """The E.164 number of an address (``whatsapp:+1…`` → ``+1…``)."""
    return address[len(WHATSAPP_PREFIX):] if address.lower().startswith(WHATSAPP_PREFIX) else address


def _parse(number: str) -> Any:
    import phonenumbers

    return phonenumbers.parse(number, None)


def check_possible(field: str, address: str) -> None:
    """Raise ``InvalidMessageError(field, …)`` when ``address`` (E.164, or whatsapp:+E.164, already matched by the
    schema's pattern) is a number no phone can have: unknown country code, too short or too long for it, or a
    local-only number without its area code."""
    import phonenumbers
    from phonenumbers import ValidationResult

    from .outbound import InvalidMessageError

    number = phone_number(address)
    try:
        parsed = _parse(number)
    except phonenumbers.NumberParseException as exc:
        why = ("it starts with no country code" if exc.error_type == exc.INVALID_COUNTRY_CODE
               else str(exc).split(") ", 1)[-1].rstrip("."))
        raise InvalidMessageError(field, f"not a possible phone number: {why}") from None
    result = phonenumbers.is_possible_number_with_reason(parsed)
    if result == ValidationResult.IS_POSSIBLE:
        return
    region = phonenumbers.region_code_for_country_code(parsed.country_code)
    digits = len(str(parsed.national_number))
    why = {
        ValidationResult.INVALID_COUNTRY_CODE: f"+{parsed.country_code} is not a country code",
        ValidationResult.TOO_SHORT: f"{digits} digits after +{parsed.country_code} is too short for {region}",
        ValidationResult.TOO_LONG: f"{digits} digits after +{parsed.country_code} is too long for {region}",
        ValidationResult.IS_POSSIBLE_LOCAL_ONLY: f"{digits} digits after +{parsed.country_code} is a local-only "
                                                 f"number in {region} (the area code is missing)",
    }.get(result, f"{digits} digits after +{parsed.country_code} is not a possible length for {region}")
    raise InvalidMessageError(field, f"not a possible phone number: {why}")


def region_of(address: str) -> str:
    """The ISO 3166 region of an address's number (``001`` for non-geographic numbers; see the module docstring
    for numbers the metadata does not know)."""
    import phonenumbers

    parsed = _parse(phone_number(address))
    region = phonenumbers.region_code_for_number(parsed)
    if region is None:  # possible but not in the metadata (a new range): its country code's main region
        region = phonenumbers.region_code_for_country_code(parsed.country_code)
    return str(region or phonenumbers.UNKNOWN_REGION)


@lru_cache(maxsize=8)
def allowed_regions(setting: str) -> tuple[str, ...] | None:
    """``ALLOWED_DESTINATIONS`` as region codes (None = every region). Codes phonenumbers does not know are left
    out with one error line each, so a typo narrows the allowlist (fail closed), never widens it."""
    import phonenumbers

    codes = [c.strip().upper() for c in setting.split(",") if c.strip()]
    if not codes:
        return None
    known = tuple(dict.fromkeys(c for c in codes if c in phonenumbers.SUPPORTED_REGIONS))
    for code in codes:
        if code not in known:
            log.error("setting ALLOWED_DESTINATIONS: %r is not an ISO 3166 region code; ignored (no send goes "
                      "to it)", code[:10])
    return known


def check_allowed(address: str, setting: str) -> None:
    """Raise :class:`DestinationNotAllowedError` unless ``setting`` (``ALLOWED_DESTINATIONS``) allows the region
    of ``address``. An empty setting allows all."""
    allowed = allowed_regions(setting.strip())
    if allowed is None:
        return
    region = region_of(address)
    if region not in allowed:
        raise DestinationNotAllowedError(region, allowed)
