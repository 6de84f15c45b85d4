"""Fuzz target: one SIP message through everything the edge does with it before any policy decision.

The steps and what each caller tolerates:

- ``SipMessage.parse`` + ``_stamp_via_received``, as ``transport._dispatch_parsed`` runs them: a
  ``ValueError`` is the documented "unparseable" outcome (reported as ``security.malformed``). The
  transport would catch any other exception too, but one that is not ``ValueError`` is a parser bug we
  want to hear about, and a hang, a ``MemoryError`` or super-linear time is never acceptable.
- The guard: ``EdgeGuard.admit_bytes`` on the raw size and ``EdgeGuard.screen`` on every parsed
  request (both listeners, from a trunk source and a stranger), with a fresh guard per input so
  rate-limit state never leaks between inputs: it promises never to raise into the transport.
- ``start_line_problem`` on the raw bytes and ``validate_request`` (both transports) on the parsed
  request: they must never raise; they are what turns junk into a clean 400.
- For a request that passed validation: ``read_identity`` for a trusted and an untrusted trunk, and
  both digest verifiers (the agents' ``AgentDigest`` and the trunks' ``DigestGuard``). None of their
  callers catch anything, so they must not raise.

Nonces are HMAC-signed, so no mutation can forge one. To reach the checks behind the nonce check, the
seeds carry ``@NONCE@`` where a nonce goes; it is replaced by a nonce freshly issued by the verifier
under test. ``@RESPONSE@`` is replaced by the correct digest response for the request's own parameters
and the password of the one known extension, so the accepting path and the replay check run too:
an accepted request presented again must be refused (RFC 7616 nonce-count), and so must the same
request from another source address (nonces are bound to the source IP).
"""

from __future__ import annotations

import hashlib

from aiosipua.headers import parse_auth
from aiosipua.message import SipMessage, SipRequest
from aiosipua.transport import _stamp_via_received

from helpline.sbc_bridge.agents.auth import AgentDigest
from helpline.sbc_bridge.agents.ha1 import digest_ha1
from helpline.sbc_bridge.agents.settings import AgentCredentials
from helpline.sbc_bridge.config import DigestCredentials, TrunkConfig
from helpline.sbc_bridge.digest import DigestGuard
from helpline.sbc_bridge.guard import EdgeGuard, SecuritySettings
from helpline.sbc_bridge.identity import read_identity
from helpline.sbc_bridge.validation import max_forwards_exhausted, start_line_problem, validate_request
from tests.fuzz.harness import Finding, fuzz

TARGET = "sip_message"
MAX_LEN = 8192  # the UDP message cap of [security.caps]
SOURCE = ("127.0.0.1", 5060)
OTHER_SOURCE_IP = "127.0.0.2"
NONCE_MARK = "@NONCE@"
RESPONSE_MARK = "@RESPONSE@"
REALM = "helpline"
EXTENSION = "1001"
PASSWORD = "fuzz-secret"

SETTINGS = SecuritySettings()
STRANGER = ("192.0.2.66", 5060)
TRUSTED_TRUNK = TrunkConfig(name="carrier", sources=("127.0.0.1",), trusted=True)
UNTRUSTED_TRUNK = TrunkConfig(
    name="foreign", sources=("127.0.0.1",), trusted=False, country_code="49", national_prefix="0",
    international_prefix="00",
)
TRUNK_CREDENTIALS = DigestCredentials(username=EXTENSION, password=PASSWORD, realm=REALM)
AGENT = AgentCredentials(
    EXTENSION,
    digest_ha1(EXTENSION, REALM, PASSWORD, "MD5"),
    digest_ha1(EXTENSION, REALM, PASSWORD, "SHA-256"),
)


def _lookup(extension: str) -> AgentCredentials | None:
    return AGENT if extension == EXTENSION else None


def _expected_response(authorization: str, method: str) -> str:
    """The RFC 7616 qop=auth response for the parameters in ``authorization`` (independent oracle)."""
    params = {k.strip().lower(): v for k, v in parse_auth(authorization, credentials=True).params.items()}
    algorithm = params.get("algorithm", "MD5").upper()
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5

    def hex_of(text: str) -> str:
        return h(text.encode("utf-8")).hexdigest()

    ha1 = hex_of(f"{params.get('username', '')}:{params.get('realm', '')}:{PASSWORD}")
    ha2 = hex_of(f"{method.upper()}:{params.get('uri', '')}")
    if "qop" not in params:  # RFC 2069 form, which only the trunk verifier accepts
        return hex_of(f"{ha1}:{params.get('nonce', '')}:{ha2}")
    nc, cnonce, qop = params.get("nc", ""), params.get("cnonce", ""), params.get("qop", "")
    return hex_of(f"{ha1}:{params.get('nonce', '')}:{nc}:{cnonce}:{qop}:{ha2}")


def _fill_marks(request: SipRequest, authorization: str, nonce: str) -> None:
    filled = authorization.replace(NONCE_MARK, nonce)
    if RESPONSE_MARK in filled:
        filled = filled.replace(RESPONSE_MARK, _expected_response(filled, request.method))
    request.headers.set_single("Authorization", filled)


def _check_agent_digest(request: SipRequest, authorization: str | None) -> None:
    digest = AgentDigest(REALM, lifetime=300.0)
    if authorization is not None:
        _fill_marks(request, authorization, digest.new_nonce(SOURCE[0]))
    verdict = digest.verify(request, SOURCE[0], _lookup)
    if verdict.kind != "ok":
        return
    if verdict.extension != EXTENSION:
        raise Finding(f"accepted as {verdict.extension!r}, not the one known extension")
    again = digest.verify(request, SOURCE[0], _lookup)
    if again.kind == "ok":
        raise Finding("a replayed Authorization (same nonce-count) was accepted twice")
    elsewhere = AgentDigest(REALM, lifetime=300.0)
    if elsewhere.verify(request, SOURCE[0], _lookup).kind == "ok":
        raise Finding("a nonce signed by another verifier was accepted")


def _check_trunk_digest(request: SipRequest, authorization: str | None) -> None:
    guard = DigestGuard()
    if authorization is not None:
        challenge = parse_auth(guard.challenge(REALM))
        _fill_marks(request, authorization, challenge.params["nonce"])
    verdict = guard.verify(request, TRUNK_CREDENTIALS)
    if verdict.ok and guard.verify(request, TRUNK_CREDENTIALS).ok:
        raise Finding("the trunk verifier accepted a replayed Authorization")


def _check_guard(data: bytes, request: SipRequest) -> None:
    guard = EdgeGuard(SETTINGS, on_event=lambda kind, event: None, trusted=lambda ip: ip == SOURCE[0],
                      clock=lambda: 1000.0, wall=lambda: 1_700_000_000.0)
    for listener in ("trunk", "agents"):
        for addr in (SOURCE, STRANGER):
            for transport in ("udp", "tcp"):
                guard.admit_bytes(listener, transport, addr, len(data))
                verdict = guard.screen(listener, transport, request, addr)
                if verdict.action not in ("pass", "drop", "reject"):
                    raise Finding(f"screen answered {verdict}")


def check(data: bytes) -> None:
    """One message through the guard, parse, validation, identity and both digest verifiers."""
    start_line_problem(data)
    try:
        message = SipMessage.parse(data)
        if isinstance(message, SipRequest):
            _stamp_via_received(message, SOURCE)
    except ValueError:
        return  # documented: the transport reports it as unparseable
    if not isinstance(message, SipRequest):
        return
    _check_guard(data, message)
    strict = validate_request(message, stream=False)
    lenient = validate_request(message, stream=True)
    if strict is None and lenient is not None:
        raise Finding(f"valid over UDP but not over TCP: {lenient}")
    if lenient is not None:
        return
    max_forwards_exhausted(message)
    read_identity(message, TRUSTED_TRUNK)
    untrusted = read_identity(message, UNTRUSTED_TRUNK)
    if untrusted.pai is not None or untrusted.verstat is not None:
        raise Finding("an untrusted trunk's identity assertion was believed")
    raw = message.headers.get_first("authorization")
    authorization = raw if raw is not None and NONCE_MARK in raw else None
    _check_agent_digest(message, authorization)
    _check_trunk_digest(message, authorization)


if __name__ == "__main__":
    fuzz(TARGET, check, max_len=MAX_LEN, dictionaries=("common", "sip", "sdp"))
