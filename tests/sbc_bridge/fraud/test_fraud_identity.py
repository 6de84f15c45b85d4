"""Identity assertions (PAI, RPID, verstat, PASSporT attestation): kept from the trust domain only."""

from __future__ import annotations

import base64
import json

import pytest
from aiosipua.message import SipMessage, SipRequest

from helpline.sbc_bridge.identity import Verification, parse_verstat, passport_attestation, read_identity
from tests.sbc_bridge.edge_support import trunk


def invite(*headers: str, from_params: str = "") -> SipRequest:
    lines = [
        "INVITE sip:+12125550199@127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK1",
        f"From: <sip:+15551230001@127.0.0.1{from_params}>;tag=1",
        "To: <sip:+12125550199@127.0.0.1>",
        "Call-ID: identity-test",
        "CSeq: 1 INVITE",
        *headers,
        "Content-Length: 0",
    ]
    message = SipMessage.parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, SipRequest)
    return message


def passport(claims: object) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256', 'ppt': 'shaken'})}.{part(claims)}.c2ln;info=<https://x/c.pem>;ppt=shaken"


PAI = 'P-Asserted-Identity: "Bank" <sip:+18005550000@127.0.0.1;user=phone;verstat=TN-Validation-Passed>'


@pytest.mark.parametrize(("raw", "expected"), [
    ("TN-Validation-Passed", Verification("passed")),
    ("tn-validation-passed-a", Verification("passed", "A")),
    ("TN-Validation-Passed-C", Verification("passed", "C")),
    ("TN-Validation-Failed", Verification("failed")),
    ("TN-Validation-Failed-A", Verification("failed")),  # no attestation without a passed check
    ("No-TN-Validation", Verification("none")),
    ("TN-Validation-Passed-D", None),
    ("Validated", None),
    ("", None),
])
def test_parse_verstat(raw: str, expected: Verification | None) -> None:
    assert parse_verstat(raw) == expected


def test_verification_value_is_the_canonical_text() -> None:
    assert Verification("passed", "B").value == "TN-Validation-Passed-B"
    assert Verification("failed").value == "TN-Validation-Failed"
    assert Verification("none").value == "No-TN-Validation"


def test_passport_attestation() -> None:
    assert passport_attestation(passport({"attest": "B", "orig": {"tn": "1"}})) == "B"
    assert passport_attestation(passport({"attest": "Z"})) is None
    assert passport_attestation(passport(["attest"])) is None
    assert passport_attestation("not-a-jwt;info=<x>") is None
    assert passport_attestation("a.!!!.c") is None


def test_trusted_trunk_keeps_pai_and_verstat_with_attestation() -> None:
    request = invite(PAI, f"Identity: {passport({'attest': 'A'})}")
    identity = read_identity(request, trunk(trusted=True))
    assert identity.pai is not None and "+18005550000" in identity.pai
    assert identity.verification == Verification("passed", "A")
    assert identity.verstat == "TN-Validation-Passed-A"
    assert identity.stripped == ()


def test_trusted_trunk_verstat_from_the_from_header() -> None:
    identity = read_identity(invite(from_params=";verstat=TN-Validation-Failed"), trunk(trusted=True))
    assert identity.verstat == "TN-Validation-Failed" and identity.pai is None


def test_trusted_trunk_unknown_verstat_is_not_stored() -> None:
    identity = read_identity(invite(PAI.replace("TN-Validation-Passed", "Totally-Legit")), trunk())
    assert identity.pai is not None and identity.verstat is None and identity.verification is None


def test_untrusted_trunk_sheds_every_assertion_and_says_which() -> None:
    request = invite(PAI, 'Remote-Party-ID: "Bank" <sip:+18005550000@127.0.0.1>;party=calling')
    identity = read_identity(request, trunk(trusted=False))
    assert (identity.pai, identity.verstat, identity.verification) == (None, None, None)
    assert identity.stripped == ("P-Asserted-Identity", "Remote-Party-ID", "verstat")
    assert identity.caller == "+15551230001"


def test_untrusted_trunk_verstat_in_from_alone_is_reported() -> None:
    identity = read_identity(invite(from_params=";verstat=TN-Validation-Passed"), trunk(trusted=False))
    assert identity.verstat is None and identity.stripped == ("verstat",)


def test_untrusted_trunk_without_assertions_reports_nothing() -> None:
    assert read_identity(invite(), trunk(trusted=False)).stripped == ()
