"""The retention sweeper as the server runs it: a periodic task that deletes what expired, keeps what a
hold or a floor keeps, and leaves a receipt that ``verify`` accepts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpline.recording.keys import load_public_key
from helpline.recording.retention import RetentionSweeper
from helpline.recording.verify import verify_store
from helpline.store import Store, upgrade
from tests.web.recording_fixture import make_archive

OLD = datetime.now(UTC) - timedelta(days=400)


async def test_the_periodic_sweeper_deletes_the_expired_and_keeps_the_held(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'helpline.sqlite3'}"
    await upgrade(url)
    store = Store(url)
    try:
        archive = make_archive(tmp_path, store)
        expired, _ = await archive.seal(seconds=2, started_at=OLD)
        held, _ = await archive.seal(seconds=2, started_at=OLD)
        fresh, _ = await archive.seal(seconds=2)
        library = archive.library()
        await library.hold(held.id, "carol", "subpoena 44")
        sweeper = RetentionSweeper(store, library, interval_s=0.05)
        sweeper.start()
        try:
            async with asyncio.timeout(10):  # the database has no change notification: poll it
                while (row := await store.recordings.get(expired.id)) is None or row.status != "deleted":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # a few more rounds: nothing else may go
        finally:
            await sweeper.stop()
        assert row.deletion is not None and row.deletion["reason"] == "retention period ended"
        others = [await store.recordings.get(r) for r in (held.id, fresh.id)]
        assert [o.status if o else None for o in others] == ["stored", "stored"]
        report = await asyncio.to_thread(verify_store, archive.storage.root,
                                         load_public_key(archive.public_key_path))
        assert report.ok, report
    finally:
        await store.close()
