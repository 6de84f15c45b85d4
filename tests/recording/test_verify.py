"""Verification of stored recordings against their manifests and the ledger, and the verify command.

Recordings are sealed here the way the service does it: a WAV built with ``wave``/numpy, optional
encryption, a signed manifest, storage through ``LocalStorage`` and a ``sealed`` ledger entry.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import pytest

from helpline.recording.crypto import CHUNK_BYTES, HEADER_BYTES, TAG_BYTES
from helpline.recording.keys import Kek
from helpline.recording.manifest import canonical, sha256_hex
from helpline.recording.verify import StoreReport, verify_recording, verify_store
from helpline.recording.verify_cli import add_verify_command, run_verify
from tests.recording.sealing_support import (
    FRAME_BYTES,
    Store,
    flip_byte,
    make_store,
    seal_sample,
)


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    s = make_store(tmp_path)
    await seal_sample(s, "rec-a", seed=1)
    await seal_sample(s, "rec-b", seed=2)
    await seal_sample(s, "rec-c", encrypt=True, seed=3)
    return s


def _codes(report: StoreReport) -> list[tuple[str, str]]:
    return sorted((p.recording_id or "", p.code) for p in report.problems)


def _writable(path: Path) -> Path:
    path.chmod(0o640)  # sealed files are 0440; a tamperer with access makes them writable first
    return path


def test_clean_store_verifies(store: Store) -> None:
    report = verify_store(store.root, store.signing.public_key, store.kek)
    assert report.ok, report.problems
    assert [r.recording_id for r in report.recordings] == ["rec-a", "rec-b", "rec-c"]
    assert report.ledger_entries == 3
    without_kek = verify_store(store.root, store.signing.public_key)
    assert without_kek.ok
    assert without_kek.recordings[2].notes == [
        "audio is encrypted and no KEK was given: checked the ciphertext hash only"
    ]


def test_flipped_audio_byte_names_recording_and_segment(store: Store) -> None:
    directory = store.storage.path_of("2024/05/01/rec-b")
    data_offset = (directory / "audio.wav").read_bytes().index(b"data") + 8
    flip_byte(_writable(directory / "audio.wav"), data_offset + 3 * 50 * FRAME_BYTES + 17)
    report = verify_store(store.root, store.signing.public_key)
    assert _codes(report) == [("rec-b", "segment-changed")]
    assert report.problems[0].segment == 3
    single = verify_recording(directory, store.signing.public_key)
    assert [(p.code, p.segment) for p in single.problems] == [("segment-changed", 3)]


def test_deleted_directory_is_reported_missing(store: Store) -> None:
    shutil.rmtree(store.storage.path_of("2024/05/01/rec-a"))
    report = verify_store(store.root, store.signing.public_key)
    assert _codes(report) == [("rec-a", "recording-missing")]


async def test_deletion_receipt_makes_removal_legitimate(store: Store) -> None:
    key = "2024/05/01/rec-a"
    manifest_sha = sha256_hex((store.storage.path_of(key) / "manifest.json").read_bytes())
    await store.storage.delete(key)
    store.ledger.append_deleted("rec-a", manifest_sha, "retention expired", "sweeper")
    report = verify_store(store.root, store.signing.public_key, store.kek)
    assert report.ok, report.problems
    assert any("rec-a: deleted" in note and "sweeper" in note for note in report.notes)


def test_files_left_after_a_deletion_receipt_are_reported(store: Store) -> None:
    store.ledger.append_deleted("rec-a", "00" * 32, "erasure", "admin")
    assert _codes(verify_store(store.root, store.signing.public_key)) == [("rec-a", "deleted-but-present")]


def test_edited_manifest_field_fails_the_signature(store: Store) -> None:
    path = _writable(store.storage.path_of("2024/05/01/rec-a") / "manifest.json")
    manifest = json.loads(path.read_bytes())
    manifest["recovered"] = True
    path.write_bytes(canonical(manifest))
    report = verify_store(store.root, store.signing.public_key)
    assert _codes(report) == [("rec-a", "manifest-replaced"), ("rec-a", "manifest-signature")]


def test_removed_ledger_line_breaks_the_chain(store: Store) -> None:
    lines = store.ledger.path.read_text().splitlines(keepends=True)
    store.ledger.path.write_text(lines[0] + lines[2])
    report = verify_store(store.root, store.signing.public_key)
    assert _codes(report) == [("rec-b", "not-in-ledger"), ("rec-c", "ledger-chain")]


def test_edited_ledger_line_is_reported(store: Store) -> None:
    lines = store.ledger.path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"kind":"sealed"', '"kind":"deleted"')
    store.ledger.path.write_text("".join(lines))
    report = verify_store(store.root, store.signing.public_key)
    assert ("rec-b", "ledger-edited") in _codes(report)


async def test_recording_stored_without_ledger_entry_is_reported(store: Store) -> None:
    sealed = await seal_sample(store, "rec-d", seed=4)
    lines = store.ledger.path.read_text().splitlines(keepends=True)
    store.ledger.path.write_text("".join(lines[:-1]))  # the last line: the chain alone cannot show it
    report = verify_store(store.root, store.signing.public_key)
    assert _codes(report) == [(sealed.recording_id, "not-in-ledger")]


def test_tampered_ciphertext(store: Store) -> None:
    directory = store.storage.path_of("2024/05/01/rec-c")
    flip_byte(_writable(directory / "audio.wav.enc"), HEADER_BYTES + 2 * (CHUNK_BYTES + TAG_BYTES) + 9)
    without_kek = verify_store(store.root, store.signing.public_key)
    assert _codes(without_kek) == [("rec-c", "ciphertext-changed")]
    with_kek = verify_store(store.root, store.signing.public_key, store.kek)
    assert _codes(with_kek) == [("rec-c", "ciphertext-changed"), ("rec-c", "decrypt-failed")]
    failure = next(p for p in with_kek.problems if p.code == "decrypt-failed")
    assert "chunk 2" in failure.message


def test_wrong_kek_is_reported(store: Store, tmp_path: Path) -> None:
    wrong = Kek.load_or_create(tmp_path / "keys" / "other-kek")
    assert _codes(verify_store(store.root, store.signing.public_key, wrong)) == [("rec-c", "key-unwrap")]


def test_changed_consent_evidence_is_reported(store: Store) -> None:
    path = _writable(store.storage.path_of("2024/05/01/rec-a") / "consent.json")
    records = json.loads(path.read_text())
    records[0]["outcome"] = "denied"
    path.write_text(json.dumps(records))
    assert _codes(verify_store(store.root, store.signing.public_key)) == [("rec-a", "consent-changed")]


def test_missing_signature_file(store: Store) -> None:
    (store.storage.path_of("2024/05/01/rec-a") / "manifest.sig").unlink()
    assert _codes(verify_store(store.root, store.signing.public_key)) == [("rec-a", "missing-file")]


def test_single_recording_is_checked_against_the_whole_ledger(store: Store) -> None:
    report = verify_store(store.root, store.signing.public_key, recording_ids={"rec-b"})
    assert report.ok and [r.recording_id for r in report.recordings] == ["rec-b"]
    unknown = verify_store(store.root, store.signing.public_key, recording_ids={"rec-zzz"})
    assert _codes(unknown) == [("rec-zzz", "unknown-recording")]


# ---- the command ------------------------------------------------------------------------------------


def _run(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="helpline recordings")
    add_verify_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["verify", *argv])
    out = io.StringIO()
    status = args.func(args, out)
    assert args.func is run_verify
    return status, out.getvalue()


def test_command_reports_ok_and_problems(store: Store) -> None:
    root = str(store.root)
    status, text = _run("--all", "--root", root)
    assert status == 0, text
    assert "OK   rec-a" in text and "3 recording(s) checked: all verified" in text
    assert "stored beside the recordings" in text

    directory = store.storage.path_of("2024/05/01/rec-a")
    data_offset = (directory / "audio.wav").read_bytes().index(b"data") + 8
    flip_byte(_writable(directory / "audio.wav"), data_offset + 5)
    status, text = _run("--root", root)
    assert status == 1
    assert "FAIL rec-a: segment 0 changed (frames 0-50, 0.00-1.00 s)" in text

    status, text = _run("rec-b", "--root", root, "--json")
    assert status == 0
    report = json.loads(text)
    assert report["ok"] is True and [r["recording_id"] for r in report["recordings"]] == ["rec-b"]


def test_command_with_explicit_keys(store: Store, tmp_path: Path) -> None:
    pub = tmp_path / "published.pem"
    store.signing.export_public(pub)
    status, text = _run(
        "rec-c", "--root", str(store.root), "--public-key", str(pub), "--kek", str(tmp_path / "keys" / "kek")
    )
    assert status == 0, text
    assert "note:" not in text  # the KEK was given: the audio itself was checked


def test_command_usage_errors(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = _run("--root", str(store.root), "--public-key", str(tmp_path / "nope.pem"))
    assert status == 2
    assert "nope.pem: cannot read public key" in capsys.readouterr().err
    status, _ = _run("--root", str(tmp_path / "no-store"))
    assert status == 2
    assert "no recording storage there" in capsys.readouterr().err
