"""The reviewer's side of recordings: find them, open their audio, check them, hold, delete, export.

Everything a person does to a stored recording goes through here, so the rules hold the same for the
API, the CLI and the retention sweeper: a legal hold or the retention floor refuses deletion, a
deletion leaves a signed receipt in the ledger and keeps the row as the receipt, encrypted audio is
decrypted only in memory and only the bytes asked for. File and crypto work runs in threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from helpline.recording.bundle import BundleItem, write_bundle
from helpline.recording.crypto import DecryptingReader
from helpline.recording.keys import Kek, load_public_key
from helpline.recording.ledger import Ledger
from helpline.recording.manifest import FileSource
from helpline.recording.storage import RecordingStorage
from helpline.recording.verify import AUDIO, AUDIO_ENC, CONSENT, MANIFEST, WRAPPED_KEY, verify_recording
from helpline.store.recordings import LIVE_STATUSES, ConsentRow, RecordingFilters, RecordingRow
from helpline.store.records import Page
from helpline.store.store import Store

logger = logging.getLogger(__name__)

PEAKS = "peaks.json"
DELETED_STATUSES = ("deleted", "erased")


class LibraryError(Exception):
    """A request the library refuses; ``message`` says why in words a reviewer understands."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RecordingMissing(LibraryError):
    """No recording has this id."""


class RecordingGone(LibraryError):
    """The recording was deleted or erased; only its receipt remains."""


class RecordingNotReady(LibraryError):
    """The call is still being recorded (or was never sealed): there is no stored media yet."""


class DeletionRefused(LibraryError):
    """A legal hold or the retention floor keeps the recording."""


class HoldConflict(LibraryError):
    """Holding a held recording, or releasing one that is not held."""


class AudioUnavailable(LibraryError):
    """The stored audio cannot be opened (encrypted without a KEK, missing or unreadable files)."""


class _Reader(Protocol):
    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class AudioSource:
    """The plaintext WAV of one recording: ``size`` and random-access ``read``, each in a thread.

    Close it with ``aclose`` (it holds a file descriptor)."""

    def __init__(self, reader: _Reader, name: str) -> None:
        self._reader = reader
        self.size: int = reader.size
        self.name = name

    async def read(self, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self._reader.read, offset, length)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._reader.close)


@dataclass(frozen=True, slots=True)
class RecordingView:
    """One recording for the player: its row (metadata, overlays, channel map) and consent evidence."""

    recording: RecordingRow
    consent: list[ConsentRow]


@dataclass(frozen=True, slots=True)
class Integrity:
    """The integrity badge: ``verified``, ``failed``, or ``unverified`` (something could not be
    checked, e.g. encrypted audio without the KEK), with the verifier's report."""

    status: str
    checked_at: datetime
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "checked_at": self.checked_at.isoformat(), **self.report}


def _stamp(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    """What must stay the same for a cached verdict to stand: each stored file's size and mtime."""
    stamps = []
    for path in sorted(paths):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        stamps.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class RecordingLibrary:
    """Stored recordings as a reviewer sees them. ``kek`` is needed only when recordings are
    encrypted; ``public_key_path`` is the signing key the integrity check trusts."""

    def __init__(
        self, store: Store, storage: RecordingStorage, public_key_path: Path, kek: Kek | None, ledger: Ledger
    ) -> None:
        self.store = store
        self.storage = storage
        self.public_key_path = public_key_path
        self.kek = kek
        self.ledger = ledger
        self._verdicts: dict[str, tuple[tuple[tuple[str, int, int], ...], Integrity]] = {}

    # ---- finding ------------------------------------------------------------------------------------
    async def search(
        self,
        filters: RecordingFilters,
        *,
        limit: int = 50,
        cursor: str | None = None,
        offset: int | None = None,
    ) -> Page[RecordingRow]:
        """Newest first; the filters combine with AND (``InvalidCursor`` for a cursor we did not issue)."""
        return await self.store.recordings.search(filters, limit=limit, cursor=cursor, offset=offset)

    async def exportable_ids(self, filters: RecordingFilters, *, limit: int) -> list[str]:
        """The ids of every recording matching ``filters`` whose media still exists, newest first;
        ``LibraryError`` when there are more than ``limit`` (the caller asks for a narrower search)."""
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page = await self.store.recordings.search(filters, limit=200, cursor=cursor)
            ids += [r.id for r in page.items if r.status in ("stored", "recovered")]
            if len(ids) > limit:
                raise LibraryError(f"more than {limit} recordings match: narrow the search "
                                   "(e.g. since/until)")
            cursor = page.next_cursor
            if cursor is None:
                return ids

    async def row(self, recording_id: str) -> RecordingRow:
        row = await self.store.recordings.get(recording_id)
        if row is None:
            raise RecordingMissing(f"no recording {recording_id!r}")
        return row

    async def get(self, recording_id: str) -> RecordingView:
        """Metadata, overlays, channel map and the consent evidence of the call (deleted ones too:
        their row is the deletion receipt)."""
        row = await self.row(recording_id)
        consent = await self.store.consent.for_call(row.call_id)
        return RecordingView(row, consent)

    async def _stored(self, recording_id: str) -> tuple[RecordingRow, str]:
        """The row and storage key of a recording whose media exists."""
        row = await self.row(recording_id)
        if row.status in DELETED_STATUSES:
            when = row.deleted_at.isoformat() if row.deleted_at else "earlier"
            raise RecordingGone(
                f"recording {recording_id} was {row.status} ({when}); only its receipt remains"
            )
        if row.status not in LIVE_STATUSES or row.storage_key is None or row.status == "recording":
            raise RecordingNotReady(f"recording {recording_id} is still being recorded or was never stored")
        return row, row.storage_key

    async def _directory(self, key: str) -> Path:
        """The local directory of a stored recording (``open`` returns a local path per file)."""
        try:
            return (await self.storage.open(key, MANIFEST)).parent
        except Exception as exc:
            logger.error("stored recording %s cannot be opened", key, exc_info=True)
            raise AudioUnavailable(f"the stored files of {key} cannot be opened: {exc}") from exc

    # ---- media --------------------------------------------------------------------------------------
    async def peaks(self, recording_id: str) -> dict[str, Any]:
        """The precomputed waveform peaks (min/max per 50 ms per channel), as stored."""
        _row, key = await self._stored(recording_id)
        try:
            path = await self.storage.open(key, PEAKS)
            text = await asyncio.to_thread(path.read_text, "utf-8")
            peaks = json.loads(text)
        except Exception as exc:
            logger.error("peaks of recording %s cannot be read", recording_id, exc_info=True)
            raise AudioUnavailable(f"the waveform of recording {recording_id} cannot be read: {exc}") from exc
        if not isinstance(peaks, dict):
            raise AudioUnavailable(f"the waveform of recording {recording_id} is not a JSON object")
        return peaks

    async def open_audio(self, recording_id: str) -> AudioSource:
        """The plaintext WAV, decrypted chunk by chunk when stored encrypted. ``aclose`` it."""
        row, key = await self._stored(recording_id)
        directory = await self._directory(key)
        try:
            reader = await asyncio.to_thread(self._open_reader, directory, row.encrypted)
        except AudioUnavailable:
            raise
        except Exception as exc:
            logger.error("audio of recording %s cannot be opened", recording_id, exc_info=True)
            raise AudioUnavailable(f"the audio of recording {recording_id} cannot be opened: {exc}") from exc
        return AudioSource(reader, f"{recording_id}.wav")

    def _open_reader(self, directory: Path, encrypted: bool) -> _Reader:
        if not encrypted:
            return FileSource(directory / AUDIO)
        if self.kek is None:
            raise AudioUnavailable("the recording is encrypted and no key-encryption key is configured")
        dek = self.kek.unwrap((directory / WRAPPED_KEY).read_bytes())
        return DecryptingReader(directory / AUDIO_ENC, dek)

    # ---- integrity ----------------------------------------------------------------------------------
    async def integrity(self, recording_id: str) -> Integrity:
        """Check signature, hash chain, consent evidence and audio (B's ``verify_recording``), and that
        the sealed manifest is the one the database points at. A verdict is reused while the manifest
        hash and the stored files' sizes and times stay the same."""
        row, key = await self._stored(recording_id)
        directory = await self._directory(key)
        stamp = await asyncio.to_thread(_stamp, list(directory.iterdir()))
        cache_key = f"{row.manifest_sha256}:{recording_id}"
        cached = self._verdicts.get(cache_key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        verdict = await asyncio.to_thread(self._verify, row, directory)
        self._verdicts[cache_key] = (stamp, verdict)
        if verdict.status == "failed":
            logger.warning(
                "recording %s failed its integrity check: %s", recording_id, verdict.report["problems"]
            )
        return verdict

    def _verify(self, row: RecordingRow, directory: Path) -> Integrity:
        public_key = load_public_key(self.public_key_path)
        report = verify_recording(directory, public_key, self.kek)
        result = report.to_dict()
        if row.manifest_sha256 and report.manifest_sha256 and report.manifest_sha256 != row.manifest_sha256:
            result["problems"].append({
                "code": "manifest-replaced", "recording_id": row.id,
                "message": "the stored manifest is not the one sealed for this recording "
                           f"(database has {row.manifest_sha256}, storage has {report.manifest_sha256})",
            })  # fmt: skip
            result["ok"] = False
        if result["problems"]:
            status = "failed"
        elif report.notes:
            status = "unverified"
        else:
            status = "verified"
        return Integrity(status, datetime.now(UTC), result)

    # ---- export -------------------------------------------------------------------------------------
    async def export(self, recording_ids: Sequence[str], out_zip: Path) -> Path:
        """An export bundle of ``recording_ids`` (audio decrypted, manifest, signature, consent evidence,
        ledger, public key) at ``out_zip``."""
        if not recording_ids:
            raise LibraryError("name at least one recording to export")
        if len(set(recording_ids)) != len(recording_ids):
            raise LibraryError("a recording is named twice")
        items: list[tuple[RecordingRow, Path]] = []
        for recording_id in recording_ids:
            row, key = await self._stored(recording_id)
            items.append((row, await self._directory(key)))
        public_pem = await asyncio.to_thread(self.public_key_path.read_bytes)
        return await asyncio.to_thread(self._write_bundle, items, out_zip, public_pem)

    def _write_bundle(self, items: list[tuple[RecordingRow, Path]], out_zip: Path, public_pem: bytes) -> Path:
        readers: list[DecryptingReader] = []
        try:
            bundle = []
            for row, directory in items:
                audio: Path | DecryptingReader = directory / AUDIO
                if row.encrypted:
                    reader = self._open_reader(directory, True)
                    assert isinstance(reader, DecryptingReader)
                    readers.append(reader)
                    audio = reader
                consent = json.loads((directory / CONSENT).read_text("utf-8"))
                metadata = row.model_dump(mode="json", exclude={"storage_key"})
                bundle.append(BundleItem(row.id, directory, audio, metadata, consent))
            return write_bundle(out_zip, bundle, public_pem, self.ledger.path)
        finally:
            for reader in readers:
                reader.close()

    # ---- holds and deletion -------------------------------------------------------------------------
    async def hold(self, recording_id: str, actor: str, reason: str) -> RecordingRow:
        """Put the recording under legal hold: nothing deletes it (sweeper, erasure, a person) until
        it is released. Who, why and when are kept on the row."""
        row, _key = await self._stored(recording_id)
        if row.legal_hold:
            raise HoldConflict(
                f"recording {recording_id} is already under legal hold by {row.legal_hold.get('by')} "
                f"since {row.legal_hold.get('at')}"
            )
        hold = {"by": actor, "reason": reason, "at": datetime.now(UTC).isoformat()}
        return await self.store.recordings.update(recording_id, legal_hold=hold)

    async def release(self, recording_id: str, actor: str) -> RecordingRow:
        row = await self.row(recording_id)
        if not row.legal_hold:
            raise HoldConflict(f"recording {recording_id} is not under legal hold")
        logger.info("legal hold on %s released by %s (was: %s)", recording_id, actor, row.legal_hold)
        return await self.store.recordings.update(recording_id, legal_hold=None)

    async def delete(
        self, recording_id: str, actor: str, reason: str, *, now: datetime | None = None
    ) -> RecordingRow:
        """Delete the media (wrapped key first, so encrypted audio is unreadable at once), append the
        signed deletion receipt to the ledger, and mark the row ``deleted`` with the receipt. Refused
        under legal hold or before the retention floor."""
        now = now or datetime.now(UTC)
        row, key = await self._stored(recording_id)
        if row.legal_hold:
            hold = row.legal_hold
            raise DeletionRefused(
                f"recording {recording_id} is under legal hold by {hold.get('by')} ({hold.get('reason')}); "
                "release the hold first"
            )
        if row.floor_until > now:
            raise DeletionRefused(
                f"recording {recording_id} must be kept until {row.floor_until.isoformat()} "
                f"(retention floor of policy {row.retention_policy!r})"
            )
        # The receipt goes first: a crash after it leaves media the next attempt removes, never a
        # recording that vanished without a receipt.
        receipt = await asyncio.to_thread(
            self.ledger.append_deleted, recording_id, row.manifest_sha256 or "", reason, actor
        )
        if await self.storage.exists(key):
            await self.storage.delete(key)
        self._verdicts = {k: v for k, v in self._verdicts.items() if not k.endswith(f":{recording_id}")}
        deletion = {
            "at": now.isoformat(), "by": actor, "reason": reason, "manifest_sha256": row.manifest_sha256,
            "ledger_seq": receipt["seq"], "ledger_hash": receipt["hash"], "ledger_sig": receipt["sig"],
        }  # fmt: skip
        logger.info("recording %s deleted by %s: %s", recording_id, actor, reason)
        return await self.store.recordings.update(
            recording_id, status="deleted", deleted_at=now, deletion=deletion
        )


def download_name(row: RecordingRow) -> str:
    """A file name for a downloaded recording: its start time and id, nothing personal."""
    return f"recording-{row.started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{row.id}.wav"
