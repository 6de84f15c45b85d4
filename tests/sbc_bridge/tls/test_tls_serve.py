"""``helpline serve`` with no certificate configured still listens on TLS (the embedded default).

The server generates its pair under ``<data_dir>/tls/`` at start; a client that trusts that
certificate reaches both listeners over TLS, and a restart reuses the same pair.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from tests.e2e.server import start_server
from tests.sbc_bridge.tls.tls_support import TlsSipClient, client_context

SIP_PORT, HTTP_PORT = 5960, 8196  # agents on 5970; TLS one above each (see tests/e2e/server.py)


async def _options(server: tuple[str, int], cafile: Path) -> int:
    client = await TlsSipClient.connect(server, client_context(cafile=cafile))
    try:
        response = await client.response(client.request("OPTIONS", f"sip:{server[0]}:{server[1]}"))
        return response.status
    finally:
        await client.close()


async def test_serve_generates_a_certificate_and_answers_over_tls(tmp_path: Path) -> None:
    srv = await asyncio.to_thread(start_server, tmp_path, sip_port=SIP_PORT, http_port=HTTP_PORT)
    certificate, key = srv.data_dir / "tls" / "edge.crt", srv.data_dir / "tls" / "edge.key"
    try:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # the client checks the certificate and its IP name: the generated SAN must carry 127.0.0.1
        assert await _options(("127.0.0.1", SIP_PORT + 1), certificate) == 200
        assert await _options(("127.0.0.1", SIP_PORT + 10 + 1), certificate) == 200
        first = certificate.read_bytes()
    finally:
        await asyncio.to_thread(srv.stop)
    srv = await asyncio.to_thread(start_server, tmp_path, sip_port=SIP_PORT, http_port=HTTP_PORT)
    try:
        assert certificate.read_bytes() == first
        assert await _options(("127.0.0.1", SIP_PORT + 1), certificate) == 200
    finally:
        await asyncio.to_thread(srv.stop)
