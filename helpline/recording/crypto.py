"""Chunked AES-256-GCM for recordings at rest, with random-access decryption.

One GCM nonce must never cover a multi-gigabyte stream, and a player seeking to minute 40 must not
decrypt minutes 0-39, so the WAV is cut into fixed plaintext chunks (64 KiB), each sealed on its own:

    header  = "HLRECENC" | version u8 | 3 zero bytes | chunk size u32 | salt (4 bytes) | plaintext length u64
    chunk i = AES-256-GCM(dek, nonce = salt | i as u64 big-endian, aad = header | i as u64 big-endian)

All integers are big-endian. Every chunk's associated data carries the whole header, so changing the
length, the chunk size or the salt breaks every tag; the index in nonce and AAD stops chunks being
swapped; the authenticated length makes a cut-off or extended file detectable before any chunk is read.
The functions block (file I/O and crypto): callers on the event loop run them in a thread.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"HLRECENC"
VERSION = 1
CHUNK_BYTES = 64 * 1024
TAG_BYTES = 16
ALGORITHM = "A256GCM-chunked"
_HEADER = struct.Struct(">8sB3xI4sQ")
HEADER_BYTES = _HEADER.size
_MAX_CHUNK = 16 * 1024 * 1024


class DecryptionError(Exception):
    """The encrypted file is malformed or fails authentication; names the file and, when known, the chunk."""

    def __init__(self, path: Path, message: str, chunk: int | None = None) -> None:
        where = f" (chunk {chunk})" if chunk is not None else ""
        super().__init__(f"{path}: {message}{where}")
        self.path = path
        self.chunk = chunk


@dataclass(frozen=True, slots=True)
class EncryptedFile:
    """What sealing records about an encrypted file (see ``manifest_entry``)."""

    path: Path
    plaintext_size: int
    ciphertext_sha256: str
    chunk: int

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest's ``encryption`` object."""
        return {"alg": ALGORITHM, "chunk": self.chunk, "ciphertext_sha256": self.ciphertext_sha256}


def _index(i: int) -> bytes:
    return i.to_bytes(8, "big")


def _chunk_count(plaintext_size: int, chunk: int) -> int:
    return -(-plaintext_size // chunk)


def encrypted_size(plaintext_size: int, chunk: int = CHUNK_BYTES) -> int:
    return HEADER_BYTES + plaintext_size + TAG_BYTES * _chunk_count(plaintext_size, chunk)


def encrypt_file(src: Path, dst: Path, dek: bytes, *, chunk: int = CHUNK_BYTES) -> EncryptedFile:
    """Encrypt ``src`` into ``dst`` (temp file, fsync, rename: ``dst`` is complete or absent)."""
    if len(dek) != 32:
        raise ValueError(f"AES-256 needs a 32-byte data key, got {len(dek)}")
    if not 0 < chunk <= _MAX_CHUNK:
        raise ValueError(f"chunk size {chunk} is out of range")
    aead = AESGCM(dek)
    salt = secrets.token_bytes(4)
    digest = hashlib.sha256()
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(src, "rb") as inp, open(tmp, "wb") as out:
            size = os.fstat(inp.fileno()).st_size
            header = _HEADER.pack(MAGIC, VERSION, chunk, salt, size)
            out.write(header)
            digest.update(header)
            done = 0
            for i in range(_chunk_count(size, chunk)):
                plain = inp.read(chunk)
                if not plain:
                    raise OSError(f"{src}: file shrank while being encrypted ({done} of {size} bytes)")
                done += len(plain)
                sealed = aead.encrypt(salt + _index(i), plain, header + _index(i))
                out.write(sealed)
                digest.update(sealed)
            if done != size or inp.read(1):
                raise OSError(f"{src}: file changed size while being encrypted")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return EncryptedFile(dst, size, digest.hexdigest(), chunk)


class DecryptingReader:
    """Random-access reads of the plaintext of an encrypted file, decrypting only the chunks touched.

    ``read`` uses ``os.pread``, so one reader may serve several threads. The file's length is checked
    against the authenticated header at open: a truncated or extended file fails here, not mid-stream."""

    def __init__(self, path: Path, dek: bytes) -> None:
        self.path = path
        self._aead = AESGCM(dek)
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._header = os.pread(self._fd, HEADER_BYTES, 0)
            if len(self._header) != HEADER_BYTES:
                raise DecryptionError(path, "too short for an encrypted recording header")
            magic, version, chunk, salt, size = _HEADER.unpack(self._header)
            if magic != MAGIC:
                raise DecryptionError(path, "not an encrypted recording (bad magic)")
            if version != VERSION:
                raise DecryptionError(path, f"unsupported encryption format version {version}")
            if not 0 < chunk <= _MAX_CHUNK:
                raise DecryptionError(path, f"chunk size {chunk} in the header is out of range")
            actual = os.fstat(self._fd).st_size
            expected = encrypted_size(size, chunk)
            if actual != expected:
                raise DecryptionError(
                    path, f"file is {actual} bytes but its header promises {expected}: truncated or extended"
                )
        except BaseException:
            os.close(self._fd)
            raise
        self.chunk: int = chunk
        self.size: int = size
        self._salt: bytes = salt
        self._chunks = _chunk_count(size, chunk)
        self._cached: tuple[int, bytes] | None = None

    def _decrypt_chunk(self, i: int) -> bytes:
        cached = self._cached
        if cached is not None and cached[0] == i:
            return cached[1]
        plain_len = min(self.chunk, self.size - i * self.chunk)
        offset = HEADER_BYTES + i * (self.chunk + TAG_BYTES)
        sealed = os.pread(self._fd, plain_len + TAG_BYTES, offset)
        if len(sealed) != plain_len + TAG_BYTES:
            raise DecryptionError(self.path, "file ended inside a chunk", i)
        try:
            plain = self._aead.decrypt(self._salt + _index(i), sealed, self._header + _index(i))
        except InvalidTag:
            raise DecryptionError(
                self.path, "authentication failed: wrong data key or the ciphertext was altered", i
            ) from None
        self._cached = (i, plain)
        return plain

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` plaintext bytes from ``offset`` (fewer only at the end of the file)."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        parts = []
        for i in range(offset // self.chunk, (end - 1) // self.chunk + 1):
            start = i * self.chunk
            plain = self._decrypt_chunk(i)
            parts.append(plain[max(offset - start, 0) : end - start])
        return b"".join(parts)

    def iter_plaintext(self) -> Iterator[bytes]:
        """The whole plaintext, one chunk at a time (for hashing or copying without loading it all)."""
        for i in range(self._chunks):
            yield self._decrypt_chunk(i)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def decrypt_file(src: Path, dst: Path, dek: bytes) -> None:
    """Decrypt a whole file into ``dst`` (temp file and rename), e.g. for a download."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.tmp")
    try:
        with DecryptingReader(src, dek) as reader, open(tmp, "wb") as out:
            for part in reader.iter_plaintext():
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
