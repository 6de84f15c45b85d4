"""The TLS posture as a scanner sees it (A14: "testssl.sh / sslyze against 5061").

sslyze tries every protocol version from SSL 2.0 to TLS 1.3 with every cipher suite it knows (its
own OpenSSL build, nassl, still speaks the legacy ones), against the live trunk listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sslyze import (
    ScanCommand,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanResult,
    ServerScanStatusEnum,
)

from helpline.sbc_bridge import SipSettings
from tests.sbc_bridge.edge_support import Edge

MakeEdge = Callable[..., Awaitable[Edge]]
LEGACY = {
    "ssl_2_0_cipher_suites": ScanCommand.SSL_2_0_CIPHER_SUITES,
    "ssl_3_0_cipher_suites": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "tls_1_0_cipher_suites": ScanCommand.TLS_1_0_CIPHER_SUITES,
    "tls_1_1_cipher_suites": ScanCommand.TLS_1_1_CIPHER_SUITES,
}
CURRENT = {
    "tls_1_2_cipher_suites": ScanCommand.TLS_1_2_CIPHER_SUITES,
    "tls_1_3_cipher_suites": ScanCommand.TLS_1_3_CIPHER_SUITES,
}


def _scan(host: str, port: int) -> ServerScanResult:
    scanner = Scanner()
    scanner.queue_scans(
        [
            ServerScanRequest(
                server_location=ServerNetworkLocation(hostname=host, port=port, ip_address=host),
                scan_commands={*LEGACY.values(), *CURRENT.values()},
            )
        ]
    )
    (result,) = list(scanner.get_results())
    return result


def _accepted(result: ServerScanResult, attribute: str) -> list[Any]:
    assert result.scan_result is not None
    attempt = getattr(result.scan_result, attribute)
    assert attempt.error_reason is None, f"{attribute}: {attempt.error_reason} {attempt.error_trace}"
    return list(attempt.result.accepted_cipher_suites)


async def test_sslyze_finds_only_tls_1_2_plus_with_forward_secret_suites(
    make_edge: MakeEdge, sip_tls: SipSettings
) -> None:
    edge = await make_edge(settings=sip_tls)
    host, port = edge.bridge.local_addresses["tls"]
    async with asyncio.timeout(90):
        result = await asyncio.to_thread(_scan, host, port)
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    for attribute in LEGACY:
        assert _accepted(result, attribute) == [], attribute

    tls12 = _accepted(result, "tls_1_2_cipher_suites")
    assert tls12, "no TLS 1.2 suite accepted"
    for accepted in tls12:
        name = accepted.cipher_suite.name
        assert name.startswith("TLS_ECDHE_"), name  # key exchange by ephemeral ECDH only
        assert accepted.ephemeral_key is not None, name
        assert "_GCM_" in name or "CHACHA20_POLY1305" in name, name  # AEAD only: no CBC, RC4, 3DES
    assert _accepted(result, "tls_1_3_cipher_suites"), "no TLS 1.3 suite accepted"
