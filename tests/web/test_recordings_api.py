"""The recordings API over real HTTP (uvicorn + httpx) with real sign-in, a real database (SQLite and
PostgreSQL) and recordings sealed into real storage: roles, the audit trail, play tickets, HTTP
Range, decryption, integrity, holds, deletion receipts, export and erasure."""

from __future__ import annotations

import asyncio
import json
import os
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from helpline.events import EventBus
from helpline.recording.keys import load_public_key
from helpline.recording.verify import verify_bundle
from helpline.store import Store
from helpline.store.audit import AuditFilters, AuditRecord
from helpline.web import create_app
from helpline.web.auth import hash_password
from helpline.web.play_tickets import PlayTickets, TicketRefused, byte_window
from tests.web.http_support import serve
from tests.web.recording_fixture import BYTES_PER_SECOND, Archive, make_archive

HEADER = 44
PASSWORD = "correct horse battery"


@dataclass
class World:
    base: str
    store: Store
    archive: Archive

    async def client(self, username: str) -> httpx.AsyncClient:
        """A signed-in browser-like client: session cookie plus the CSRF header on every request."""
        http = httpx.AsyncClient(base_url=self.base, timeout=10)
        r = await http.post("/api/session", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        http.headers["X-CSRF-Token"] = r.json()["csrf"]
        return http

    async def audit(self, **filters: Any) -> list[AuditRecord]:
        entries = [e async for e in self.store.audit.export(AuditFilters(**filters))]
        return [e for e in entries if e.action not in ("sign_in",)]


@pytest.fixture
async def world(migrated_store: Store, tmp_path: Path) -> AsyncIterator[World]:
    store = migrated_store
    for name, role in (
        ("carol", "compliance"),
        ("dave", "compliance"),
        ("alice", "agent"),
        ("root", "admin"),
    ):
        await store.users.create(name, role, await hash_password(PASSWORD))
    await store.retention.seed(
        {
            "default": {
                "days": 365,
                "floor_days": 30,
                "purpose": "quality",
                "lawful_basis": "legitimate interest",
            }
        },
        datetime.now(UTC),
    )
    archive = make_archive(tmp_path, store)
    app = create_app(store, EventBus(), CollectorRegistry(), recordings=archive.library())
    async with serve(app) as base:
        yield World(base, store, archive)


def flip_byte(path: Path, offset: int) -> None:
    os.chmod(path, 0o640)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def data_at(wav: bytes, second: float, length: int = 640) -> bytes:
    offset = HEADER + int(second * BYTES_PER_SECOND)
    return wav[offset : offset + length]


async def test_an_agent_may_neither_list_nor_play_and_each_refusal_is_audited(world: World) -> None:
    row, _wav = await world.archive.seal()
    agent = await world.client("alice")
    r = await agent.get("/api/recordings")
    assert r.status_code == 403, r.text
    assert "compliance" in r.json()["error"]
    r = await agent.post(f"/api/recordings/{row.id}/play", json={"start": 0, "end": 5})
    assert r.status_code == 403
    r = await agent.get(f"/api/recordings/{row.id}")
    assert r.status_code == 403
    denied = await world.audit(actor="alice", action="access_denied")
    assert [e.detail["path"] for e in denied] == [
        "/api/recordings",
        f"/api/recordings/{row.id}/play",
        f"/api/recordings/{row.id}",
    ]
    assert await world.audit(action="play") == []
    await agent.aclose()


async def test_compliance_searches_by_caller_and_views_with_consent_evidence(world: World) -> None:
    row, _ = await world.archive.seal(caller="+15550000001")
    other, _ = await world.archive.seal(caller="+15550000002", consent_outcome="denied")
    carol = await world.client("carol")
    r = await carol.get("/api/recordings", params={"caller": "+15550000001"})
    assert r.status_code == 200, r.text
    assert [item["id"] for item in r.json()["items"]] == [row.id]
    r = await carol.get("/api/recordings", params={"consent": "denied"})
    assert [item["id"] for item in r.json()["items"]] == [other.id]
    r = await carol.get("/api/recordings", params={"nonsense": "1"})
    assert r.status_code == 400 and r.json()["field"] == "nonsense"

    r = await carol.get(f"/api/recordings/{row.id}")
    assert r.status_code == 200
    body = r.json()
    assert body["recording"]["channels"][0]["role"] == "caller"
    assert {o["kind"] for o in body["recording"]["overlays"]} >= {"pause", "hold", "consent"}
    assert [c["outcome"] for c in body["consent"]] == ["granted"]
    r = await carol.get("/api/recordings/doesnotexist")
    assert r.status_code == 404

    listed = await world.audit(actor="carol", action="list")
    assert [e.detail for e in listed] == [{"caller": "+15550000001"}, {"consent": "denied"}]
    assert [e.target_id for e in await world.audit(actor="carol", action="view")] == [row.id]
    await carol.aclose()


async def test_playing_30_to_45_s_is_one_audit_entry_and_the_ticket_serves_only_that_range(
    world: World,
) -> None:
    row, wav = await world.archive.seal(seconds=60)
    carol = await world.client("carol")
    r = await carol.post(f"/api/recordings/{row.id}/play", json={"start": 30, "end": 45})
    assert r.status_code == 200, r.text
    ticket = r.json()
    assert (ticket["start"], ticket["end"]) == (30, 45)

    # The browser fetches the whole file in pieces; none of that is another play.
    r = await carol.get(ticket["audio_url"])
    assert r.status_code == 200
    body = r.content
    assert len(body) == len(wav)
    assert body[:HEADER] == wav[:HEADER]  # the header is always real
    first, end = HEADER + 30 * BYTES_PER_SECOND, HEADER + 45 * BYTES_PER_SECOND
    assert body[first:end] == wav[first:end]  # the ticket's range is the real audio
    assert body[HEADER:first] == bytes(first - HEADER)  # before it: silence, never the recording
    assert body[end:] == bytes(len(wav) - end)  # after it: silence
    assert wav[HEADER:first] != bytes(first - HEADER)  # (the recording is not silent there)

    for piece in ("bytes=0-43", f"bytes={first}-{first + 999}", f"bytes={end - 640}-"):
        r = await carol.get(ticket["audio_url"], headers={"Range": piece})
        assert r.status_code == 206

    plays = await world.audit(action="play")
    assert len(plays) == 1
    assert (plays[0].actor, plays[0].target_id, plays[0].detail) == (
        "carol",
        row.id,
        {"start": 30, "end": 45},
    )
    await carol.aclose()


async def test_a_ticket_is_bound_to_its_user_and_recording(world: World) -> None:
    row, _ = await world.archive.seal(seconds=10)
    other, _ = await world.archive.seal(seconds=10)
    carol, dave = await world.client("carol"), await world.client("dave")
    ticket = (await carol.post(f"/api/recordings/{row.id}/play", json={"start": 0, "end": 5})).json()[
        "ticket"
    ]

    r = await dave.get(f"/api/recordings/{row.id}/audio", params={"ticket": ticket})
    assert r.status_code == 403 and r.json()["field"] == "ticket"
    r = await carol.get(f"/api/recordings/{other.id}/audio", params={"ticket": ticket})
    assert r.status_code == 403
    r = await carol.get(f"/api/recordings/{row.id}/audio")
    assert r.status_code == 403
    r = await carol.get(f"/api/recordings/{row.id}/audio", params={"ticket": "forged"})
    assert r.status_code == 403
    r = await httpx.AsyncClient(base_url=world.base).get(f"/api/recordings/{row.id}/audio?ticket={ticket}")
    assert r.status_code == 401  # no session at all

    r = await carol.post(f"/api/recordings/{row.id}/play", json={"start": 11, "end": 12})
    assert r.status_code == 422 and r.json()["field"] == "start"
    r = await carol.post(f"/api/recordings/{row.id}/play", json={"start": 5, "end": 4})
    assert r.status_code == 422 and r.json()["field"] == "end"
    await carol.aclose()
    await dave.aclose()


def test_tickets_expire_after_their_lifetime_and_cover_whole_ticks() -> None:
    now = [1000.0]
    tickets = PlayTickets(ttl_s=600, clock=lambda: now[0])
    ticket = tickets.issue("carol", "rec", 30.0, 45.0, size=HEADER + 60 * BYTES_PER_SECOND)
    assert (ticket.window.first, ticket.window.end) == (HEADER + 30 * 32000, HEADER + 45 * 32000)
    assert tickets.check(ticket.token, "carol", "rec") == ticket
    now[0] += 599.9
    assert tickets.check(ticket.token, "carol", "rec") == ticket
    now[0] += 0.2
    with pytest.raises(TicketRefused):
        tickets.check(ticket.token, "carol", "rec")
    # 10.01 s starts inside the tick beginning at 10.00 s; 10.03 s ends inside the one ending at 10.04 s.
    window = byte_window(10.01, 10.03, size=10**9)
    assert (window.first, window.end) == (HEADER + 500 * 640, HEADER + 502 * 640)
    assert byte_window(0, 99, size=1000).end == 1000


async def test_http_range_semantics(world: World) -> None:
    row, wav = await world.archive.seal(seconds=10)
    carol = await world.client("carol")
    url = (await carol.post(f"/api/recordings/{row.id}/play", json={"start": 0, "end": 10})).json()[
        "audio_url"
    ]
    size = len(wav)

    r = await carol.get(url)
    assert r.status_code == 200 and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "audio/wav" and r.content == wav
    r = await carol.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 100-199/{size}" and r.headers["content-length"] == "100"
    assert r.content == wav[100:200]
    r = await carol.get(url, headers={"Range": "bytes=-500"})
    assert (r.status_code, r.content, r.headers["content-range"]) == (
        206,
        wav[-500:],
        f"bytes {size - 500}-{size - 1}/{size}",
    )
    r = await carol.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert r.status_code == 206 and r.content == wav[-10:]
    r = await carol.get(url, headers={"Range": f"bytes={size - 10}-{size + 5000}"})
    assert r.status_code == 206 and r.content == wav[-10:]
    r = await carol.get(url, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    r = await carol.get(url, headers={"Range": "bytes=0-1,10-11"})  # coalesced into one span
    assert r.status_code == 206 and r.content == wav[0:12]
    r = await carol.get(url, headers={"Range": "pages=1-2"})  # not bytes: ignored, the whole file
    assert r.status_code == 200 and len(r.content) == size
    r = await carol.head(url)
    assert r.status_code == 200 and r.headers["content-length"] == str(size) and r.content == b""
    await carol.aclose()


async def test_encrypted_recordings_play_decrypted_and_verify(world: World) -> None:
    row, wav = await world.archive.seal(seconds=8, encrypted=True)
    stored = world.archive.storage.path_of(row.storage_key or "")
    assert not (stored / "audio.wav").exists() and (stored / "audio.wav.enc").exists()
    carol = await world.client("carol")
    url = (await carol.post(f"/api/recordings/{row.id}/play", json={"start": 0, "end": 8})).json()[
        "audio_url"
    ]
    r = await carol.get(
        url, headers={"Range": f"bytes={HEADER + 3 * BYTES_PER_SECOND}-{HEADER + 5 * BYTES_PER_SECOND - 1}"}
    )
    assert r.status_code == 206 and r.content == data_at(wav, 3, 2 * BYTES_PER_SECOND)
    r = await carol.get(url)
    assert r.content == wav
    r = await carol.get(f"/api/recordings/{row.id}/integrity")
    assert r.json()["status"] == "verified", r.text
    await carol.aclose()


async def test_integrity_badge_turns_failed_when_a_byte_of_audio_changes(world: World) -> None:
    row, _wav = await world.archive.seal(seconds=10)
    carol = await world.client("carol")
    r = await carol.get(f"/api/recordings/{row.id}/integrity")
    assert r.status_code == 200 and r.json()["status"] == "verified", r.text

    audio = world.archive.storage.path_of(row.storage_key or "") / "audio.wav"
    await asyncio.to_thread(flip_byte, audio, HEADER + 4 * BYTES_PER_SECOND + 10)
    r = await carol.get(f"/api/recordings/{row.id}/integrity")
    report = r.json()
    assert report["status"] == "failed"
    assert any(p.get("segment") == 4 for p in report["problems"]), report
    await carol.aclose()


async def test_a_hold_blocks_deletion_and_a_deletion_leaves_a_receipt(world: World) -> None:
    row, _ = await world.archive.seal(seconds=5)
    carol = await world.client("carol")
    r = await carol.put(f"/api/recordings/{row.id}/hold", json={"reason": "case 2024-17"})
    assert r.status_code == 200 and r.json()["legal_hold"]["by"] == "carol"
    r = await carol.put(f"/api/recordings/{row.id}/hold", json={"reason": "again"})
    assert r.status_code == 409

    r = await carol.request("DELETE", f"/api/recordings/{row.id}", json={"reason": "no longer needed"})
    assert r.status_code == 409 and "legal hold" in r.json()["error"]
    stored = world.archive.storage.path_of(row.storage_key or "")
    assert stored.is_dir()

    r = await carol.delete(f"/api/recordings/{row.id}/hold")
    assert r.status_code == 200 and r.json()["legal_hold"] is None
    r = await carol.request("DELETE", f"/api/recordings/{row.id}", json={"reason": "no longer needed"})
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["status"] == "deleted" and receipt["deletion"]["by"] == "carol"
    assert not stored.exists()

    lines = [json.loads(line) for line in world.archive.storage.ledger_path.read_text().splitlines()]
    assert lines[-1]["kind"] == "deleted" and lines[-1]["recording_id"] == row.id
    assert lines[-1]["seq"] == receipt["deletion"]["ledger_seq"]
    assert lines[-1]["manifest_sha256"] == row.manifest_sha256

    r = await carol.get(f"/api/recordings/{row.id}")  # the row stays as the receipt
    assert r.status_code == 200 and r.json()["recording"]["status"] == "deleted"
    r = await carol.post(f"/api/recordings/{row.id}/play", json={"start": 0, "end": 1})
    assert r.status_code == 410

    actions = [(e.action, e.outcome) for e in await world.audit(target_id=row.id)]
    assert actions == [
        ("hold", "ok"),
        ("delete", "denied"),
        ("release", "ok"),
        ("delete", "ok"),
        ("view", "ok"),
    ]
    await carol.aclose()


async def test_the_retention_floor_blocks_deletion(world: World) -> None:
    row, _ = await world.archive.seal(seconds=3, floor_days=30)
    carol = await world.client("carol")
    r = await carol.request("DELETE", f"/api/recordings/{row.id}", json={"reason": "tidy up"})
    assert r.status_code == 409 and "retention floor" in r.json()["error"]
    root = await world.client("root")
    r = await root.put("/api/retention-policies/default", json={"days": 10})
    assert r.status_code == 422 and r.json()["field"] == "days"
    r = await root.put("/api/retention-policies/default", json={"days": 400})
    assert r.status_code == 200 and r.json()["days"] == 400
    r = await carol.put("/api/retention-policies/default", json={"days": 500})
    assert r.status_code == 403
    await carol.aclose()
    await root.aclose()


async def test_download_and_export_bundle_verify_offline(world: World, tmp_path: Path) -> None:
    plain, wav = await world.archive.seal(seconds=4)
    secret, secret_wav = await world.archive.seal(seconds=3, encrypted=True)
    carol = await world.client("carol")
    r = await carol.get(f"/api/recordings/{plain.id}/download")
    assert r.status_code == 200 and r.content == wav
    assert r.headers["content-disposition"].startswith("attachment;")

    r = await carol.post("/api/recordings/export", json={"ids": [plain.id, secret.id]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    bundle = tmp_path / "export.zip"
    bundle.write_bytes(r.content)
    with zipfile.ZipFile(bundle) as zf:
        assert zf.read(f"{secret.id}/audio.wav") == secret_wav  # decrypted on the way out
    report = verify_bundle(bundle, load_public_key(world.archive.public_key_path))
    assert report.ok, report.to_dict()
    assert [e.action for e in await world.audit(actor="carol") if e.action in ("download", "export")] == [
        "download",
        "export",
    ]
    await carol.aclose()


async def test_export_a_search_result_or_everything(world: World, tmp_path: Path) -> None:
    """A search result (the same filters as the list) or everything, exactly one selection per request;
    the audit entry keeps the search and the ids it resolved to."""
    mine, _ = await world.archive.seal(seconds=2, caller="+15550001111")
    theirs, _ = await world.archive.seal(seconds=2, caller="+15550002222")
    carol = await world.client("carol")

    def ids_in(content: bytes) -> set[str]:
        bundle = tmp_path / "search.zip"
        bundle.write_bytes(content)
        with zipfile.ZipFile(bundle) as zf:
            return {name.split("/")[0] for name in zf.namelist() if name.endswith("/manifest.json")}

    r = await carol.post("/api/recordings/export", json={"search": {"caller": "+15550001111"}})
    assert r.status_code == 200, r.text
    assert ids_in(r.content) == {mine.id}
    r = await carol.post("/api/recordings/export", json={"all": True})
    assert r.status_code == 200 and ids_in(r.content) >= {mine.id, theirs.id}
    r = await carol.post("/api/recordings/export", json={"search": {"caller": "+15559999999"}})
    assert r.status_code == 404 and r.json()["field"] == "search"
    r = await carol.post("/api/recordings/export", json={"ids": [mine.id], "all": True})
    assert r.status_code == 422, r.text
    r = await carol.post("/api/recordings/export", json={})
    assert r.status_code == 422, r.text
    exports = [e for e in await world.audit(actor="carol") if e.action == "export"]
    assert exports[0].detail["search"] == {"caller": "+15550001111"} and exports[0].detail["ids"] == [mine.id]
    assert exports[1].detail["all"] is True
    await carol.aclose()


async def test_erasure_deletes_what_no_hold_keeps(world: World) -> None:
    phone = "+15557654321"
    gone, _ = await world.archive.seal(seconds=2, caller=phone)
    held, _ = await world.archive.seal(seconds=2, caller=phone)
    unrelated, _ = await world.archive.seal(seconds=2)
    carol = await world.client("carol")
    await carol.put(f"/api/recordings/{held.id}/hold", json={"reason": "litigation"})
    r = await carol.post("/api/erasure", json={"phone": phone})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["deleted"] == [gone.id]
    assert [k["recording_id"] for k in report["kept"]] == [held.id]
    assert (await world.store.recordings.get(gone.id)).status == "erased"  # type: ignore[union-attr]
    assert (await world.store.recordings.get(unrelated.id)).status == "stored"  # type: ignore[union-attr]
    erase = await world.audit(action="erase")
    assert len(erase) == 1 and erase[0].detail["deleted"] == [gone.id]
    await carol.aclose()


async def test_ui_pages_carry_a_strict_content_security_policy(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base) as http:
        r = await http.get("/")
        assert r.status_code in (303, 307) and r.headers["location"] == "/ui/recordings.html"
        for path in ("/ui/recordings.html", "/ui/login.html", "/ui/app.js", "/ui/recordings/abc"):
            r = await http.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
        r = await http.get("/ui/recordings/abc")
        assert "player.js" in r.text
