"""The two secrets sealing needs: the Ed25519 signing key and the key-encryption key (KEK).

Both are generated on first use and kept in ``<data_dir>/keys/`` (directory 0700, files 0600), never in
recording storage: whoever can write to storage must not be able to forge a signature or read audio.
A key file is created atomically and never overwritten (``os.link`` from a finished temp file), so two
processes starting at once end up sharing the first key rather than each holding a different one.
Only the public half of the signing key is exported next to the recordings.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

logger = logging.getLogger(__name__)

KEK_BYTES = 32
DEK_BYTES = 32
_KEK_MAGIC = b"helpline-kek-v1\n"  # the KEK file is this line, then the key in base64 and a newline


class KeyFileError(Exception):
    """A key file is missing, unreadable or not a key of the expected kind; ``path`` names it."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class UnwrapError(Exception):
    """A wrapped data key did not unwrap: wrong KEK, or the wrapped key was altered."""


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (``sha256:`` + hex of the raw 32 bytes, first 16 bytes),
    printed by the verifier so a reviewer can compare it with the one the operator publishes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def parse_public_key(pem: bytes, source: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM bytes; ``source`` names where they came from in the error."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"{source}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{source}: not an Ed25519 public key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file (what the verifier needs, nothing secret)."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(path, f"cannot read public key: {exc.strerror or exc}") from None
    try:
        return parse_public_key(pem, str(path))
    except ValueError as exc:
        raise KeyFileError(path, str(exc).removeprefix(f"{path}: ")) from None


def verify_signature(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _ensure_private_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        return
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        logger.warning(
            "key directory %s is accessible to others (mode %o); 0700 is expected", directory, mode
        )


def _create_exclusive(path: Path, content: bytes) -> bool:
    """Write ``content`` to ``path`` (0600) unless it exists; True when this call created it.

    The bytes go to a temp file that is fsynced and then hard-linked to ``path``: the link either
    appears complete or fails because someone else's key is already there, never half-written."""
    _ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def _read_secret(path: Path, what: str) -> bytes:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(path, f"cannot read {what}: {exc.strerror or exc}") from None
    if mode & 0o077:
        logger.warning("%s %s is readable by others (mode %o); 0600 is expected", what, path, mode)
    return data


def _write_public(path: Path, pem: bytes) -> None:
    """Replace ``path`` with ``pem`` atomically (temp file, fsync, rename): readers never see half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class SigningKey:
    """The Ed25519 key that signs manifests and ledger entries."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._private = private_key
        self.path = path
        self.public_key: Ed25519PublicKey = private_key.public_key()

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key in ``path`` (PKCS#8 PEM); a new one is generated and stored there when none exists."""
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            if _create_exclusive(path, pem):
                logger.info("generated a recording signing key in %s", path)
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        pem = _read_secret(path, "signing key")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(path, f"not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(path, f"not an Ed25519 private key ({type(key).__name__})")
        return cls(key, path)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def public_pem(self) -> bytes:
        return public_pem(self.public_key)

    def export_public(self, path: Path) -> None:
        """Write the public key (PEM, 0644) to ``path``, e.g. ``<storage>/keys/recording-signing.pub``."""
        _write_public(path, self.public_pem())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


class Kek:
    """The key-encryption key: wraps each recording's data key with AES-KW (RFC 3394).

    Rotation means re-wrapping the small ``key.wrapped`` files, never re-encrypting audio; losing this
    key loses every encrypted recording, so back it up where the recordings are not."""

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        if len(key) != KEK_BYTES:
            raise ValueError(f"a KEK is {KEK_BYTES} bytes, got {len(key)}")
        self._key = key
        self.path = path

    @classmethod
    def load_or_create(cls, path: Path) -> Kek:
        if not path.exists():
            content = _KEK_MAGIC + base64.b64encode(secrets.token_bytes(KEK_BYTES)) + b"\n"
            if _create_exclusive(path, content):
                logger.info("generated a recording key-encryption key in %s", path)
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> Kek:
        data = _read_secret(path, "key-encryption key")
        if len(data) == KEK_BYTES and not data.startswith(_KEK_MAGIC):
            return cls(data, path)  # a raw 32-byte key, e.g. one brought from a KMS export
        if not data.startswith(_KEK_MAGIC):
            raise KeyFileError(
                path, "not a helpline key-encryption key (first line is not 'helpline-kek-v1')"
            )
        try:
            key = base64.b64decode(data[len(_KEK_MAGIC) :].strip(), validate=True)
        except ValueError:
            raise KeyFileError(path, "the key is not valid base64") from None
        if len(key) != KEK_BYTES:
            raise KeyFileError(path, f"the key is {len(key)} bytes, {KEK_BYTES} expected")
        return cls(key, path)

    def wrap(self, dek: bytes) -> bytes:
        if len(dek) != DEK_BYTES:
            raise ValueError(f"a data key is {DEK_BYTES} bytes, got {len(dek)}")
        return aes_key_wrap(self._key, dek)

    def unwrap(self, blob: bytes) -> bytes:
        try:
            dek = aes_key_unwrap(self._key, blob)
        except (InvalidUnwrap, ValueError) as exc:
            where = f" (KEK {self.path})" if self.path else ""
            raise UnwrapError(
                f"the data key does not unwrap with this KEK{where}: wrong KEK or altered key"
            ) from exc
        if len(dek) != DEK_BYTES:
            raise UnwrapError(f"the unwrapped data key is {len(dek)} bytes, {DEK_BYTES} expected")
        return dek


def new_data_key() -> bytes:
    """A fresh random 256-bit data key for one recording."""
    return secrets.token_bytes(DEK_BYTES)
