"""Digest HA1 values: what we store instead of an agent's SIP password.

HA1 = H(username ":" realm ":" password) for RFC 3261 / RFC 8760 digest. Storing HA1 rather than the
password means a leaked database does not reveal passwords used elsewhere; it is tied to the realm,
so changing the realm requires every agent to set a password again.
"""

from __future__ import annotations

import hashlib
from typing import Literal

DigestAlgorithm = Literal["MD5", "SHA-256"]


def digest_ha1(username: str, realm: str, password: str, algorithm: DigestAlgorithm) -> str:
    """The hex HA1 for ``algorithm`` (MD5 or SHA-256)."""
    text = f"{username}:{realm}:{password}".encode()
    if algorithm == "MD5":
        return hashlib.md5(text, usedforsecurity=False).hexdigest()
    if algorithm == "SHA-256":
        return hashlib.sha256(text).hexdigest()
    raise ValueError(f"unsupported digest algorithm {algorithm!r}")
