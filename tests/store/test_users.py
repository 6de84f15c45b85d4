"""Users and their sessions on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from helpline.store import Store
from helpline.store.users import InvalidUser, SessionRefused, UserExists, UserNotFound


async def test_create_read_update(migrated_store: Store) -> None:
    users = migrated_store.users
    ann = await users.create("ann", "supervisor", "hash-1", display_name="Ann A.")
    assert ann.display_name == "Ann A." and not ann.disabled and ann.created_at.tzinfo is not None
    agent = await users.create("bo.b", "agent", "hash-2", agent_extension="1001")
    assert agent.display_name == "bo.b" and agent.agent_extension == "1001"
    assert [u.username for u in await users.list()] == ["ann", "bo.b"]
    assert await users.count() == 2 and await users.count(role="agent") == 1
    with pytest.raises(UserExists) as exists:
        await users.create("ann", "admin", "h")
    assert exists.value.field == "username"
    changed = await users.update("ann", {"role": "compliance", "disabled": True})
    assert changed.role == "compliance" and changed.disabled and changed.updated_at >= ann.updated_at
    assert await users.count(enabled_only=True) == 1
    rehashed = await users.set_password_hash("bo.b", "hash-3")
    assert rehashed.password_hash == "hash-3" and rehashed.password_changed_at > agent.password_changed_at
    assert "password_hash" not in rehashed.public().model_dump()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (("has space", "admin"), "username"),
        (("", "admin"), "username"),
        (("ok", "root"), "role"),
    ],
)
async def test_bad_input_names_the_field(migrated_store: Store, call: tuple[str, str], field: str) -> None:
    with pytest.raises(InvalidUser) as refused:
        await migrated_store.users.create(*call, "h")
    assert refused.value.field == field


async def test_update_refusals(migrated_store: Store) -> None:
    await migrated_store.users.create("ann", "admin", "h")
    for changes, field in (({"role": "god"}, "role"), ({"disabled": "yes"}, "disabled"),
                           ({"username": "x"}, "username"), ({"password": "x"}, "password")):  # fmt: skip
        with pytest.raises(InvalidUser) as refused:
            await migrated_store.users.update("ann", changes)
        assert refused.value.field == field
    with pytest.raises(UserNotFound):
        await migrated_store.users.update("nobody", {"disabled": True})


async def test_session_policies(migrated_store: Store) -> None:
    user = await migrated_store.users.create("ann", "admin", "h")
    sessions = migrated_store.user_sessions
    later = datetime.now(UTC) + timedelta(hours=1)

    async def open_one(sid: str, kind: str, policy: str) -> list[str]:
        opened = await sessions.open(
            user.id, kind, session_id=sid, csrf_token="c", expires_at=later,  # type: ignore[arg-type]
            concurrent=policy,  # type: ignore[arg-type]
        )
        return opened.ended

    assert await open_one("t1", "token", "end_first") == []
    assert await open_one("a", "browser", "end_first") == []
    assert await open_one("b", "api", "end_first") == ["a"]  # the issued token is not a sign-in
    with pytest.raises(SessionRefused):
        await open_one("c", "browser", "refuse")
    assert await open_one("d", "browser", "allow") == []
    found = await sessions.get("a")
    assert found is not None and found[0].end_reason == "replaced" and found[1].username == "ann"
    live = {s.id for s in await sessions.live_for_user(user.id)}
    assert live == {"t1", "b", "d"}
    assert sorted(await sessions.end_for_user(user.id, "user_disabled", keep="d")) == ["b", "t1"]
    assert await sessions.end("d", "signed_out") and not await sessions.end("d", "again")
    assert await sessions.live_for_user(user.id) == []


async def test_idle_browser_sessions_do_not_count_for_the_policy(migrated_store: Store) -> None:
    user = await migrated_store.users.create("ann", "admin", "h")
    sessions = migrated_store.user_sessions
    later = datetime.now(UTC) + timedelta(hours=1)
    await sessions.open(user.id, "browser", session_id="old", csrf_token="c", expires_at=later)
    await sessions.touch("old", datetime.now(UTC) - timedelta(hours=2))
    opened = await sessions.open(
        user.id, "browser", session_id="new", csrf_token="c", expires_at=later, concurrent="refuse",
        idle_since=datetime.now(UTC) - timedelta(minutes=30),
    )  # fmt: skip
    assert opened.ended == []
