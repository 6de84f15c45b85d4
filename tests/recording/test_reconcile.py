"""Proof of recording (R-M3) on a real archive: CDRs and event logs written by the real StoreSink into
SQLite, recordings sealed, signed and stored in the data dir. Synthetic gaps (no recording, a recording
20 % shorter than its call, a silent right channel, a flipped byte, a failure event) each raise their
own finding; a clean call is ok; the CLI reports the same findings and exits 1, and 0 on a clean
window."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpline.events import DomainEvent, EventBus
from helpline.recording import reconcile as reconcile_module
from helpline.recording.reconcile import ReconcileReport, reconcile
from helpline.store import Store, StoreSink, upgrade
from helpline.store.recordings import RecordingRow
from tests.cli.cli_support import CliGroup
from tests.web import recording_fixture
from tests.web.recording_fixture import Archive, make_archive

NOW = datetime.now(UTC)
DAY = NOW - timedelta(days=2)  # the day being reconciled
CLEAN_DAY = NOW - timedelta(days=5)  # a day with only a clean call
SECONDS = 20


@dataclass
class Calls:
    """Call ids by what was done to them, and the recording rows they own."""

    ids: dict[str, str]
    rows: dict[str, RecordingRow]


def event(type: str, call_id: str, at: datetime, **data: Any) -> DomainEvent:
    return DomainEvent(type=type, call_id=call_id, data=data, at=at)


def publish_call(bus: EventBus, call_id: str, start: datetime, *, recording_id: str | None,
                 seconds: float | None, extra: Sequence[tuple[float, str, dict[str, Any]]] = ()) -> None:
    """A call answered 8 s before ``start`` (the IVR, then the queue), an agent and the recording from
    ``start``, the call ending ``seconds`` after it (never, when None)."""
    bus.publish(event("call.offered", call_id, start - timedelta(seconds=8), sip_call_id=f"{call_id}@sbc",
                      trunk="carrier-a", caller="+15551230001", did="+18005550100"))
    bus.publish(event("call.answered", call_id, start - timedelta(seconds=7.5), codec="PCMU", flow_id="main"))
    if recording_id is not None:
        bus.publish(event("queue.connected", call_id, start, queue="support", agent="1001"))
        bus.publish(event("recording.started", call_id, start, recording_id=recording_id, mode="consent"))
    for offset, type_, data in extra:
        bus.publish(event(type_, call_id, start + timedelta(seconds=offset), **data))
    if seconds is not None:
        bus.publish(event("call.ended", call_id, start + timedelta(seconds=seconds), disposition="completed",
                          sip_code=200, reason="bye", by="caller"))


def tones_without(channel: int) -> Callable[[int], bytes]:
    """The fixture's tones with one channel (0 the caller, 1 what the caller heard) all zeros."""
    tones = recording_fixture.stereo_tones

    def silenced(seconds: int) -> bytes:
        samples = np.frombuffer(tones(seconds), dtype="<i2").reshape(-1, 2).copy()
        samples[:, channel] = 0
        return samples.tobytes()

    return silenced


def flip_audio_byte(archive: Archive, row: RecordingRow) -> None:
    assert row.storage_key is not None
    wav = archive.storage.path_of(row.storage_key) / "audio.wav"
    data = bytearray(wav.read_bytes())
    data[44 + 5000] ^= 0x01
    wav.write_bytes(bytes(data))


async def build(archive: Archive, store: Store, monkeypatch: pytest.MonkeyPatch) -> Calls:
    async def seal(start: datetime) -> RecordingRow:
        row, _wav = await archive.seal(seconds=SECONDS, started_at=start)
        return row

    rows = {
        "clean": await seal(DAY),
        "short": await seal(DAY + timedelta(minutes=1)),
        "flipped": await seal(DAY + timedelta(minutes=2)),
        "failed": await seal(DAY + timedelta(minutes=3)),
        "clean_day": await seal(CLEAN_DAY),
    }
    with monkeypatch.context() as patch:
        patch.setattr(recording_fixture, "stereo_tones", tones_without(1))
        rows["one_sided"] = await seal(DAY + timedelta(minutes=4))
    flip_audio_byte(archive, rows["flipped"])
    await store.recordings.update(rows["failed"].id, status="recording")  # sealing never finished

    ids = {name: row.call_id for name, row in rows.items()}
    ids |= {name: uuid.uuid4().hex for name in ("missing", "unrecorded", "unanswered", "running", "old")}
    bus = EventBus()
    sink = StoreSink(store)
    sink.start()
    bus.subscribe(sink)
    try:
        for name in ("clean", "flipped", "one_sided", "clean_day"):
            row = rows[name]
            publish_call(bus, row.call_id, row.started_at, recording_id=row.id, seconds=SECONDS + 0.2,
                         extra=[(SECONDS + 0.3, "recording.stored", {"recording_id": row.id})])
        short = rows["short"]  # the call went on 5 s after the recording's 20 s: 20 % short
        publish_call(bus, short.call_id, short.started_at, recording_id=short.id, seconds=SECONDS * 1.25)
        failed = rows["failed"]
        publish_call(bus, failed.call_id, failed.started_at, recording_id=failed.id, seconds=SECONDS,
                     extra=[(SECONDS + 1, "recording.failed", {"recording_id": failed.id, "stage": "seal"})])
        publish_call(bus, ids["missing"], DAY + timedelta(minutes=5), recording_id=uuid.uuid4().hex,
                     seconds=30)
        publish_call(bus, ids["unrecorded"], DAY + timedelta(minutes=6), recording_id=None, seconds=30)
        publish_call(bus, ids["running"], DAY + timedelta(minutes=7), recording_id=uuid.uuid4().hex,
                     seconds=None)
        publish_call(bus, ids["old"], NOW - timedelta(days=10), recording_id=uuid.uuid4().hex, seconds=30)
        unanswered = DAY + timedelta(minutes=8)
        bus.publish(event("call.offered", ids["unanswered"], unanswered, caller="+15551230009"))
        bus.publish(event("call.ended", ids["unanswered"], unanswered + timedelta(seconds=20),
                          disposition="abandoned"))
        await sink.flush()
    finally:
        await sink.aclose(give_up_after=10)
    return Calls(ids, rows)


def found(report: dict[str, Any], ids: dict[str, str]) -> set[tuple[str, str]]:
    """(call name, code) of every finding."""
    names = {call_id: name for name, call_id in ids.items()}
    return {(names[f["call_id"]], f["code"]) for f in report["findings"]}


EXPECTED = {
    ("missing", "missing"), ("failed", "missing"), ("failed", "failed"), ("short", "short"),
    ("one_sided", "one_sided"), ("flipped", "unverified"),
}  # fmt: skip


async def test_reconciliation_finds_each_synthetic_gap_and_the_cli_reports_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data_dir}"\n')
    db = data_dir / "helpline.sqlite3"
    await upgrade(f"sqlite:///{db}")
    store = Store(f"sqlite:///{db}")
    try:
        archive = make_archive(data_dir, store)
        calls = await build(archive, store, monkeypatch)
        monkeypatch.setattr(reconcile_module, "CALL_PAGE", 2)  # several pages through the cursor
        report: ReconcileReport = await reconcile(store, archive.library(), since=NOW - timedelta(days=3),
                                                  until=NOW)
    finally:
        await store.close()

    result = report.as_dict()
    assert json.loads(json.dumps(result)) == result
    assert found(result, calls.ids) == EXPECTED
    # in the window: clean, short, flipped, failed, one_sided, missing, unrecorded, running, unanswered
    assert (report.calls, report.in_scope, report.unsettled) == (9, 7, 1)
    assert (report.recordings, report.ok, report.deleted) == (6, 1, 0)
    assert result["counts"] == {"missing": 2, "failed": 1, "short": 1, "one_sided": 1, "unverified": 1,
                                "unreadable": 0}
    by_code = {f["code"]: f for f in result["findings"] if f["code"] != "missing"}
    short = by_code["short"]
    assert short["recording_id"] == calls.rows["short"].id
    assert (short["duration_s"], short["expected_s"], short["shortfall"]) == (20.0, 25.0, 0.2)
    one_sided = by_code["one_sided"]
    assert one_sided["recording_id"] == calls.rows["one_sided"].id
    assert (one_sided["channel"], one_sided["role"], one_sided["silent_share"]) == (1, "agent", 1.0)
    assert one_sided["windows"] == SECONDS - 5  # after the agent answered at 5 s; no pause within 20 s
    unverified = by_code["unverified"]
    assert unverified["integrity"] == "failed" and unverified["problems"]
    assert by_code["failed"]["stage"] == "seal"
    missing = {f["status"] for f in result["findings"] if f["code"] == "missing"}
    assert missing == {"absent", "recording"}

    cli = CliGroup("recordings", config, db)
    run = cli("reconcile", "--since", (NOW - timedelta(days=3)).isoformat(), "--json")
    assert run.returncode == 1, run.stderr
    assert found(json.loads(run.stdout), calls.ids) == EXPECTED
    human = cli("reconcile", "--since", (NOW - timedelta(days=3)).isoformat())
    assert human.returncode == 1
    assert f"ONE_SIDED  call {calls.ids['one_sided']} recording {calls.rows['one_sided'].id}" in human.stdout
    assert "1 ok" in human.stdout
    clean = cli.ok("reconcile", "--since", (CLEAN_DAY - timedelta(hours=1)).isoformat(),
                   "--until", (CLEAN_DAY + timedelta(hours=1)).isoformat(), "--json")
    assert json.loads(clean)["ok"] == 1 and json.loads(clean)["findings"] == []
    assert cli.refused("reconcile", "--since", NOW.isoformat(), "--until", DAY.isoformat()).startswith(
        "helpline: --until:")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT action, detail FROM audit_log ORDER BY id").fetchall()
    audited = [json.loads(detail) for action, detail in rows if action == "reconcile"]
    assert [len(d["findings"]) for d in audited] == [6, 6, 0]


async def test_a_pause_covering_the_silence_and_an_agent_only_recording_are_not_one_sided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silence written on purpose is not a lost side: inside a pause span, and on the caller's channel
    of a recording the caller declined (agent only)."""
    data_dir = tmp_path
    db = data_dir / "helpline.sqlite3"
    await upgrade(f"sqlite:///{db}")
    store = Store(f"sqlite:///{db}")
    try:
        archive = make_archive(data_dir, store)
        with monkeypatch.context() as patch:
            patch.setattr(recording_fixture, "stereo_tones", tones_without(1))
            paused, _ = await archive.seal(seconds=SECONDS, started_at=DAY)
        with monkeypatch.context() as patch:
            patch.setattr(recording_fixture, "stereo_tones", tones_without(0))
            declined, _ = await archive.seal(seconds=SECONDS, started_at=DAY + timedelta(minutes=1),
                                             consent_outcome="declined")
        # the right channel is silent from the agent's answer (5 s) to the end: a pause over all of it
        overlays = [o for o in paused.overlays if o["kind"] != "pause"]
        overlays.append({"kind": "pause", "reason": "manual", "start": 5 * 50, "end": SECONDS * 50})
        await store.recordings.update(paused.id, overlays=overlays)
        bus = EventBus()
        sink = StoreSink(store)
        sink.start()
        bus.subscribe(sink)
        try:
            for row in (paused, declined):
                publish_call(bus, row.call_id, row.started_at, recording_id=row.id, seconds=SECONDS)
            await sink.flush()
        finally:
            await sink.aclose(give_up_after=10)
        report = await reconcile(store, archive.library(), since=DAY - timedelta(hours=1), until=NOW)
        strict = await reconcile(store, archive.library(), since=DAY - timedelta(hours=1), until=NOW,
                                 silent_share=0.0001)
    finally:
        await store.close()
    assert report.findings == [] and report.ok == 2
    # the paused recording has no judged window left; the declined one is judged only on its right side
    assert strict.findings == [] and strict.ok == 2
