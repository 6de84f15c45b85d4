"""HTTP Range requests (RFC 9110 §14) over a resource of known size, for the audio endpoint.

One range is served per response: several ranges in one header are coalesced into the one span that
covers them, which the RFC allows and which is all a media element ever asks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class RangeNotSatisfiable(Exception):
    """No requested range overlaps the resource (416)."""


class InvalidRange(Exception):
    """The Range header is not a byte range we can read; the RFC says to ignore it (serve 200)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``first..last`` inclusive, as in ``Content-Range``."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.first}-{self.last}/{size}"


def parse_range(header: str, size: int) -> ByteRange:
    """The span of ``header`` (``bytes=0-99``, ``bytes=500-``, ``bytes=-200``, or a list of them)
    within a resource of ``size`` bytes."""
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        raise InvalidRange(f"not a bytes range: {header!r}")
    spans: list[ByteRange] = []
    for spec in specs.split(","):
        match = _SPEC.match(spec)
        if match is None or match.group(1) == match.group(2) == "":
            raise InvalidRange(f"malformed range {spec.strip()!r}")
        first_text, last_text = match.groups()
        if first_text == "":
            suffix = int(last_text)
            if suffix == 0 or size == 0:
                continue
            spans.append(ByteRange(max(0, size - suffix), size - 1))
            continue
        first = int(first_text)
        last = size - 1 if last_text == "" else min(int(last_text), size - 1)
        if last_text != "" and int(last_text) < first:
            raise InvalidRange(f"range ends before it starts: {spec.strip()!r}")
        if first < size:
            spans.append(ByteRange(first, last))
    if not spans:
        raise RangeNotSatisfiable(f"no part of {header!r} lies within {size} bytes")
    return ByteRange(min(s.first for s in spans), max(s.last for s in spans))
