"""TLS for the SIP listeners (A14): contexts, per-trunk client certificates, a generated default pair.

The posture is fixed, not configurable per deployment, because every knob here is one an operator can
only turn the wrong way: TLS 1.2 or later (carriers require 1.2; 1.0 and 1.1 are refused), and on 1.2
only ECDHE key exchange with AEAD ciphers, so a recorded session cannot be decrypted later with a
stolen key (TLS 1.3 suites are all forward-secret). ``tls_min_version = "1.3"`` raises the floor.

Mutual TLS is per trunk: when a trunk sets ``tls_client_ca`` the listener asks peers for a
certificate, OpenSSL verifies a presented one against the configured CAs, and after the handshake the
connection's source address picks the trunk whose CA must have signed it (and whose
``tls_client_name`` it must carry, RFC 5922 §7.1 order). The context is the listener's, not the
trunk's, because the loop runs the handshake before any code sees the peer's address.

With no certificate configured the embedded default still listens on TLS: :func:`resolve_tls` makes a
self-signed pair once under ``<data_dir>/tls/`` (key mode 0600) and reuses it afterwards. That
certificate authenticates nothing to a peer that has not pinned it, which is why a real deployment
sets ``tls_certificate``/``tls_key``; it still keeps the signalling private on the wire.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..policy import match_trunk

if TYPE_CHECKING:  # types only: importing the agents package here would close an import cycle
    from ..agents.settings import AgentEdgeSettings
    from ..config import SipSettings, TlsVersion, TrunkConfig

logger = logging.getLogger(__name__)

# OpenSSL cipher string for TLS 1.2: ephemeral ECDH key exchange with an AEAD cipher, nothing else
# (no RSA key exchange, no CBC, no RC4/3DES/EXPORT, no anonymous or PSK suites).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"
GENERATED_DIR = "tls"
GENERATED_CERTIFICATE = "edge.crt"
GENERATED_KEY = "edge.key"
GENERATED_VALIDITY = datetime.timedelta(days=825)
# A generated certificate this close to expiry, or not naming every listener host, is made again.
RENEW_BEFORE = datetime.timedelta(days=30)
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
_VERSIONS: Mapping[str, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _harden(context: ssl.SSLContext, min_version: TlsVersion) -> ssl.SSLContext:
    context.minimum_version = _VERSIONS[min_version]
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_SINGLE_ECDH_USE | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return context


def server_context(
    certificate: Path, key: Path, min_version: TlsVersion = "1.2", client_cas: Sequence[Path] = ()
) -> ssl.SSLContext:
    """A listener's context; with ``client_cas`` peers are asked for a certificate signed by one.

    The request is optional at this level (only some trunks require one; see :class:`TlsContexts`),
    but a certificate that is presented must verify against those CAs. Blocking (reads PEM files).

    Raises:
        OSError: A file cannot be read.
        ssl.SSLError: The certificate and key do not match or are not PEM.
    """
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), min_version)
    context.load_cert_chain(certificate, key)
    if client_cas:
        context.verify_mode = ssl.CERT_OPTIONAL
        for cafile in client_cas:
            context.load_verify_locations(cafile=cafile)
    return context


def client_context(min_version: TlsVersion = "1.2", cafile: Path | None = None) -> ssl.SSLContext:
    """A context for connections the edge opens (to a trunk or an agent whose connection is gone).

    The peer's certificate is verified against ``cafile`` or the system's CAs, and its name against the
    address dialled: an unverifiable peer is not sent SIP. Blocking when ``cafile`` is given.
    """
    context = _harden(ssl.create_default_context(cafile=cafile), min_version)
    context.check_hostname = True
    return context


@dataclass(frozen=True, slots=True)
class ClientCertificateRule:
    """What a mutual-TLS trunk's connections must present: a certificate one of ``issuers`` signed."""

    trunk: str
    issuers: tuple[x509.Certificate, ...]
    name: str | None = None

    def problem(self, der: bytes | None, peercert: Mapping[str, Any] | None) -> str | None:
        """Why the (already chain-verified) peer certificate is not this trunk's; None when it is.

        OpenSSL has verified the chain against every mutual-TLS trunk's CAs together; this narrows it
        to the trunk the source address belongs to, so one carrier's certificate cannot stand in for
        another's.
        """
        if not der:
            return "no client certificate"
        try:
            leaf = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            return f"unreadable client certificate: {exc}"
        if not any(_issued_by(leaf, issuer) for issuer in self.issuers):
            return f"client certificate not signed by the CA of trunk {self.trunk}"
        if self.name is not None and not certificate_names(peercert or {}, self.name):
            return f"client certificate does not name {self.name}"
        return None


def _issued_by(leaf: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _name_matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:]
    return False


def certificate_names(peercert: Mapping[str, Any], name: str) -> bool:
    """Whether a certificate (``SSLSocket.getpeercert()`` form) names ``name``.

    RFC 5922 §7.1: URI SANs (``sip:name``) and DNS SANs count; the subject's CN only when the
    certificate carries neither. An IP address matches an IP SAN.
    """
    sans: Sequence[tuple[str, str]] = peercert.get("subjectAltName", ())
    try:
        wanted_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        wanted_ip = None
    named = False
    for kind, value in sans:
        if kind == "DNS":
            named = True
            if _name_matches(value, name):
                return True
        elif kind == "URI" and value.lower().startswith(("sip:", "sips:")):
            named = True
            if value.split(":", 1)[1].lower() == name.lower():
                return True
        elif kind == "IP Address" and wanted_ip is not None:
            try:
                if ipaddress.ip_address(value.strip()) == wanted_ip:
                    return True
            except ValueError:
                continue
    if named:
        return False
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and _name_matches(value, name):
                return True
    return False


def _load_issuers(cafile: Path) -> tuple[x509.Certificate, ...]:
    issuers = tuple(x509.load_pem_x509_certificates(cafile.read_bytes()))
    if not issuers:
        raise ValueError(f"{cafile}: no PEM certificate in tls_client_ca")
    return issuers


class TlsContexts:
    """TLS for one listener: its server context, the client context, and the per-trunk client rules.

    Built once at start (blocking: run it in a thread). When any trunk sets ``tls_client_ca`` every
    peer of the listener is asked for a certificate (optional at the handshake); a presented one must
    verify against one of those CAs, and :meth:`rule_for` tells which trunk's it must be.

    Raises:
        OSError, ssl.SSLError, ValueError: A certificate, key or CA file is missing or not PEM.
    """

    def __init__(
        self,
        certificate: Path,
        key: Path,
        min_version: TlsVersion = "1.2",
        trunks: Sequence[TrunkConfig] = (),
    ) -> None:
        self._trunks = tuple(trunks)
        self._rules: dict[str, ClientCertificateRule] = {
            trunk.name: ClientCertificateRule(
                trunk.name, _load_issuers(trunk.tls_client_ca), trunk.tls_client_name
            )
            for trunk in self._trunks
            if trunk.tls_client_ca is not None
        }
        cas = [t.tls_client_ca for t in self._trunks if t.tls_client_ca is not None]
        self.server = server_context(certificate, key, min_version, cas)
        self.client = client_context(min_version)

    def rule_for(self, ip: str) -> ClientCertificateRule | None:
        """The client-certificate rule of the trunk ``ip`` belongs to, if that trunk wants mutual TLS."""
        if not self._rules:
            return None
        trunk = match_trunk(ip, self._trunks)
        return self._rules.get(trunk.name) if trunk is not None else None


# --- the generated default certificate ---


def _host_names(hosts: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(h.strip("[]") for h in hosts if h and h.strip("[]") not in _WILDCARD_HOSTS))
    return names or [socket.gethostname()]


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _covers(certificate: x509.Certificate, hosts: Sequence[str], now: datetime.datetime) -> bool:
    if certificate.not_valid_after_utc - now < RENEW_BEFORE or certificate.not_valid_before_utc > now:
        return False
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = set(names)
    return all(_san(host) in present for host in hosts)


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, replacing any old one atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by the umask; this is not
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def generate_self_signed(certificate: Path, key: Path, hosts: Sequence[str]) -> None:
    """Write a self-signed RSA-2048 certificate naming ``hosts`` (IP or DNS SANs) and its key (0600).

    RSA rather than ECDSA because desk phones and older SBCs still lack ECDSA; blocking.
    """
    names = _host_names(hosts)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Helpline (self-signed)"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + GENERATED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(private_key, hashes.SHA256())
    )
    certificate.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(
        key,
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    tmp = certificate.with_name(certificate.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, certificate)


def _reuse_problem(certificate: Path, key: Path, names: Sequence[str]) -> str | None:
    """Why the pair on disk cannot be reused (as "is ..." / "does ..."), or None."""
    try:
        existing = x509.load_pem_x509_certificate(certificate.read_bytes())
        private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        return f"is unreadable ({exc})"
    if existing.public_key() != private_key.public_key():
        return "does not match its key"
    if not _covers(existing, names, datetime.datetime.now(datetime.UTC)):
        return f"is expiring or does not name all of {', '.join(names)}"
    return None


def ensure_self_signed(directory: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """The generated pair under ``directory``, made now unless a usable one is already there.

    Usable: both parse, belong together, and the certificate is valid for at least
    :data:`RENEW_BEFORE` more and names every host. The key is put back to 0600 if someone widened
    it. Blocking.
    """
    certificate, key = directory / GENERATED_CERTIFICATE, directory / GENERATED_KEY
    names = _host_names(hosts)
    if certificate.is_file() and key.is_file():
        problem = _reuse_problem(certificate, key, names)
        if problem is None:
            if key.stat().st_mode & 0o077:
                logger.warning("TLS key %s was readable by others; restoring mode 0600", key)
                key.chmod(0o600)
            return certificate, key
        logger.warning("generated TLS certificate %s %s; making a new one", certificate, problem)
    generate_self_signed(certificate, key, names)
    logger.warning(
        "generated a self-signed TLS certificate for %s at %s; peers cannot verify it: set "
        "tls_certificate and tls_key for production",
        ", ".join(names),
        certificate,
    )
    return certificate, key


def resolve_tls(
    sip: SipSettings, agents: AgentEdgeSettings, data_dir: Path
) -> tuple[SipSettings, AgentEdgeSettings]:
    """Fill in the certificate and key of each TLS listener that has none configured.

    Both listeners share one generated pair under ``<data_dir>/tls/`` naming their listen and
    advertised hosts. A listener with ``tls_port`` None, or with its own pair, is returned unchanged.
    Blocking: the server calls it through ``asyncio.to_thread``.
    """
    sip_wants = sip.tls_port is not None and sip.tls_certificate is None
    agents_wants = agents.tls_port is not None and agents.tls_certificate is None
    if not (sip_wants or agents_wants):
        return sip, agents
    hosts = [h for s in (sip, agents) if s.tls_port is not None for h in (s.host, s.advertised_host) if h]
    certificate, key = ensure_self_signed(data_dir / GENERATED_DIR, hosts)
    filled = {"tls_certificate": certificate, "tls_key": key}
    return (
        sip.model_copy(update=filled) if sip_wants else sip,
        agents.model_copy(update=filled) if agents_wants else agents,
    )
