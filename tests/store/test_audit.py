"""The audit log on SQLite and PostgreSQL: the hash chain holds under concurrent appends (one store and
two stores, as the service and the CLI are), the database refuses edits, and verify_chain notices an
edit made behind the triggers' back."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from helpline.store import Store
from helpline.store.audit import GENESIS_HASH, AuditFilters, canonical_json


async def test_entries_chain_and_verify(migrated_store: Store) -> None:
    first = await migrated_store.audit.append(
        "sign_in", actor="ann", role="admin", target_type="user", target_id="ann", client_ip="192.0.2.1",
        detail={"kind": "browser", "n": 1.5, "ü": ["x"]},
    )  # fmt: skip
    second = await migrated_store.audit.append("sign_out", actor="ann", outcome="ok")
    assert (first.id, second.id) == (1, 2)
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.entry_hash
    assert first.detail == {"kind": "browser", "n": 1.5, "ü": ["x"]}
    body = {
        "id": 1, "at": first.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "actor": "ann", "role": "admin",
        "action": "sign_in", "target_type": "user", "target_id": "ann", "outcome": "ok",
        "client_ip": "192.0.2.1", "detail": first.detail,
    }  # fmt: skip
    expected = hashlib.sha256(f"{GENESIS_HASH}\n{canonical_json(body)}".encode()).hexdigest()
    assert first.entry_hash == expected  # the documented recipe, recomputable by anyone
    report = await migrated_store.audit.verify_chain()
    assert report.ok and report.entries == 2


async def test_bad_outcome_and_non_json_detail_are_refused(migrated_store: Store) -> None:
    with pytest.raises(ValueError, match="outcome"):
        await migrated_store.audit.append("x", outcome="maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await migrated_store.audit.append("x", detail={"when": object()})
    assert (await migrated_store.audit.verify_chain()).entries == 0


async def test_concurrent_appends_stay_one_chain(migrated_store: Store, db_url: str) -> None:
    other = Store(db_url)  # a second engine, as the CLI is a second process
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(
                (migrated_store if i % 2 else other).audit.append("play", actor=f"u{i}", detail={"i": i})
                for i in range(40)
            ))  # fmt: skip
    finally:
        await other.close()
    report = await migrated_store.audit.verify_chain()
    assert report.ok, report
    assert report.entries == 40
    entries = [e async for e in migrated_store.audit.export()]
    assert [e.id for e in entries] == list(range(1, 41))
    assert sorted(e.detail["i"] for e in entries) == list(range(40))


async def test_the_database_refuses_update_and_delete(migrated_store: Store) -> None:
    await migrated_store.audit.append("download", actor="eve", target_type="recording", target_id="r1")
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with migrated_store.engine.begin() as connection:
                await connection.execute(text(statement))
    entries = [e async for e in migrated_store.audit.export()]
    assert [(e.actor, e.action) for e in entries] == [("eve", "download")]


async def test_verify_finds_an_edit_made_past_the_triggers(migrated_store: Store) -> None:
    for i in range(3):
        await migrated_store.audit.append("view", actor="ann", target_type="recording", target_id=f"r{i}")
    drop = (
        "DROP TRIGGER audit_log_no_update" if migrated_store.backend == "sqlite"
        else "DROP TRIGGER audit_log_append_only ON audit_log"
    )  # fmt: skip
    async with migrated_store.engine.begin() as connection:
        await connection.execute(text(drop))
        await connection.execute(text("UPDATE audit_log SET target_id = 'other' WHERE id = 2"))
    report = await migrated_store.audit.verify_chain()
    assert not report.ok and report.first_bad_id == 2 and report.entries == 1
    assert "content" in (report.problem or "")


async def test_list_filters_and_pages(migrated_store: Store) -> None:
    for i in range(5):
        await migrated_store.audit.append("play", actor="ann", target_type="recording", target_id=f"r{i}")
    await migrated_store.audit.append("sign_in", actor="bob", outcome="failed")
    page = await migrated_store.audit.list(AuditFilters(actor="ann"), limit=2)
    assert [e.target_id for e in page.items] == ["r4", "r3"] and page.next_cursor
    rest = await migrated_store.audit.list(AuditFilters(actor="ann"), limit=10, cursor=page.next_cursor)
    assert [e.target_id for e in rest.items] == ["r2", "r1", "r0"] and rest.next_cursor is None
    failed = await migrated_store.audit.list(AuditFilters(action="sign_in", outcome="failed"))
    assert [e.actor for e in failed.items] == ["bob"]
    one = await migrated_store.audit.list(AuditFilters(target_type="recording", target_id="r3"))
    assert len(one.items) == 1
    future = datetime.now(UTC) + timedelta(minutes=1)
    assert (await migrated_store.audit.list(AuditFilters(since=future))).items == []
    assert len((await migrated_store.audit.list(AuditFilters(until=future))).items) == 6
    exported = [e.target_id async for e in migrated_store.audit.export(AuditFilters(actor="ann"))]
    assert exported == ["r0", "r1", "r2", "r3", "r4"]  # oldest first
