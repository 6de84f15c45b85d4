"""Key files: generated once with tight permissions, shared under a race, clear errors when broken."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helpline.recording.keys import (
    Kek,
    KeyFileError,
    SigningKey,
    UnwrapError,
    load_public_key,
    new_data_key,
    verify_signature,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_signing_key_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys" / "recording-signing.pem"
    key = SigningKey.load_or_create(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    again = SigningKey.load_or_create(path)
    assert again.fingerprint == key.fingerprint
    sig = key.sign(b"manifest")
    assert verify_signature(again.public_key, sig, b"manifest")
    assert not verify_signature(again.public_key, sig, b"manifesT")


def test_public_key_export_round_trips(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path / "k.pem")
    pub = tmp_path / "store" / "keys" / "recording-signing.pub"
    key.export_public(pub)
    assert _mode(pub) == 0o644
    loaded = load_public_key(pub)
    assert verify_signature(loaded, key.sign(b"x"), b"x")
    key.export_public(pub)  # replacing an existing export is fine
    assert load_public_key(pub).public_bytes_raw() == key.public_key.public_bytes_raw()


def test_racing_creators_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "race.pem"
    with ThreadPoolExecutor(8) as pool:
        prints = set(pool.map(lambda _: SigningKey.load_or_create(path).fingerprint, range(16)))
    assert len(prints) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["race.pem"]


def test_broken_signing_key_files_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    os.chmod(garbage, 0o600)
    with pytest.raises(KeyFileError, match=r"garbage\.pem: not an unencrypted PEM private key"):
        SigningKey.load(garbage)

    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(KeyFileError, match=r"ec\.pem: not an Ed25519 private key"):
        SigningKey.load(ec_key)

    directory = tmp_path / "dir.pem"
    directory.mkdir()
    with pytest.raises(KeyFileError, match=r"dir\.pem: cannot read signing key"):
        SigningKey.load_or_create(directory)

    with pytest.raises(KeyFileError, match=r"missing\.pub: cannot read public key"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(KeyFileError, match=r"garbage\.pem: not a PEM public key"):
        load_public_key(garbage)


def test_kek_wraps_and_unwraps(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "recording-kek"
    kek = Kek.load_or_create(path)
    assert _mode(path) == 0o600
    dek = new_data_key()
    blob = kek.wrap(dek)
    assert len(blob) == 40 and dek not in blob
    assert Kek.load_or_create(path).unwrap(blob) == dek


def test_wrong_kek_or_altered_blob_fails_clearly(tmp_path: Path) -> None:
    kek = Kek.load_or_create(tmp_path / "a")
    other = Kek.load_or_create(tmp_path / "b")
    blob = kek.wrap(new_data_key())
    with pytest.raises(UnwrapError, match="wrong KEK or altered key"):
        other.unwrap(blob)
    altered = bytes([blob[0] ^ 1]) + blob[1:]
    with pytest.raises(UnwrapError):
        kek.unwrap(altered)
    with pytest.raises(UnwrapError):
        kek.unwrap(blob[:-8])


def test_broken_kek_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad-kek"
    bad.write_bytes(b"something else entirely\n")
    with pytest.raises(KeyFileError, match="bad-kek: not a helpline key-encryption key"):
        Kek.load(bad)
    short = tmp_path / "short-kek"
    short.write_bytes(b"helpline-kek-v1\nAAAA\n")
    with pytest.raises(KeyFileError, match="short-kek: the key is 3 bytes, 32 expected"):
        Kek.load(short)
    not_b64 = tmp_path / "nb64-kek"
    not_b64.write_bytes(b"helpline-kek-v1\n!!!!\n")
    with pytest.raises(KeyFileError, match="nb64-kek: the key is not valid base64"):
        Kek.load(not_b64)
    with pytest.raises(KeyFileError, match="absent: cannot read key-encryption key"):
        Kek.load(tmp_path / "absent")


def test_raw_32_byte_kek_is_accepted(tmp_path: Path) -> None:
    raw = os.urandom(32)
    path = tmp_path / "raw.bin"
    path.write_bytes(raw)
    dek = new_data_key()
    assert Kek(raw).unwrap(Kek.load(path).wrap(dek)) == dek
