"""Export bundles: written streaming, verifiable offline, and tampering inside them is located."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from helpline.recording.bundle import BundleItem, write_bundle
from helpline.recording.crypto import DecryptingReader
from helpline.recording.keys import SigningKey
from helpline.recording.verify import StoreReport, verify_bundle
from tests.recording.sealing_support import (
    CONSENT_RECORD,
    FRAME_BYTES,
    Sealed,
    Store,
    make_store,
    seal_sample,
)


@pytest.fixture
async def sealed(tmp_path: Path) -> tuple[Store, list[Sealed]]:
    store = make_store(tmp_path)
    plain = await seal_sample(store, "rec-a", seed=1)
    encrypted = await seal_sample(store, "rec-b", encrypt=True, seed=2)
    return store, [plain, encrypted]


def _bundle(store: Store, recordings: list[Sealed], out: Path) -> Path:
    plain, encrypted = recordings
    dek = store.kek.unwrap((encrypted.directory / "key.wrapped").read_bytes())
    record = json.loads((plain.directory / "consent.json").read_text())
    with DecryptingReader(encrypted.directory / "audio.wav.enc", dek) as reader:
        items = [
            BundleItem(
                "rec-a", plain.directory, plain.directory / "audio.wav", {"caller": "+15551230000"}, record
            ),
            BundleItem("rec-b", encrypted.directory, reader, {"caller": "+15551239999"}, record),
        ]
        return write_bundle(out, items, store.signing.public_pem(), store.ledger.path)


def _codes(report: StoreReport) -> list[tuple[str, str]]:
    return sorted((p.recording_id or "", p.code) for p in report.problems)


def test_bundle_layout_and_clean_verification(sealed: tuple[Store, list[Sealed]], tmp_path: Path) -> None:
    store, recordings = sealed
    out = _bundle(store, recordings, tmp_path / "export.zip")
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert names == {
            f"{rid}/{name}"
            for rid in ("rec-a", "rec-b")
            for name in ("audio.wav", "metadata.json", "manifest.json", "manifest.sig", "consent.json")
        } | {"public_key.pem", "ledger.jsonl", "README.txt"}
        assert zf.getinfo("rec-a/audio.wav").compress_type == zipfile.ZIP_STORED
        assert zf.read("rec-a/manifest.json") == (recordings[0].directory / "manifest.json").read_bytes()
        assert zf.read("ledger.jsonl") == store.ledger.path.read_bytes()
        assert (
            zf.read("rec-b/consent.json")
            and json.loads(zf.read("rec-b/consent.json"))[0]["id"] == CONSENT_RECORD["id"]
        )
        assert b"helpline recordings verify --bundle" in zf.read("README.txt")
    assert list(tmp_path.glob(".export.zip.*")) == []

    report = verify_bundle(out, store.signing.public_key)
    assert report.ok, report.problems
    assert [r.recording_id for r in report.recordings] == ["rec-a", "rec-b"]
    assert report.notes == []

    self_keyed = verify_bundle(out)
    assert self_keyed.ok
    assert "(from the bundle itself)" in self_keyed.key
    assert any("public key inside the bundle" in note for note in self_keyed.notes)


def _stored_data_offset(zip_path: Path, member: str) -> int:
    """Where a stored member's bytes start in the zip file (read from its local header)."""
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)
    raw = zip_path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return int(info.header_offset) + 30 + int(name_len) + int(extra_len)


def test_byte_flipped_inside_the_zip_names_the_segment(
    sealed: tuple[Store, list[Sealed]], tmp_path: Path
) -> None:
    store, recordings = sealed
    out = _bundle(store, recordings, tmp_path / "export.zip")
    start = _stored_data_offset(out, "rec-b/audio.wav")
    wav_data = recordings[1].data_offset
    raw = bytearray(out.read_bytes())
    raw[start + wav_data + 4 * 50 * FRAME_BYTES + 3] ^= 0x40  # segment 4 of the decrypted recording
    out.write_bytes(bytes(raw))
    report = verify_bundle(out, store.signing.public_key)
    assert _codes(report) == [("rec-b", "segment-changed")]
    assert report.problems[0].segment == 4


def test_rewritten_bundle_with_edited_manifest(sealed: tuple[Store, list[Sealed]], tmp_path: Path) -> None:
    store, recordings = sealed
    original = _bundle(store, recordings, tmp_path / "export.zip")
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "rec-a/manifest.json":
                data = data.replace(b'"call_id":"call-1"', b'"call_id":"call-X"')
            if info.filename == "ledger.jsonl":
                data = b"".join(data.splitlines(keepends=True)[1:])  # drop rec-a's sealed entry
            dst.writestr(info, data)
    report = verify_bundle(forged, store.signing.public_key)
    assert _codes(report) == [
        ("rec-a", "manifest-signature"),
        ("rec-a", "not-in-ledger"),
        ("rec-b", "ledger-chain"),
    ]


def test_other_key_and_missing_parts(sealed: tuple[Store, list[Sealed]], tmp_path: Path) -> None:
    store, recordings = sealed
    out = _bundle(store, recordings, tmp_path / "export.zip")
    stranger = SigningKey.load_or_create(tmp_path / "stranger.pem")
    report = verify_bundle(out, stranger.public_key)
    assert {p.code for p in report.problems} == {"manifest-signature", "ledger-signature"}
    assert any("different public key" in note for note in report.notes)

    stripped = tmp_path / "stripped.zip"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(stripped, "w") as dst:
        for info in src.infolist():
            if info.filename not in ("ledger.jsonl", "rec-a/audio.wav", "public_key.pem"):
                dst.writestr(info, src.read(info))
    assert _codes(verify_bundle(stripped, store.signing.public_key)) == [
        ("", "missing-file"),
        ("rec-a", "missing-file"),
    ]
    assert _codes(verify_bundle(stripped)) == [("", "missing-file")]  # no key at all: nothing can be checked


def test_readme_recipe_verifies_with_openssl(sealed: tuple[Store, list[Sealed]], tmp_path: Path) -> None:
    store, recordings = sealed
    out = _bundle(store, recordings, tmp_path / "export.zip")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(unpacked)
    sig_bin = tmp_path / "manifest.sig.bin"
    sig_bin.write_bytes(base64.b64decode((unpacked / "rec-a" / "manifest.sig").read_text()))
    assert shutil.which("openssl")
    command = [
        "openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(unpacked / "public_key.pem"), "-rawin",
        "-in", str(unpacked / "rec-a" / "manifest.json"), "-sigfile", str(sig_bin),
    ]  # fmt: skip
    ok = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    (unpacked / "rec-a" / "manifest.json").write_bytes(
        (unpacked / "rec-a" / "manifest.json").read_bytes().replace(b"call-1", b"call-2")
    )
    bad = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
