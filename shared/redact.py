"""Keep personal data and secrets out of logs.

Phone numbers are personal data; logs keep just enough of one to tell two apart (``+1415***2345``).
"""

from __future__ import annotations

import re

_E164_LIKE = re.compile(r"\+?\d{7,15}")


def mask_number(number: str | None) -> str:
    """``+14155552345`` → ``+1415***2345``; anything short or empty comes back as ``***``."""
    if not number:
        return "***"
    number = str(number)
    if len(number) < 9:
        return "***"
    head = 5 if number.startswith("+") else 4
    return f"{number[:head]}***{number[-4:]}"


def mask_numbers_in(text: str) -> str:
    """Mask every phone-number-looking run in free text (error messages echo numbers back)."""
    return _E164_LIKE.sub(lambda m: mask_number(m.group(0)), text)
