"""Where sealed recordings live: the ``RecordingStorage`` protocol and the local-disk implementation.

A recording is stored as one directory of files (audio, manifest, signature, metadata, consent, peaks,
wrapped key), written all at once: it appears complete or not at all, so ``verify`` never mistakes a
half-copied recording for a tampered one. ``LocalStorage`` lays them out by the day the call started,

    <root>/<yyyy>/<mm>/<dd>/<recording_id>/{audio.wav | audio.wav.enc, key.wrapped, manifest.json, ...}
    <root>/ledger.jsonl
    <root>/keys/recording-signing.pub

and leaves sealed files read-only (0440) to discourage editing in place; it is not immutability (an
S3 Object Lock bucket behind the same protocol is). The key is ``yyyy/mm/dd/recording_id``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

LEDGER_NAME = "ledger.jsonl"
PUBLIC_KEY_NAME = "keys/recording-signing.pub"
_INCOMING = ".incoming"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY = re.compile(r"(\d{4})/(\d{2})/(\d{2})/([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
_COPY_BLOCK = 1024 * 1024


class StorageError(Exception):
    """A storage operation was refused or failed; the message names the recording or key."""


class RecordingStorage(Protocol):
    """Sealed recordings by key. Local disk now; an object store later behind the same methods."""

    async def put_dir(self, recording_id: str, started_at: datetime, files: Mapping[str, Path]) -> str:
        """Store ``files`` (stored name -> source path) as one recording; returns its key."""
        ...

    async def open(self, key: str, name: str) -> Path:
        """A local path to read one stored file from (an object store would fetch it to a cache)."""
        ...

    async def exists(self, key: str, name: str | None = None) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove everything stored for the recording (media, wrapped key, manifest, ...)."""
        ...

    async def list_keys(self) -> list[str]: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recording_key(recording_id: str, started_at: datetime) -> str:
    if not _ID.fullmatch(recording_id):
        raise StorageError(f"recording id {recording_id!r} is not a safe name ([A-Za-z0-9._-], 1-128)")
    if started_at.tzinfo is None:
        raise StorageError(f"{recording_id}: started_at must be timezone-aware")
    day = started_at.astimezone(UTC)
    return f"{day:%Y/%m/%d}/{recording_id}"


class LocalStorage:
    """``RecordingStorage`` on a local filesystem; blocking work runs in threads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_NAME

    @property
    def public_key_path(self) -> Path:
        return self.root / PUBLIC_KEY_NAME

    def path_of(self, key: str) -> Path:
        """The directory of a recording key (validated, so a key can never point outside the root)."""
        if not _KEY.fullmatch(key):
            raise StorageError(f"{key!r} is not a recording key (yyyy/mm/dd/recording_id)")
        return self.root / key

    async def put_dir(self, recording_id: str, started_at: datetime, files: Mapping[str, Path]) -> str:
        key = recording_key(recording_id, started_at)
        for name in files:
            if not _FILE.fullmatch(name):
                raise StorageError(f"{recording_id}: {name!r} is not a plain file name")
        await asyncio.to_thread(self._put_dir, key, dict(files))
        return key

    def _put_dir(self, key: str, files: dict[str, Path]) -> None:
        final = self.path_of(key)
        if final.exists():
            raise StorageError(f"{key}: already stored; a sealed recording is never overwritten")
        incoming = self.root / _INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        staging = incoming / f"{final.name}.{secrets.token_hex(6)}"
        staging.mkdir(mode=0o750)
        try:
            for name, src in files.items():
                self._copy(src, staging / name)
            for name in files:
                os.chmod(staging / name, 0o440)
            _fsync_dir(staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)
            except OSError as exc:
                if final.exists():
                    raise StorageError(
                        f"{key}: already stored; a sealed recording is never overwritten"
                    ) from exc
                raise
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("stored recording %s (%d files)", key, len(files))

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with open(src, "rb") as inp, os.fdopen(fd, "wb") as out:
            while block := inp.read(_COPY_BLOCK):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())

    async def open(self, key: str, name: str) -> Path:
        if not _FILE.fullmatch(name):
            raise StorageError(f"{key}: {name!r} is not a plain file name")
        path = self.path_of(key) / name
        if not await asyncio.to_thread(path.is_file):
            raise StorageError(f"{key}: no stored file {name}")
        return path

    async def exists(self, key: str, name: str | None = None) -> bool:
        path = self.path_of(key)
        if name is not None:
            if not _FILE.fullmatch(name):
                raise StorageError(f"{key}: {name!r} is not a plain file name")
            path = path / name
        return await asyncio.to_thread(path.exists)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
        directory = self.path_of(key)
        if not directory.exists():
            raise StorageError(f"{key}: nothing stored")
        # The wrapped data key goes first: once it is gone the audio is unreadable even if the rest of
        # the removal is interrupted (crypto-shredding).
        ordered = sorted(directory.iterdir(), key=lambda p: p.name != "key.wrapped")
        for path in ordered:
            os.chmod(path, 0o640)
            path.unlink()
        directory.rmdir()
        _fsync_dir(directory.parent)
        for parent in (directory.parent, directory.parent.parent, directory.parent.parent.parent):
            try:
                parent.rmdir()  # prune empty day/month/year directories
            except OSError:
                break
        logger.info("deleted recording %s", key)

    async def find(self, recording_id: str) -> str | None:
        """The key of a recording by id (a scan of the day directories), or None."""
        return await asyncio.to_thread(self.find_sync, recording_id)

    def find_sync(self, recording_id: str) -> str | None:
        if not _ID.fullmatch(recording_id):
            return None
        for key in self.keys_sync():
            if key.rsplit("/", 1)[1] == recording_id:
                return key
        return None

    async def list_keys(self) -> list[str]:
        return await asyncio.to_thread(self.keys_sync)

    def keys_sync(self) -> list[str]:
        """Every stored recording key, in date then id order (blocking)."""
        if not self.root.is_dir():
            return []
        keys = []
        for path in sorted(self.root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_dir() and _KEY.fullmatch(key):
                keys.append(key)
        return keys
