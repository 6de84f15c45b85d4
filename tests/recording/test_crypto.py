"""Chunked AES-256-GCM: round trips, random access across chunk edges, and every kind of tampering."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from helpline.recording.crypto import (
    CHUNK_BYTES,
    HEADER_BYTES,
    TAG_BYTES,
    DecryptingReader,
    DecryptionError,
    decrypt_file,
    encrypt_file,
    encrypted_size,
)
from helpline.recording.keys import new_data_key

SIZE = 3 * CHUNK_BYTES + 123


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "audio.wav"
    path.write_bytes(os.urandom(SIZE))
    return path


def _chunk_offset(i: int) -> int:
    return HEADER_BYTES + i * (CHUNK_BYTES + TAG_BYTES)


def test_round_trip_with_reads_at_chunk_edges(plain: Path, tmp_path: Path) -> None:
    dek = new_data_key()
    enc = encrypt_file(plain, tmp_path / "audio.wav.enc", dek)
    data = plain.read_bytes()
    raw = enc.path.read_bytes()
    assert enc.plaintext_size == SIZE
    assert len(raw) == encrypted_size(SIZE) == HEADER_BYTES + SIZE + 4 * TAG_BYTES
    assert enc.ciphertext_sha256 == hashlib.sha256(raw).hexdigest()
    assert enc.manifest_entry() == {
        "alg": "A256GCM-chunked",
        "chunk": 65536,
        "ciphertext_sha256": enc.ciphertext_sha256,
    }
    assert data[:64] not in raw
    with DecryptingReader(enc.path, dek) as reader:
        assert reader.size == SIZE
        for offset, length in [
            (0, 1),
            (0, 44),
            (CHUNK_BYTES - 1, 2),
            (CHUNK_BYTES, CHUNK_BYTES),
            (CHUNK_BYTES - 5, 2 * CHUNK_BYTES + 10),
            (3 * CHUNK_BYTES, 123),
            (SIZE - 3, 10),
            (0, SIZE),
        ]:
            assert reader.read(offset, length) == data[offset : offset + length], (offset, length)
        assert reader.read(SIZE, 5) == b""
        assert reader.read(SIZE + 100, 5) == b""
        assert b"".join(reader.iter_plaintext()) == data


def test_random_reads_over_many_small_chunks(plain: Path, tmp_path: Path) -> None:
    dek = new_data_key()
    enc = encrypt_file(plain, tmp_path / "small.enc", dek, chunk=1000)
    data = plain.read_bytes()
    rng = random.Random(7)
    with DecryptingReader(enc.path, dek) as reader:
        assert reader.chunk == 1000
        for _ in range(300):
            offset = rng.randrange(0, SIZE)
            length = rng.randrange(0, 5000)
            assert reader.read(offset, length) == data[offset : offset + length]


def test_empty_file_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    dek = new_data_key()
    enc = encrypt_file(src, tmp_path / "empty.enc", dek)
    with DecryptingReader(enc.path, dek) as reader:
        assert reader.size == 0
        assert reader.read(0, 10) == b""


def test_decrypt_file_writes_the_plaintext(plain: Path, tmp_path: Path) -> None:
    dek = new_data_key()
    enc = encrypt_file(plain, tmp_path / "a.enc", dek)
    decrypt_file(enc.path, tmp_path / "back.wav", dek)
    assert (tmp_path / "back.wav").read_bytes() == plain.read_bytes()


def test_wrong_data_key_fails_on_read(plain: Path, tmp_path: Path) -> None:
    enc = encrypt_file(plain, tmp_path / "a.enc", new_data_key())
    with DecryptingReader(enc.path, new_data_key()) as reader, pytest.raises(DecryptionError) as info:
        reader.read(0, 10)
    assert info.value.chunk == 0
    assert "a.enc: authentication failed" in str(info.value)


def test_tampered_chunk_fails_only_there(plain: Path, tmp_path: Path) -> None:
    dek = new_data_key()
    enc = encrypt_file(plain, tmp_path / "a.enc", dek)
    raw = bytearray(enc.path.read_bytes())
    raw[_chunk_offset(2) + 100] ^= 0x80
    enc.path.write_bytes(bytes(raw))
    data = plain.read_bytes()
    with DecryptingReader(enc.path, dek) as reader:
        assert reader.read(0, 2 * CHUNK_BYTES) == data[: 2 * CHUNK_BYTES]
        with pytest.raises(DecryptionError, match=r"\(chunk 2\)") as info:
            reader.read(2 * CHUNK_BYTES + 5, 1)
        assert info.value.chunk == 2
        with pytest.raises(DecryptionError):
            b"".join(reader.iter_plaintext())


def test_swapped_chunks_fail(plain: Path, tmp_path: Path) -> None:
    dek = new_data_key()
    enc = encrypt_file(plain, tmp_path / "a.enc", dek)
    raw = enc.path.read_bytes()
    c0 = raw[_chunk_offset(0) : _chunk_offset(1)]
    c1 = raw[_chunk_offset(1) : _chunk_offset(2)]
    enc.path.write_bytes(raw[:HEADER_BYTES] + c1 + c0 + raw[_chunk_offset(2) :])
    with DecryptingReader(enc.path, dek) as reader, pytest.raises(DecryptionError) as info:
        reader.read(0, 1)
    assert info.value.chunk == 0


def test_header_is_bound_to_every_chunk(plain: Path, tmp_path: Path) -> None:
    dek = new_data_key()
    enc = encrypt_file(plain, tmp_path / "a.enc", dek)
    raw = bytearray(enc.path.read_bytes())
    raw[17] ^= 0x01  # a byte of the salt
    enc.path.write_bytes(bytes(raw))
    with DecryptingReader(enc.path, dek) as reader, pytest.raises(DecryptionError):
        reader.read(3 * CHUNK_BYTES, 1)


def test_truncated_or_extended_file_fails_at_open(plain: Path, tmp_path: Path) -> None:
    dek = new_data_key()
    enc = encrypt_file(plain, tmp_path / "a.enc", dek)
    raw = enc.path.read_bytes()
    enc.path.write_bytes(raw[:-1])
    with pytest.raises(DecryptionError, match="truncated or extended"):
        DecryptingReader(enc.path, dek)
    enc.path.write_bytes(raw + b"\0")
    with pytest.raises(DecryptionError, match="truncated or extended"):
        DecryptingReader(enc.path, dek)
    enc.path.write_bytes(b"PLAINWAV" + raw[8:])
    with pytest.raises(DecryptionError, match="bad magic"):
        DecryptingReader(enc.path, dek)
    enc.path.write_bytes(raw[:10])
    with pytest.raises(DecryptionError, match="too short"):
        DecryptingReader(enc.path, dek)
