"""Offline verification: one stored recording, the whole store against its ledger, or an export bundle.

Everything here needs only the public key (and the KEK to look inside encrypted audio), so a reviewer
or an auditor can run it away from the service. Each finding is a ``Problem`` naming the recording and
what is wrong in words a reviewer can act on: which segment changed (with its time span), which
recording is missing without a deletion receipt, which ledger line was removed or edited. Blocking
(file reads and hashing): run it in a thread from the event loop.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from helpline.recording.crypto import CHUNK_BYTES, DecryptingReader, DecryptionError
from helpline.recording.keys import Kek, UnwrapError, fingerprint, parse_public_key
from helpline.recording.ledger import check_ledger_lines, read_ledger
from helpline.recording.manifest import (
    ByteSource,
    Problem,
    check_audio,
    check_manifest,
    consent_digest,
    sha256_hex,
)
from helpline.recording.storage import LEDGER_NAME, LocalStorage

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
CONSENT = "consent.json"
AUDIO = "audio.wav"
AUDIO_ENC = "audio.wav.enc"
WRAPPED_KEY = "key.wrapped"
BUNDLE_PUBLIC_KEY = "public_key.pem"
BUNDLE_LEDGER = "ledger.jsonl"


@dataclass
class Report:
    """The verdict on one recording."""

    recording_id: str
    location: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why
    manifest_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id,
            "location": self.location,
            "ok": self.ok,
            "manifest_sha256": self.manifest_sha256,
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
        }


@dataclass
class StoreReport:
    """The verdict on a store or a bundle: its ledger, its recordings, and what is missing or extra."""

    source: str
    key: str  # where the public key came from, and its fingerprint
    ledger_entries: int = 0
    ledger_problems: list[Problem] = field(default_factory=list)
    store_problems: list[Problem] = field(default_factory=list)
    recordings: list[Report] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        found = [*self.ledger_problems, *self.store_problems]
        for report in self.recordings:
            found.extend(report.problems)
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key": self.key,
            "ok": self.ok,
            "ledger_entries": self.ledger_entries,
            "ledger_problems": [p.to_dict() for p in self.ledger_problems],
            "store_problems": [p.to_dict() for p in self.store_problems],
            "recordings": [r.to_dict() for r in self.recordings],
            "notes": self.notes,
        }


def _missing(rid: str, name: str) -> Problem:
    return Problem("missing-file", f"{name} is missing", rid)


def _check_sealed(
    report: Report,
    manifest_bytes: bytes | None,
    sig: str | None,
    consent: bytes | None,
    public_key: Ed25519PublicKey,
) -> dict[str, Any] | None:
    """Signature, manifest consistency, recording id and consent evidence; the manifest when readable."""
    rid = report.recording_id
    if manifest_bytes is None:
        report.problems.append(_missing(rid, MANIFEST))
        return None
    report.manifest_sha256 = sha256_hex(manifest_bytes)
    found = check_manifest(manifest_bytes, sig or "", public_key)
    if sig is None:
        found = [p for p in found if p.code != "manifest-signature"]
        report.problems.append(_missing(rid, SIGNATURE))
    report.problems.extend(Problem(p.code, p.message, rid, p.segment, p.line) for p in found)
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        return None
    if not isinstance(manifest, dict):
        return None
    if manifest.get("recording_id") != rid:
        report.problems.append(
            Problem(
                "recording-id-mismatch",
                f"manifest is for {manifest.get('recording_id')!r}, stored as {rid}",
                rid,
            )
        )
    _check_consent(report, manifest, consent)
    return manifest


def _check_consent(report: Report, manifest: dict[str, Any], consent: bytes | None) -> None:
    refs = manifest.get("consent") or []
    if not refs:
        return
    rid = report.recording_id
    if consent is None:
        report.problems.append(_missing(rid, CONSENT))
        return
    try:
        records = json.loads(consent)
        by_id = {str(r["id"]): r for r in records}
    except (ValueError, TypeError, KeyError):
        report.problems.append(
            Problem("consent-changed", f"{CONSENT} is not a list of evidence records", rid)
        )
        return
    for ref in refs:
        cid = ref.get("id")
        record = by_id.get(str(cid))
        if record is None:
            report.problems.append(Problem("consent-changed", f"consent evidence {cid} is missing", rid))
        elif consent_digest(record) != ref.get("sha256") or record.get(
            "record_sha256", ref.get("sha256")
        ) != ref.get("sha256"):
            report.problems.append(Problem("consent-changed", f"consent evidence {cid} was changed", rid))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _decryption_problem(rid: str, exc: DecryptionError, manifest: dict[str, Any]) -> Problem:
    if exc.chunk is None:
        return Problem("decrypt-failed", f"encrypted audio does not open: {exc}", rid)
    chunk = int((manifest.get("encryption") or {}).get("chunk", CHUNK_BYTES))
    seconds = max(0, exc.chunk * chunk - 44) / (manifest["format"]["rate"] * 4)
    return Problem(
        "decrypt-failed",
        f"encrypted audio chunk {exc.chunk} (around {seconds:.1f} s) fails authentication: "
        "the ciphertext was altered",
        rid,
    )


def verify_recording(directory: Path, public_key: Ed25519PublicKey, kek: Kek | None = None) -> Report:
    """Manifest signature, chain, consent evidence, and the audio: every segment hash and the whole-audio
    hash of a plain WAV; for encrypted audio the ciphertext hash, and with ``kek`` the plaintext too."""
    rid = directory.name
    report = Report(rid, str(directory))
    sig_bytes = _read(directory / SIGNATURE)
    manifest = _check_sealed(
        report,
        _read(directory / MANIFEST),
        sig_bytes.decode("ascii", "replace") if sig_bytes is not None else None,
        _read(directory / CONSENT),
        public_key,
    )
    if manifest is None:
        return report
    try:
        _check_stored_audio(report, directory, manifest, kek)
    except (KeyError, TypeError, ValueError) as exc:
        report.problems.append(
            Problem("manifest-malformed", f"manifest fields unusable for the audio check ({exc!r})", rid)
        )
    return report


def _check_stored_audio(report: Report, directory: Path, manifest: dict[str, Any], kek: Kek | None) -> None:
    rid = report.recording_id
    encryption = manifest.get("encryption")
    if encryption is None:
        if not (directory / AUDIO).is_file():
            report.problems.append(_missing(rid, AUDIO))
            return
        report.problems.extend(check_audio(manifest, directory / AUDIO))
        return
    enc_path = directory / AUDIO_ENC
    if not enc_path.is_file():
        report.problems.append(_missing(rid, AUDIO_ENC))
        return
    if _file_sha256(enc_path) != encryption["ciphertext_sha256"]:
        report.problems.append(
            Problem("ciphertext-changed", "encrypted audio differs from the sealed ciphertext", rid)
        )
    if kek is None:
        report.notes.append("audio is encrypted and no KEK was given: checked the ciphertext hash only")
        return
    wrapped = _read(directory / WRAPPED_KEY)
    if wrapped is None:
        report.problems.append(_missing(rid, WRAPPED_KEY))
        return
    try:
        dek = kek.unwrap(wrapped)
    except UnwrapError as exc:
        report.problems.append(Problem("key-unwrap", str(exc), rid))
        return
    try:
        with DecryptingReader(enc_path, dek) as reader:
            report.problems.extend(check_audio(manifest, reader))
    except DecryptionError as exc:
        report.problems.append(_decryption_problem(rid, exc, manifest))


def _ledger_state(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per recording id: the sealed manifest hash and the deletion receipt, in ledger order."""
    state: dict[str, dict[str, Any]] = {}
    for entry in entries:
        rid = str(entry.get("recording_id"))
        slot = state.setdefault(rid, {"sealed": None, "deleted": None})
        if entry.get("kind") == "sealed":
            slot["sealed"], slot["deleted"] = entry.get("manifest_sha256"), None
        elif entry.get("kind") == "deleted":
            slot["deleted"] = entry
    return state


def _reconcile(report: Report, state: dict[str, dict[str, Any]]) -> None:
    """A stored recording must be sealed in the ledger, with the same manifest, and not deleted."""
    rid = report.recording_id
    slot = state.get(rid)
    if slot is None or slot["sealed"] is None:
        report.problems.append(
            Problem("not-in-ledger", "recording is not in the ledger (unsealed or entry removed)", rid)
        )
    elif slot["deleted"] is not None:
        report.problems.append(
            Problem(
                "deleted-but-present",
                f"ledger records its deletion (seq {slot['deleted'].get('seq')}) but files remain",
                rid,
            )
        )
    elif report.manifest_sha256 is not None and report.manifest_sha256 != slot["sealed"]:
        report.problems.append(
            Problem("manifest-replaced", "manifest differs from the one sealed in the ledger", rid)
        )


def verify_store(
    root: Path,
    public_key: Ed25519PublicKey,
    kek: Kek | None = None,
    *,
    recording_ids: set[str] | None = None,
    key_source: str = "",
) -> StoreReport:
    """Verify the ledger (always whole) and the recordings (all, or only ``recording_ids``): each stored
    recording must verify and be sealed in the ledger; each sealed one must be stored unless a later
    deletion receipt explains its absence."""
    storage = LocalStorage(root)
    report = StoreReport(str(root), key_source or fingerprint(public_key))
    ledger_path = root / LEDGER_NAME
    entries, report.ledger_problems = read_ledger(ledger_path, public_key)
    report.ledger_entries = len(entries)
    keys = storage.keys_sync()
    if not ledger_path.exists() and keys:
        report.ledger_problems.append(Problem("missing-file", f"{LEDGER_NAME} is missing from {root}"))
    state = _ledger_state(entries)
    present: dict[str, str] = {}
    for key in keys:
        rid = key.rsplit("/", 1)[1]
        if recording_ids is not None and rid not in recording_ids:
            continue
        if rid in present:
            report.store_problems.append(Problem("duplicate", f"stored twice: {present[rid]} and {key}", rid))
            continue
        present[rid] = key
        recording = verify_recording(storage.path_of(key), public_key, kek)
        _reconcile(recording, state)
        report.recordings.append(recording)
    for rid, slot in state.items():
        if rid in present or (recording_ids is not None and rid not in recording_ids):
            continue
        if slot["sealed"] is not None and slot["deleted"] is None:
            report.store_problems.append(
                Problem(
                    "recording-missing",
                    "sealed in the ledger but missing from storage, with no deletion receipt",
                    rid,
                )
            )
        elif slot["deleted"] is not None:
            deleted = slot["deleted"]
            report.notes.append(
                f"{rid}: deleted (ledger seq {deleted.get('seq')}, {deleted.get('reason')}, "
                f"by {deleted.get('actor')})"
            )
    if recording_ids is not None:
        for rid in sorted(recording_ids - present.keys() - state.keys()):
            report.store_problems.append(
                Problem("unknown-recording", "neither stored nor in the ledger", rid)
            )
    return report


class _StoredMember:
    """A stored (uncompressed) zip member read straight from the archive's bytes.

    Reading through ``zipfile`` would stop at a CRC error; reading the raw bytes lets a flipped byte be
    located to its segment instead of only to the file."""

    def __init__(self, fh: BinaryIO, info: zipfile.ZipInfo) -> None:
        self._fh = fh
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"{info.filename}: bad local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        self._start = info.header_offset + 30 + name_len + extra_len
        self.size: int = info.compress_size

    def read(self, offset: int, length: int) -> bytes:
        self._fh.seek(self._start + offset)
        return self._fh.read(max(0, min(length, self.size - offset)))


class _CompressedMember:
    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self._file = zf.open(info)
        self.size: int = info.file_size

    def read(self, offset: int, length: int) -> bytes:
        if self._file.tell() != offset:
            self._file.seek(offset)
        return self._file.read(length)


def _member_source(zf: zipfile.ZipFile, raw: BinaryIO, info: zipfile.ZipInfo) -> ByteSource:
    if info.compress_type == zipfile.ZIP_STORED:
        return _StoredMember(raw, info)
    return _CompressedMember(zf, info)


def verify_bundle(zip_path: Path, public_key: Ed25519PublicKey | None = None) -> StoreReport:
    """Verify an export bundle offline. Without ``public_key`` the bundle's own ``public_key.pem`` is used
    and the report says so: that shows the bundle is self-consistent; comparing the printed fingerprint
    with the operator's published key shows who sealed it."""
    report = StoreReport(str(zip_path), "")
    try:
        zf = zipfile.ZipFile(zip_path)
        raw = open(zip_path, "rb")  # noqa: SIM115 - closed with the zip below
    except (OSError, zipfile.BadZipFile) as exc:
        report.store_problems.append(Problem("bundle-unreadable", f"{zip_path}: {exc}"))
        return report
    with zf, raw:
        infos = {i.filename: i for i in zf.infolist()}

        def member(name: str) -> bytes | None:
            if name not in infos:
                return None
            try:
                return zf.read(name)
            except zipfile.BadZipFile as exc:
                report.store_problems.append(
                    Problem("bundle-corrupt", f"{name}: {exc} (altered inside the zip)")
                )
                return None

        bundled_pem = member(BUNDLE_PUBLIC_KEY)
        bundled_key = None
        if bundled_pem is not None:
            try:
                bundled_key = parse_public_key(bundled_pem, BUNDLE_PUBLIC_KEY)
            except ValueError as exc:
                report.store_problems.append(Problem("bundle-malformed", str(exc)))
        if public_key is None:
            if bundled_key is None:
                report.store_problems.append(
                    Problem("missing-file", f"no usable {BUNDLE_PUBLIC_KEY} and no key given")
                )
                return report
            public_key = bundled_key
            report.key = f"{fingerprint(public_key)} (from the bundle itself)"
            report.notes.append(
                "verified with the public key inside the bundle: this proves the bundle is self-consistent; "
                f"compare the fingerprint {fingerprint(public_key)} with the operator's published key"
            )
        else:
            report.key = fingerprint(public_key)
            if bundled_key is not None and fingerprint(bundled_key) != fingerprint(public_key):
                report.notes.append(f"the bundle carries a different public key ({fingerprint(bundled_key)})")

        state: dict[str, dict[str, Any]] = {}
        ledger = member(BUNDLE_LEDGER)
        if ledger is None:
            report.ledger_problems.append(
                Problem("missing-file", f"{BUNDLE_LEDGER} is missing from the bundle")
            )
        else:
            entries, report.ledger_problems = check_ledger_lines(ledger.splitlines(keepends=True), public_key)
            report.ledger_entries = len(entries)
            state = _ledger_state(entries)

        ids = sorted({name.split("/", 1)[0] for name in infos if "/" in name})
        for rid in ids:
            recording = Report(rid, f"{zip_path}:{rid}/")
            sig = member(f"{rid}/{SIGNATURE}")
            manifest = _check_sealed(
                recording,
                member(f"{rid}/{MANIFEST}"),
                sig.decode("ascii", "replace") if sig is not None else None,
                member(f"{rid}/{CONSENT}"),
                public_key,
            )
            if ledger is not None:
                _reconcile(recording, state)
            if manifest is not None:
                audio = infos.get(f"{rid}/{AUDIO}")
                if audio is None:
                    recording.problems.append(_missing(rid, AUDIO))
                else:
                    try:
                        recording.problems.extend(check_audio(manifest, _member_source(zf, raw, audio)))
                    except (zipfile.BadZipFile, KeyError, TypeError, ValueError) as exc:
                        recording.problems.append(
                            Problem("audio-malformed", f"audio check failed ({exc!r})", rid)
                        )
            report.recordings.append(recording)
        if not ids:
            report.store_problems.append(Problem("bundle-empty", "the bundle holds no recordings"))
    return report
