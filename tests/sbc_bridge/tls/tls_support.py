"""Peers for the TLS tests: certificate authorities made on the spot and a SIP client over TLS.

The client is the *peer*, not the product: a Python ``ssl`` stream that writes whatever bytes a test
gives it and reads whole SIP messages back (Content-Length framing), so tests can pick the protocol
version, the cipher suites and the client certificate the edge is offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.sip_uac import SipMessage, build_message, parse_message

Addr = tuple[str, int]
SDP_OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 41000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


@dataclass(frozen=True)
class Issued:
    """A PEM certificate and key on disk."""

    certificate: Path
    key: Path


def _write_pair(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Issued(cert_path, key_path)


class TestCa:
    """A throw-away certificate authority that issues client and server certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.files = _write_pair(directory, f"{name}-ca", self.cert, self.key)

    @property
    def pem(self) -> Path:
        return self.files.certificate

    def issue(self, common_name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> Issued:
        """A leaf certificate for ``common_name`` (client and server use), with the given SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH, x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _write_pair(self.directory, f"{self.name}-{common_name}-{uuid.uuid4().hex[:6]}", cert, key)


def client_context(
    *,
    cafile: Path | None = None,
    client: Issued | None = None,
    version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A test client's context: trusts ``cafile`` (else verifies nothing), pins a version, offers ``ciphers``.

    Old versions and weak suites need OpenSSL's security level 0, or the client would refuse them
    itself and a test of the server's refusal would prove nothing.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if version is not None:
        context.minimum_version = version
        context.maximum_version = version
    if version is not None and version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("ALL:@SECLEVEL=0")
    if ciphers is not None:
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0" if "@SECLEVEL" not in ciphers else ciphers)
    if client is not None:
        context.load_cert_chain(client.certificate, client.key)
    return context


async def read_message(reader: asyncio.StreamReader) -> bytes | None:
    """One SIP message from a stream (headers, then Content-Length bytes); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body


class TlsSipClient:
    """A SIP peer on one TLS connection: sends what it is told, keeps everything it receives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        sock = writer.get_extra_info("sockname")
        self.local: Addr = (str(sock[0]), int(sock[1]))
        self.received: list[SipMessage] = []
        self.closed = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls, server: Addr, context: ssl.SSLContext, *, local_host: str | None = None, timeout: float = 5.0
    ) -> TlsSipClient:
        """Connect and handshake.

        Raises:
            ssl.SSLError: The handshake failed.
        """
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                server[0],
                server[1],
                ssl=context,
                server_hostname=server[0] if context.check_hostname else None,
                local_addr=(local_host, 0) if local_host else None,
            )
        return cls(reader, writer)

    @property
    def tls_version(self) -> str | None:
        tls_object = self.writer.get_extra_info("ssl_object")
        return tls_object.version() if tls_object is not None else None

    async def _read(self) -> None:
        try:
            while True:
                data = await read_message(self.reader)
                if data is None:
                    break
                async with self._arrived:
                    self.received.append(parse_message(data))
                    self._arrived.notify_all()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.closed.set()
            async with self._arrived:
                self._arrived.notify_all()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def wait_for(self, predicate: Callable[[SipMessage], bool], timeout: float = 5.0) -> SipMessage:
        """The first received message ``predicate(message)`` accepts."""
        try:
            async with asyncio.timeout(timeout), self._arrived:
                while True:
                    for message in self.received:
                        if predicate(message):
                            return message
                    if self.closed.is_set():
                        raise AssertionError(f"connection closed; received {self.received}")
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"nothing matched within {timeout} s; received {self.received}") from None

    async def response(self, request: bytes, timeout: float = 5.0) -> SipMessage:
        """Send ``request`` and wait for its final response (same branch, status >= 200)."""
        branch = parse_message(request).branch
        self.send(request)
        return await self.wait_for(
            lambda m: m.is_response and m.branch == branch and m.status >= 200, timeout
        )

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    # --- requests ---

    def request(
        self,
        method: str,
        uri: str,
        *,
        call_id: str | None = None,
        cseq: int = 1,
        from_tag: str = "tls-peer",
        to: str | None = None,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
        branch: str | None = None,
    ) -> bytes:
        """A request as sent from this connection's address (Via ``TLS``, with ``rport``)."""
        host, port = self.local
        headers = [
            ("Via", f"SIP/2.0/TLS {host}:{port};branch={branch or 'z9hG4bK' + uuid.uuid4().hex};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:+12125550100@{host}>;tag={from_tag}"),
            ("To", to or f"<{uri}>"),
            ("Call-ID", call_id or uuid.uuid4().hex),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:peer@{host}:{port};transport=tls>"),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        headers += extra or []
        return build_message(f"{method} {uri} SIP/2.0", headers, body)
