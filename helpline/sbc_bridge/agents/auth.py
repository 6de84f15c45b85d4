"""Digest authentication of agents against stored HA1 values (RFC 3261 §22, RFC 7616, RFC 8760).

The trunk edge's :class:`..digest.DigestGuard` needs a plaintext password; agents are stored as HA1
only, so the response is recomputed here from HA1 (``H(HA1:nonce:nc:cnonce:auth:H(method:uri))``).

- Both algorithms are offered by default, SHA-256 first (RFC 8760 §2.4: most preferred first),
  ``qop="auth"``; the list and order are configurable (some clients stop at the first challenge).
- Nonces are stateless: ``time.salt.HMAC(key, time:salt:source-ip)``. One that we did not sign, or
  that was signed for another source IP, is refused; one older than the lifetime is *stale*.
- The nonce-count of a nonce must strictly increase; the highest accepted count is remembered for
  the nonce's lifetime, so a captured request cannot be replayed.
- An unknown user is verified against a dummy HA1 with the same work as a known one, and both
  failures get the same answer: the registrar cannot be used to enumerate extensions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from aiosipua.headers import parse_auth
from aiosipua.message import SipRequest

from .ha1 import DigestAlgorithm, digest_ha1
from .settings import AgentCredentials

_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_MAX_TRACKED_NONCES = 100_000

VerdictKind = Literal["ok", "missing", "stale", "failed"]


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """Outcome of checking an Authorization header.

    ``kind`` is ``ok`` (``extension`` proved its credentials), ``missing`` (no credentials yet: a
    plain challenge), ``stale`` (challenge again with stale=true) or ``failed`` (with ``reason``
    for the security event; the wire answer is still just a fresh challenge). ``username`` is the
    name the client claimed, for the event.
    """

    kind: VerdictKind
    extension: str | None = None
    username: str | None = None
    reason: str = ""


def _hash(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


class AgentDigest:
    """Issues digest challenges to agents and verifies their answers against stored HA1s."""

    def __init__(
        self, realm: str, lifetime: float, algorithms: Sequence[DigestAlgorithm] = ("SHA-256", "MD5")
    ) -> None:
        self.realm = realm
        self._algorithms = tuple(algorithms)
        self._lifetime = lifetime
        self._key = os.urandom(32)
        self._counts: dict[str, int] = {}
        dummy = os.urandom(16).hex()
        self._dummy = AgentCredentials(
            "", digest_ha1(dummy, realm, dummy, "MD5"), digest_ha1(dummy, realm, dummy, "SHA-256")
        )

    # --- challenges ---

    def _sign(self, stamp: str, salt: str, source_ip: str) -> str:
        return hmac.new(self._key, f"{stamp}:{salt}:{source_ip}".encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self, source_ip: str) -> str:
        stamp, salt = str(int(time.time())), os.urandom(8).hex()
        return f"{stamp}.{salt}.{self._sign(stamp, salt, source_ip)}"

    def challenges(self, source_ip: str, *, stale: bool = False) -> list[str]:
        """The WWW-Authenticate values for a 401, in preference order; all carry the same nonce."""
        nonce = self.new_nonce(source_ip)
        suffix = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={algorithm}, qop="auth"{suffix}'
            for algorithm in self._algorithms
        ]

    def _nonce_state(self, nonce: str, source_ip: str) -> Literal["fresh", "stale", "foreign"]:
        parts = nonce.split(".")
        # compare bytes: compare_digest raises TypeError on non-ASCII str (a fuzzer's "1.2.é")
        if len(parts) != 3 or not hmac.compare_digest(
            parts[2].encode(), self._sign(parts[0], parts[1], source_ip).encode()
        ):
            return "foreign"
        try:
            age = time.time() - int(parts[0])
        except ValueError:
            return "foreign"
        if age < -5:
            return "foreign"
        return "fresh" if age <= self._lifetime else "stale"

    # --- verification ---

    def verify(
        self,
        request: SipRequest,
        source_ip: str,
        lookup: Callable[[str], AgentCredentials | None],
    ) -> AuthVerdict:
        """Check ``request``'s Authorization header; ``lookup`` finds an agent by extension."""
        raw = request.headers.get_first("authorization")
        if not raw:
            return AuthVerdict("missing")
        answer = parse_auth(raw, credentials=True)
        params = {key.strip().lower(): value for key, value in answer.params.items()}
        username = params.get("username")
        if answer.scheme.lower() != "digest":
            return AuthVerdict("failed", username=username, reason=f"unsupported scheme {answer.scheme!r}")
        nonce = params.get("nonce", "")
        state = self._nonce_state(nonce, source_ip)
        if state == "foreign":
            return AuthVerdict("failed", username=username, reason="nonce not issued by us to this source")
        if state == "stale":
            return AuthVerdict("stale", username=username, reason="stale nonce")
        if not username:
            return AuthVerdict("failed", username=username, reason="no username")
        if params.get("realm") != self.realm:
            return AuthVerdict("failed", username=username, reason=f"wrong realm {params.get('realm')!r}")
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in self._algorithms:
            return AuthVerdict("failed", username=username, reason=f"unsupported algorithm {algorithm!r}")
        if params.get("qop", "").lower() != "auth":
            return AuthVerdict("failed", username=username, reason='qop "auth" is required')
        nc_text, cnonce = params.get("nc", ""), params.get("cnonce", "")
        try:
            nc = int(nc_text, 16)
        except ValueError:
            return AuthVerdict("failed", username=username, reason="bad nonce count")
        if not cnonce:
            return AuthVerdict("failed", username=username, reason="no cnonce")
        known = lookup(username)
        credentials = known if known is not None else self._dummy
        ha1 = credentials.ha1_sha256 if algorithm == "SHA-256" else credentials.ha1_md5
        ha2 = _hash(algorithm, f"{request.method.upper()}:{params.get('uri', '')}")
        expected = _hash(algorithm, f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        matches = hmac.compare_digest(expected.encode(), params.get("response", "").lower().encode())
        if known is None:
            return AuthVerdict("failed", username=username, reason="unknown extension")
        if not matches:
            return AuthVerdict("failed", username=username, reason="wrong password")
        if nc <= self._counts.get(nonce, 0):
            return AuthVerdict("failed", username=username, reason="replayed nonce count")
        self._remember(nonce, nc)
        return AuthVerdict("ok", extension=known.extension, username=username, reason="authenticated")

    def _remember(self, nonce: str, nc: int) -> None:
        self._counts[nonce] = nc
        if len(self._counts) > _MAX_TRACKED_NONCES:
            now = time.time()
            for old in [n for n in self._counts if now - int(n.split(".", 1)[0]) > self._lifetime]:
                del self._counts[old]
