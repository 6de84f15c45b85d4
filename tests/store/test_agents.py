"""AgentRepository and the agent event log, on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from helpline.events import DomainEvent
from helpline.queue.profile import AgentProfile, Membership
from helpline.store import (
    AgentEventFilters,
    AgentExists,
    AgentNotFound,
    InvalidAgent,
    InvalidCursor,
    Store,
    StoreSink,
    current_revision,
    upgrade,
)
from helpline.store.migrate import alembic_config, head_revision
from helpline.store.models import AgentEvent, CallEvent

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
QUEUES = {"sales", "support"}


def ann(**changes: object) -> AgentProfile:
    values: dict[str, object] = {
        "extension": "1001", "display_name": "Ann", "skills": {"spanish": 3},
        "attributes": {"site": "berlin", "senior": True, "desk": 12},
        "queues": (Membership(queue="sales", tier=2), Membership(queue="support")), "wrapup_s": 7.5,
    }  # fmt: skip
    return AgentProfile.model_validate(values | changes)


async def test_create_stores_the_profile_and_only_the_ha1s(migrated_store: Store) -> None:
    created = await migrated_store.agents.create(ann(), "correct horse", "helpline", queue_names=QUEUES)
    assert created.profile() == ann()
    assert created.created_at == created.updated_at and created.created_at.tzinfo is not None

    stored = await migrated_store.agents.get("1001")
    assert stored is not None and stored.profile() == ann() and stored.realm == "helpline"
    assert stored.ha1_md5 == hashlib.md5(b"1001:helpline:correct horse").hexdigest()
    assert stored.ha1_sha256 == hashlib.sha256(b"1001:helpline:correct horse").hexdigest()
    assert "ha1_md5" not in stored.public().model_dump()

    async with migrated_store.engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM agents"))).one()
    assert "correct horse" not in repr(tuple(row))  # the password itself is nowhere in the row
    assert await migrated_store.agents.get("9999") is None


async def test_duplicate_extension_is_refused(migrated_store: Store) -> None:
    await migrated_store.agents.create(ann(), "pw", "helpline")
    with pytest.raises(AgentExists) as refused:
        await migrated_store.agents.create(ann(display_name="Another Ann"), "pw2", "helpline")
    assert refused.value.field == "extension"
    stored = await migrated_store.agents.get("1001")
    assert stored is not None and stored.display_name == "Ann"


async def test_list_is_ordered_by_extension(migrated_store: Store) -> None:
    for ext in ("2002", "1001", "1500"):
        await migrated_store.agents.create(ann(extension=ext), "pw", "helpline")
    assert [a.extension for a in await migrated_store.agents.list()] == ["1001", "1500", "2002"]


async def test_update_changes_only_the_given_fields(migrated_store: Store) -> None:
    created = await migrated_store.agents.create(ann(), "pw", "helpline")
    await asyncio.sleep(0.01)
    updated = await migrated_store.agents.update(
        "1001", {"skills": {"billing": 5}, "queues": [{"queue": "support", "tier": 3}], "enabled": False},
        queue_names=QUEUES,
    )  # fmt: skip
    assert updated.skills == {"billing": 5}
    assert updated.queues == (Membership(queue="support", tier=3),)
    assert updated.enabled is False
    assert (updated.display_name, updated.attributes, updated.wrapup_s) == ("Ann", ann().attributes, 7.5)
    assert updated.ha1_md5 == created.ha1_md5
    assert updated.created_at == created.created_at and updated.updated_at > created.updated_at
    again = await migrated_store.agents.get("1001")
    assert again is not None and again.profile() == updated.profile()
    cleared = await migrated_store.agents.update("1001", {"wrapup_s": None})
    assert cleared.wrapup_s is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"skills": {"Spanish": 3}}, "skills"),
        ({"skills": {"spanish": 101}}, "skills"),
        ({"skills": {"spanish": "lots"}}, "skills.spanish"),
        ({"queues": [{"queue": "sales"}, {"queue": "sales", "tier": 2}]}, "queues"),
        ({"queues": [{"queue": "sales", "tier": 0}]}, "queues.0.tier"),
        ({"queues": [{"queue": "support"}, {"queue": "nowhere"}]}, "queues.1.queue"),
        ({"wrapup_s": -1}, "wrapup_s"),
        ({"display_name": ""}, "display_name"),
        ({"attributes": {"site": ["a", "b"]}}, "attributes.site.str"),
        ({"colour": "red"}, "colour"),
        ({"extension": "1002"}, "extension"),
        ({"password": "new"}, "password"),
    ],
)
async def test_invalid_changes_name_the_field(
    migrated_store: Store, changes: dict[str, object], field: str
) -> None:
    await migrated_store.agents.create(ann(), "pw", "helpline")
    with pytest.raises(InvalidAgent) as refused:
        await migrated_store.agents.update("1001", changes, queue_names=QUEUES)
    assert refused.value.field == field, refused.value.message
    unchanged = await migrated_store.agents.get("1001")
    assert unchanged is not None and unchanged.profile() == ann()


async def test_queue_names_are_checked_when_given(migrated_store: Store) -> None:
    with pytest.raises(InvalidAgent) as refused:
        await migrated_store.agents.create(ann(), "pw", "helpline", queue_names={"sales"})
    assert refused.value.field == "queues.1.queue" and "support" in refused.value.message
    assert await migrated_store.agents.get("1001") is None


async def test_unknown_agent_is_not_found_everywhere(migrated_store: Store) -> None:
    with pytest.raises(AgentNotFound):
        await migrated_store.agents.update("404", {"display_name": "X"})
    with pytest.raises(AgentNotFound):
        await migrated_store.agents.set_password("404", "pw", "helpline")
    with pytest.raises(AgentNotFound):
        await migrated_store.agents.delete("404")


@pytest.mark.parametrize("password", ["", "x" * 257])
async def test_bad_passwords_are_refused(migrated_store: Store, password: str) -> None:
    with pytest.raises(InvalidAgent) as refused:
        await migrated_store.agents.create(ann(), password, "helpline")
    assert refused.value.field == "password"


async def test_set_password_replaces_the_ha1s_and_realm(migrated_store: Store) -> None:
    created = await migrated_store.agents.create(ann(), "old", "helpline")
    changed = await migrated_store.agents.set_password("1001", "new secret", "example.org")
    assert changed.realm == "example.org"
    assert changed.ha1_md5 == hashlib.md5(b"1001:example.org:new secret").hexdigest()
    assert changed.ha1_sha256 == hashlib.sha256(b"1001:example.org:new secret").hexdigest()
    assert changed.updated_at > created.updated_at and changed.profile() == ann()


async def test_delete_removes_the_agent(migrated_store: Store) -> None:
    await migrated_store.agents.create(ann(), "pw", "helpline")
    await migrated_store.agents.delete("1001")
    assert await migrated_store.agents.get("1001") is None
    with pytest.raises(AgentNotFound):
        await migrated_store.agents.delete("1001")


async def test_changed_since_reports_new_updated_and_removed_agents(migrated_store: Store) -> None:
    agents = migrated_store.agents
    first = await agents.changed_since(None)
    assert first.changed == [] and first.removed == frozenset()
    await agents.create(ann(), "pw", "helpline")
    await agents.create(ann(extension="1002"), "pw", "helpline")

    everything = await agents.changed_since(None, known=["1001", "1002"])
    assert [a.extension for a in everything.changed] == ["1001", "1002"] and everything.removed == frozenset()

    # Poll once the clock has moved past both writes and the poll's slack: nothing is new.
    quiet_since = datetime.now(UTC) + timedelta(seconds=1)
    assert (await agents.changed_since(quiet_since, known=["1001", "1002"])).changed == []

    mark = datetime.now(UTC)
    await agents.update("1002", {"display_name": "Bea"})
    await agents.delete("1001")
    after = await agents.changed_since(mark, known=["1001", "1002"])
    assert [(a.extension, a.display_name) for a in after.changed] == [("1002", "Bea")]
    assert after.removed == frozenset({"1001"})
    assert after.as_of <= datetime.now(UTC)
    # The next poll starting at as_of still sees the change (at least once, never lost).
    assert [a.extension for a in (await agents.changed_since(after.as_of)).changed] == ["1002"]


def agent_event(type: str, at_s: float, extension: str | None, call_id: str | None = None) -> DomainEvent:
    data: dict[str, object] = {"presence": "ready"}
    if extension is not None:
        data["extension"] = extension
    return DomainEvent(type, call_id, data, T0 + timedelta(seconds=at_s))


async def test_sink_sends_call_less_agent_events_to_agent_events(migrated_store: Store) -> None:
    sink = StoreSink(migrated_store)
    sink.start()
    cid = "c" * 32
    sink(DomainEvent("call.offered", cid, {"trunk": "t"}, T0))
    sink(agent_event("agent.presence", 1, "1001"))
    sink(agent_event("agent.activity", 2, "1001", call_id=cid))  # call-scoped: the call's log
    sink(DomainEvent("queue.offer", cid, {"queue": "sales", "extension": "1001"}, T0 + timedelta(seconds=3)))
    sink(agent_event("agent.reachable", 4, "1002"))
    sink(agent_event("agent.presence", 5, None))  # no extension: stored anyway
    sink(DomainEvent("other.thing", None, {}, T0))  # not an agent or security event: not stored
    await sink.aclose(give_up_after=10)
    assert sink.written == 6 and sink.failed == 0

    async with migrated_store.sessions() as session:
        stored = (await session.execute(
            select(AgentEvent.type, AgentEvent.extension, AgentEvent.at).order_by(AgentEvent.id)
        )).all()  # fmt: skip
        call_types = (await session.scalars(select(CallEvent.type).order_by(CallEvent.seq))).all()
    assert [(t, e) for t, e, _ in stored] == [
        ("agent.presence", "1001"), ("agent.reachable", "1002"), ("agent.presence", None)
    ]  # fmt: skip
    assert stored[0][2] == T0 + timedelta(seconds=1)
    assert call_types == ["call.offered", "agent.activity", "queue.offer"]


async def test_agent_event_lister_filters_and_pages(migrated_store: Store) -> None:
    sink = StoreSink(migrated_store)
    sink.start()
    for i in range(10):
        sink(agent_event("agent.presence" if i % 2 else "agent.reachable", i, "1001" if i < 7 else "1002"))
    await sink.aclose(give_up_after=10)
    agents = migrated_store.agents

    page = await agents.list_events(AgentEventFilters(extension="1001"), limit=3)
    assert [int((e.at - T0).total_seconds()) for e in page.items] == [6, 5, 4]
    assert page.items[0].extension == "1001" and page.items[0].data["presence"] == "ready"
    seen = [e.at for e in page.items]
    while page.next_cursor is not None:
        page = await agents.list_events(AgentEventFilters(extension="1001"), limit=3, cursor=page.next_cursor)
        seen += [e.at for e in page.items]
    assert [int((at - T0).total_seconds()) for at in seen] == [6, 5, 4, 3, 2, 1, 0]

    typed = await agents.list_events(AgentEventFilters(type="agent.presence"))
    assert [int((e.at - T0).total_seconds()) for e in typed.items] == [9, 7, 5, 3, 1]
    window = AgentEventFilters(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=5))
    assert len((await agents.list_events(window)).items) == 3
    offset = await agents.list_events(AgentEventFilters(extension="1002"), offset=2)
    assert [int((e.at - T0).total_seconds()) for e in offset.items] == [7]
    with pytest.raises(InvalidCursor):
        await agents.list_events(cursor="bm90IGEgY3Vyc29y")


async def test_latest_event_of_a_type_per_agent(migrated_store: Store) -> None:
    sink = StoreSink(migrated_store)
    sink.start()
    for i in range(10):
        sink(agent_event("agent.presence" if i % 2 else "agent.reachable", i, "1001" if i < 7 else "1002"))
    await sink.aclose(give_up_after=10)
    latest = await migrated_store.agents.latest_events("agent.presence")
    assert {ext: int((e.at - T0).total_seconds()) for ext, e in latest.items()} == {"1001": 5, "1002": 9}
    assert await migrated_store.agents.latest_events("agent.nothing") == {}


async def test_migration_0002_adds_the_tables_and_downgrades(db_url: str) -> None:
    await upgrade(db_url)
    store = Store(db_url)
    try:
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            indexes = await conn.run_sync(
                lambda sync: {tuple(i["column_names"]) for i in inspect(sync).get_indexes("agent_events")}
            )
        assert {"agents", "agent_events"} <= tables
        assert {("extension", "at"), ("at",)} <= indexes

        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0001")
        assert await current_revision(store.engine) == "0001"
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert "agents" not in tables and "agent_events" not in tables and "calls" in tables

        await upgrade(db_url)
        assert await current_revision(store.engine) == head_revision()
        await store.agents.create(ann(), "pw", "helpline")
        assert await store.agents.get("1001") is not None
    finally:
        await store.close()
