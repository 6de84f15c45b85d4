"""Reading DTMF digits out of SIP INFO bodies (application/dtmf-relay and application/dtmf)."""

from __future__ import annotations

DEFAULT_DURATION_MS = 100
DTMF_CONTENT_TYPES = ("application/dtmf-relay", "application/dtmf")

_VALID = set("0123456789*#ABCD")
_NUMERIC_EVENTS = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}


def parse_dtmf_info(content_type: str, body: str) -> tuple[str, int] | None:
    """``(digit, duration_ms)`` from an INFO body, or None when the body names no digit.

    ``application/dtmf-relay`` carries ``Signal=5`` and ``Duration=160`` lines (in any order,
    Signal may be numeric 10/11 for */#); ``application/dtmf`` carries the bare digit.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/dtmf":
        bare = _digit(body.strip())
        return (bare, DEFAULT_DURATION_MS) if bare is not None else None
    if kind != "application/dtmf-relay":
        return None
    fields: dict[str, str] = {}
    for line in body.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    digit = _digit(fields.get("signal", ""))
    if digit is None:
        return None
    try:
        duration = int(fields.get("duration", DEFAULT_DURATION_MS))
    except ValueError:
        duration = DEFAULT_DURATION_MS
    return digit, max(duration, 0)


def _digit(value: str) -> str | None:
    value = _NUMERIC_EVENTS.get(value, value).upper()
    return value if len(value) == 1 and value in _VALID else None
