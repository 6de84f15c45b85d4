"""Server side of SIP digest authentication for trunks that must present credentials.

aiosipua only implements the client side (answering a challenge). Verification reuses its
``build_credentials``: we recompute the response the client should have sent for our nonce and
compare in constant time. Nonces are stateless (time stamp + random + HMAC under a per-process key),
expire after ``lifetime`` seconds, and each (nonce, nc) is accepted once, so a captured INVITE cannot
be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass

from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.headers import AuthChallenge, parse_auth
from aiosipua.message import SipRequest

from .config import DigestCredentials

NONCE_LIFETIME = 300.0


@dataclass(frozen=True, slots=True)
class DigestVerdict:
    """Outcome of checking an Authorization header.

    ``ok`` when it proves the credentials; otherwise ``stale`` (ask again, RFC 2617 stale=true),
    ``missing`` (no credentials yet: challenge) or a failure ``reason``.
    """

    ok: bool
    reason: str
    challenge_again: bool


class DigestGuard:
    """Issues digest challenges and verifies answers to them."""

    def __init__(self, lifetime: float = NONCE_LIFETIME) -> None:
        self._key = os.urandom(32)
        self._lifetime = lifetime
        self._used: dict[str, int] = {}

    def _sign(self, stamp: str, salt: str) -> str:
        return hmac.new(self._key, f"{stamp}:{salt}".encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, realm: str, *, stale: bool = False) -> str:
        """A WWW-Authenticate value with a fresh nonce."""
        stamp, salt = str(int(time.time())), os.urandom(8).hex()
        nonce = f"{stamp}.{salt}.{self._sign(stamp, salt)}"
        value = f'Digest realm="{realm}", nonce="{nonce}", algorithm=MD5, qop="auth"'
        return value + (", stale=true" if stale else "")

    def _nonce_fresh(self, nonce: str) -> bool | None:
        """True when ours and fresh, False when ours but expired, None when not ours."""
        parts = nonce.split(".")
        # compare bytes: compare_digest raises TypeError on non-ASCII str
        if len(parts) != 3 or not hmac.compare_digest(
            parts[2].encode(), self._sign(parts[0], parts[1]).encode()
        ):
            return None
        try:
            age = time.time() - int(parts[0])
        except ValueError:
            return None
        return 0 <= age <= self._lifetime

    def verify(self, request: SipRequest, credentials: DigestCredentials) -> DigestVerdict:
        """Check the request's Authorization header against ``credentials``."""
        raw = request.headers.get_first("authorization")
        if not raw:
            return DigestVerdict(False, "no credentials", True)
        answer = parse_auth(raw, credentials=True)
        params = {key.lower(): value for key, value in answer.params.items()}
        if answer.scheme.lower() != "digest":
            return DigestVerdict(False, f"unsupported auth scheme {answer.scheme!r}", False)
        nonce = params.get("nonce", "")
        fresh = self._nonce_fresh(nonce)
        if fresh is None:
            return DigestVerdict(False, "nonce not issued by us", False)
        if not fresh:
            return DigestVerdict(False, "stale nonce", True)
        if params.get("username") != credentials.username or params.get("realm") != credentials.realm:
            return DigestVerdict(False, f"wrong username or realm ({params.get('username')!r})", False)
        qop = params.get("qop")
        nc_text = params.get("nc", "00000000") if qop else "00000000"
        try:
            nc = int(nc_text, 16)
        except ValueError:
            return DigestVerdict(False, "bad nonce count", False)
        if nc <= self._used.get(nonce, -1):
            return DigestVerdict(False, "replayed nonce count", False)
        challenge = AuthChallenge(
            scheme="Digest",
            params={"realm": credentials.realm, "nonce": nonce, "algorithm": params.get("algorithm", "MD5")},
        )
        if qop:
            challenge.params["qop"] = qop
        expected = build_credentials(
            SipDigestAuth(credentials.username, credentials.password.get_secret_value()),
            challenge,
            request.method,
            params.get("uri", ""),
            nonce_count=max(nc, 1),
            cnonce=params.get("cnonce"),
        )
        if expected is None or not hmac.compare_digest(
            expected.params["response"].encode(), params.get("response", "").encode()
        ):
            return DigestVerdict(False, "wrong digest response", False)
        self._remember(nonce, nc)
        return DigestVerdict(True, "authenticated", False)

    def _remember(self, nonce: str, nc: int) -> None:
        self._used[nonce] = nc
        if len(self._used) > 10000:
            for old in [n for n in self._used if self._nonce_fresh(n) is not True]:
                del self._used[old]
