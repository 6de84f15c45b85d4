"""Local recording storage: day layout, all-or-nothing puts, read-only sealed files, full deletion."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpline.recording.storage import LocalStorage, RecordingStorage, StorageError

STARTED = datetime(2024, 5, 1, 23, 30, tzinfo=UTC)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    work = tmp_path / "work"
    work.mkdir()
    out = {}
    for name, content in {
        "audio.wav": b"RIFF" + bytes(1000),
        "manifest.json": b"{}",
        "manifest.sig": b"c2ln\n",
        "key.wrapped": bytes(40),
    }.items():
        (work / name).write_bytes(content)
        out[name] = work / name
    return out


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "recordings")


async def test_put_lays_out_by_day_and_seals_read_only(storage: LocalStorage, files: dict[str, Path]) -> None:
    store: RecordingStorage = storage
    key = await store.put_dir("rec-1", STARTED, files)
    assert key == "2024/05/01/rec-1"
    directory = storage.root / key
    assert sorted(p.name for p in directory.iterdir()) == sorted(files)
    for name, src in files.items():
        stored = directory / name
        assert stored.read_bytes() == src.read_bytes()
        assert stat.S_IMODE(stored.stat().st_mode) == 0o440
    assert await store.exists(key)
    assert await store.exists(key, "manifest.sig")
    assert not await store.exists(key, "peaks.json")
    assert (await store.open(key, "audio.wav")).read_bytes() == files["audio.wav"].read_bytes()
    assert await store.list_keys() == [key]
    assert await storage.find("rec-1") == key
    assert await storage.find("rec-2") is None
    assert list((storage.root / ".incoming").iterdir()) == []


async def test_day_is_the_utc_day(storage: LocalStorage, files: dict[str, Path]) -> None:
    local = STARTED.astimezone(timezone(timedelta(hours=5)))  # already 2 May there
    assert await storage.put_dir("rec-tz", local, files) == "2024/05/01/rec-tz"
    with pytest.raises(StorageError, match="timezone-aware"):
        await storage.put_dir("rec-naive", datetime(2024, 5, 1), files)


async def test_sealed_recording_is_never_overwritten(storage: LocalStorage, files: dict[str, Path]) -> None:
    key = await storage.put_dir("rec-1", STARTED, files)
    before = (storage.root / key / "audio.wav").read_bytes()
    files["audio.wav"].write_bytes(b"other")
    with pytest.raises(StorageError, match="already stored"):
        await storage.put_dir("rec-1", STARTED, files)
    assert (storage.root / key / "audio.wav").read_bytes() == before
    assert list((storage.root / ".incoming").iterdir()) == []


async def test_failed_put_leaves_nothing(
    storage: LocalStorage, files: dict[str, Path], tmp_path: Path
) -> None:
    files["consent.json"] = tmp_path / "does-not-exist.json"
    with pytest.raises(FileNotFoundError):
        await storage.put_dir("rec-1", STARTED, files)
    assert await storage.list_keys() == []
    assert not await storage.exists("2024/05/01/rec-1")
    assert list((storage.root / ".incoming").iterdir()) == []


async def test_unsafe_names_are_refused(storage: LocalStorage, files: dict[str, Path]) -> None:
    for bad_id in ("../escape", "", ".hidden", "a/b"):
        with pytest.raises(StorageError, match="not a safe name"):
            await storage.put_dir(bad_id, STARTED, files)
    with pytest.raises(StorageError, match="not a plain file name"):
        await storage.put_dir("rec-1", STARTED, {"../x": files["audio.wav"]})
    with pytest.raises(StorageError, match="not a recording key"):
        await storage.open("../../etc/passwd", "audio.wav")
    key = await storage.put_dir("rec-1", STARTED, files)
    with pytest.raises(StorageError, match="not a plain file name"):
        await storage.open(key, "../../ledger.jsonl")
    with pytest.raises(StorageError, match=r"no stored file peaks\.json"):
        await storage.open(key, "peaks.json")


async def test_delete_removes_everything_and_prunes(storage: LocalStorage, files: dict[str, Path]) -> None:
    key = await storage.put_dir("rec-1", STARTED, files)
    other = await storage.put_dir("rec-2", STARTED + timedelta(days=40), files)
    await storage.delete(key)
    assert not (storage.root / key).exists()
    assert not (storage.root / "2024" / "05").exists()  # empty day and month directories go too
    assert await storage.list_keys() == [other]
    with pytest.raises(StorageError, match="nothing stored"):
        await storage.delete(key)
    await storage.delete(other)
    assert await storage.list_keys() == []
