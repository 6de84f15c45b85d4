"""Turning the numbers carriers send into E.164.

Carriers deliver caller and called numbers in whatever form their switch prefers: ``+4930123``,
``004930123``, ``030123`` or ``4930123`` for the same German number. Everything behind the edge (DID
table, blocked countries, CDRs) speaks E.164 only, so the conversion happens once, here, as a pure
function that is easy to test exhaustively.
"""

from __future__ import annotations

import re

_VISUAL_SEPARATORS = re.compile(r"[\s().\-/]")
_E164 = re.compile(r"^\+[1-9][0-9]{5,14}$")


def is_e164(value: str) -> bool:
    """Whether ``value`` is ``+`` followed by 6 to 15 digits, the first not zero."""
    return bool(_E164.match(value))


def to_e164(
    raw: str,
    *,
    country_code: str,
    national_prefix: str,
    international_prefix: str,
) -> str | None:
    """Normalise a dialled or presented number to E.164, or None when it is not a phone number.

    Accepted forms, checked in this order:
    ``+<digits>`` (already international); ``<international_prefix><digits>``;
    ``<national_prefix><digits>`` (a national number with its trunk prefix);
    ``<country_code><digits>`` when at least 11 digits long (international without the plus, as
    many carriers send); any other run of digits is a national significant number.
    Visual separators (spaces, dots, dashes, parentheses, slashes) are ignored; URI parameters after
    ``;`` are dropped. Anything else (``anonymous``, letters, ``*``) gives None.
    """
    text = _VISUAL_SEPARATORS.sub("", raw.split(";", 1)[0])
    if not text:
        return None
    if text.startswith("+"):
        candidate = text
    elif not text.isdigit():
        return None
    elif international_prefix and text.startswith(international_prefix):
        candidate = "+" + text[len(international_prefix) :]
    elif national_prefix and text.startswith(national_prefix):
        candidate = "+" + country_code + text[len(national_prefix) :]
    elif text.startswith(country_code) and len(text) >= 11:
        candidate = "+" + text
    else:
        candidate = "+" + country_code + text
    return candidate if is_e164(candidate) else None


def has_prefix(number: str, prefixes: tuple[str, ...]) -> str | None:
    """The first of ``prefixes`` that ``number`` starts with, or None."""
    for prefix in prefixes:
        if number.startswith(prefix):
            return prefix
    return None
