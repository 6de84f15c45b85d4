"""``RecordingService`` end to end with real parts: a migrated SQLite store, the event bus, a media engine
on 127.0.0.1 whose RTP session is fed by a UDP peer sending 20 ms PCMU frames of a tone (so the tap runs
on the media clock), sealing into local storage with a signed manifest and ledger, and a second service
on the same data directory recovering what the first left behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DBAPIError

from helpline.events import DomainEvent, EventBus
from helpline.recording.keys import load_public_key
from helpline.recording.ledger import read_ledger
from helpline.recording.manifest import consent_digest
from helpline.recording.policy import RecordingSettings
from helpline.recording.service import RecordingService
from helpline.recording.storage import LocalStorage
from helpline.recording.verify import verify_recording, verify_store
from helpline.store import Store, upgrade
from helpline.store.models import ConsentRecord
from helpline.voice import MediaEngine, PromptCache, PromptSpec
from tests.recording.service_support import (
    CALLER_HZ,
    LATER_HZ,
    PROMPT_HZ,
    Rig,
    answer,
    dominant,
    frames,
    stored_audio,
    stored_dir,
    stored_row,
    tone,
)

SEALED_FILES = {"audio.wav", "peaks.json", "manifest.json", "manifest.sig", "metadata.json", "consent.json"}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    url = f"sqlite:///{tmp_path / 'helpline.db'}"
    await upgrade(url)
    store = Store(url)
    bus = EventBus()
    prompts = PromptCache(tmp_path / "prompts")
    engine = MediaEngine("127.0.0.1", 40000, 40199, prompts)
    built = Rig(tmp_path, store, bus, engine, prompts)
    bus.subscribe(built.events.append)
    try:
        yield built
    finally:
        await built.close()
        await store.close()


def sensitive_spans(overlays: list[dict[str, object]]) -> list[dict[str, object]]:
    return [o for o in overlays if o["kind"] == "pause" and o.get("reason") == "sensitive"]


# ---- the consent gate -------------------------------------------------------------------------------

async def test_declined_under_agent_only_records_only_what_the_caller_heard(rig: Rig) -> None:
    service = await rig.service(include_ivr=True, decline_action="agent_only")
    recording, line = await rig.call(service)
    await recording.consent(answer("denied", response="2"))
    assert await recording.start() is True
    await line.play(PROMPT_HZ, 1.0)
    recording.ended("completed")
    await rig.wait_for("recording.stored", line.call_id)

    row = await stored_row(service, recording)
    assert row.status == "stored" and row.consent_outcome == "denied"
    left, right = await stored_audio(service, row)
    count = len(left) // 160
    assert count >= 45  # the second of prompt, on the media clock
    assert line.session.stats.packets_received >= 40  # the caller was talking the whole time ...
    assert not left.any()  # ... and not one of their samples was kept
    assert dominant(frames(right, 3, count - 3)) == PROMPT_HZ
    gates = [o for o in row.overlays if o["kind"] == "gate"]
    assert gates and gates[0]["data"] == {"caller": False, "agent": True}


async def test_declined_under_none_refuses_and_leaves_nothing(rig: Rig) -> None:
    service = await rig.service(include_ivr=True, decline_action="none")
    recording, line = await rig.call(service)
    await recording.consent(answer("denied", response="2"))
    assert await recording.start() is False
    await asyncio.sleep(0.3)  # media flows; nothing may pick it up
    refused = await rig.wait_for("recording.refused", line.call_id)
    assert refused.data["reason"] == "no consent"
    assert line.session.tap is None
    assert not await asyncio.to_thread((service.layout.spool / recording.recording_id).exists)
    assert await rig.store.recordings.for_call(line.call_id) == []
    recording.ended("completed")
    await service.close()
    assert not rig.of_type("recording.started", line.call_id)
    assert not rig.of_type("recording.stored", line.call_id)
    assert [c.outcome for c in await rig.store.consent.for_call(line.call_id)] == ["denied"]  # evidence


async def test_without_ivr_capture_waits_for_the_agent(rig: Rig) -> None:
    service = await rig.service(include_ivr=False)
    recording, line = await rig.call(service)
    await recording.consent(answer("granted"))
    assert await recording.start() is True  # armed
    await line.play(PROMPT_HZ, 0.6)  # IVR audio: not for this recording
    assert line.session.tap is None
    assert not await asyncio.to_thread((service.layout.spool / recording.recording_id).exists)
    assert await rig.store.recordings.for_call(line.call_id) == []
    assert not rig.of_type("recording.started", line.call_id)

    connected = {"queue": "support", "extension": "1001"}
    rig.bus.publish(DomainEvent.now("queue.connected", line.call_id, connected))
    assert line.session.tap is not None  # attached at once, in the event's own call
    await rig.wait_for("recording.started", line.call_id)
    await line.play(LATER_HZ, 1.0)  # the agent, relayed to the caller
    recording.ended("completed")
    await rig.wait_for("recording.stored", line.call_id)

    row = await stored_row(service, recording)
    assert (row.agent, row.queue) == ("1001", "support")
    assert [a["agent"] for a in row.agents] == ["1001"]
    marks = [o for o in row.overlays if o["kind"] == "agent"]
    assert marks == [{"kind": "agent", "frame": 0, "data": {"queue": "support", "extension": "1001"}}]
    left, right = await stored_audio(service, row)
    count = len(left) // 160
    assert 45 <= count <= 75  # only the part after the agent answered (1 s), not the IVR before it
    assert dominant(frames(right, 3, count - 3)) == LATER_HZ  # none of the IVR prompt
    assert dominant(frames(left, 3, count - 3)) == CALLER_HZ


async def test_nested_sensitive_nodes_make_one_pause(rig: Rig) -> None:
    service = await rig.service(include_ivr=True)
    recording, line = await rig.call(service)
    await recording.consent(answer("granted"))
    assert await recording.start() is True
    playing = asyncio.create_task(line.play(PROMPT_HZ, 5.0))
    await asyncio.sleep(0.4)
    await recording.sensitive(True)  # a sensitive subflow ...
    await asyncio.sleep(0.2)
    await recording.sensitive(True)  # ... and a sensitive node inside it
    await asyncio.sleep(0.2)
    await recording.sensitive(False)  # the node ends: still inside the subflow
    await asyncio.sleep(0.2)
    await recording.sensitive(False)  # the subflow ends
    await asyncio.sleep(0.4)
    line.session.stop_playback()
    await playing
    recording.ended("completed")
    await rig.wait_for("recording.stored", line.call_id)

    paused = rig.of_type("recording.paused", line.call_id)
    resumed = rig.of_type("recording.resumed", line.call_id)
    assert [e.data["reason"] for e in paused] == ["sensitive"]
    assert [e.data["reason"] for e in resumed] == ["sensitive"]
    start, end = int(paused[0].data["frame"]), int(resumed[0].data["frame"])
    assert end - start >= 25  # the whole 0.6 s from the first True to the last False
    row = await stored_row(service, recording)
    span = {"kind": "pause", "reason": "sensitive", "start": start, "end": end}
    assert sensitive_spans(row.overlays) == [span]
    left, right = await stored_audio(service, row)
    assert not frames(left, start, end).any() and not frames(right, start, end).any()
    assert dominant(frames(left, start - 15, start)) == CALLER_HZ
    assert dominant(frames(right, start - 15, start)) == PROMPT_HZ
    assert dominant(frames(left, end, end + 15)) == CALLER_HZ
    assert dominant(frames(right, end, end + 15)) == PROMPT_HZ


# ---- sealing ---------------------------------------------------------------------------------------

async def test_finished_call_is_sealed_stored_ledgered_and_verifies(rig: Rig) -> None:
    service = await rig.service(include_ivr=True)
    recording, line = await rig.call(service)
    notice = PromptSpec(tone_hz=(PROMPT_HZ,), duration_ms=300)
    notice_audio = await rig.prompts.get(notice)
    await line.session.play(notice_audio, barge_in=False)  # the consent notice, before any consent
    await recording.consent(answer("granted", prompts=(notice,)))
    assert await recording.start() is True
    await line.play(LATER_HZ, 1.2)
    recording.ended("completed")
    stored = await rig.wait_for("recording.stored", line.call_id)

    row = await stored_row(service, recording)
    assert row.status == "stored" and row.disposition == "completed" and row.consent_outcome == "granted"
    directory = await stored_dir(service, row)
    assert {p.name for p in directory.iterdir()} == SEALED_FILES
    manifest_bytes = (directory / "manifest.json").read_bytes()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    assert row.manifest_sha256 == manifest_sha == stored.data["manifest_sha256"]
    manifest = json.loads(manifest_bytes)
    assert manifest["recovered"] is False and manifest["call_id"] == line.call_id
    assert len(manifest["segments"]) >= 2  # 0.5 s segments: the chain has links to check
    assert row.duration_s == pytest.approx(manifest["duration_frames"] / 50)

    public_key = load_public_key(service.layout.public_key)
    entries, problems = read_ledger(service.layout.ledger, public_key)
    assert problems == []
    assert [(e["kind"], e["recording_id"], e["manifest_sha256"]) for e in entries] == [
        ("sealed", recording.recording_id, manifest_sha)]
    report = verify_recording(directory, public_key)
    assert report.ok, report.to_dict()
    assert verify_store(service.layout.storage_root, public_key).ok

    evidence = json.loads((directory / "consent.json").read_text())
    [stored_consent] = await rig.store.consent.for_call(line.call_id)
    assert [r["id"] for r in evidence] == [stored_consent.id]
    assert manifest["consent"] == [{"id": stored_consent.id, "sha256": consent_digest(evidence[0])}]
    assert evidence[0]["record_sha256"] == stored_consent.record_sha256 == consent_digest(evidence[0])
    assert evidence[0]["prompt_sha256"] == hashlib.sha256(notice_audio.pcm).hexdigest()
    assert evidence[0]["outcome"] == "granted" and evidence[0]["response"] == "1"

    left, right = await stored_audio(service, row)
    count = len(left) // 160
    assert count == manifest["duration_frames"]
    assert dominant(frames(left, 3, count - 3)) == CALLER_HZ
    assert dominant(frames(right, 3, count - 3)) == LATER_HZ  # not the notice: it came before consent
    assert not await asyncio.to_thread((service.layout.spool / recording.recording_id).exists)


async def _record_and_fail(rig: Rig) -> tuple[str, str, str]:
    """Record a call whose sealing fails (the caller arranged how); returns call, recording id, spool."""
    service = await rig.service(include_ivr=True)
    recording, line = await rig.call(service)
    await recording.consent(answer("granted"))
    assert await recording.start() is True
    await line.play(PROMPT_HZ, 0.8)
    recording.ended("completed")
    await rig.wait_for("recording.failed", line.call_id)
    await service.close()
    rig.services.remove(service)
    spool = service.layout.spool / recording.recording_id
    assert (spool / "meta.json").exists()  # left for recovery
    return line.call_id, recording.recording_id, str(spool)


async def test_recovery_replaces_a_stored_copy_the_ledger_never_vouched_for(rig: Rig) -> None:
    """The crash between storage and ledger, made real: the ledger refuses to append (its last line is
    unreadable), so the sealed copy lands in storage and the seal fails; the spool stays. A new service
    on the same data directory re-seals it: stored once, in the ledger once, status recovered."""
    layout = rig.layout(RecordingSettings())
    layout.ledger.parent.mkdir(parents=True)
    layout.ledger.write_bytes(b"not a ledger entry\n")  # the ledger refuses to append: storage, no entry
    call_id, recording_id, spool = await _record_and_fail(rig)
    storage = LocalStorage(layout.storage_root)
    key = storage.find_sync(recording_id)
    assert key is not None  # the crash window: stored ...
    first_manifest = (storage.path_of(key) / "manifest.json").read_bytes()
    layout.ledger.unlink()  # ... never in the ledger (the unreadable line goes with the operator's fix)
    row = await rig.store.recordings.get(recording_id)
    assert row is not None and row.status == "recording"

    service = await rig.service(include_ivr=True)  # the restart
    recovered = await rig.wait_for("recording.recovered", call_id)
    assert not await asyncio.to_thread(Path(spool).exists)
    assert [k for k in storage.keys_sync() if k.endswith(recording_id)] == [key]
    manifest_bytes = (storage.path_of(key) / "manifest.json").read_bytes()
    assert manifest_bytes != first_manifest and json.loads(manifest_bytes)["recovered"] is True
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    public_key = load_public_key(layout.public_key)
    entries, problems = read_ledger(layout.ledger, public_key)
    assert problems == []
    assert [(e["kind"], e["recording_id"], e["manifest_sha256"]) for e in entries] == [
        ("sealed", recording_id, manifest_sha)]
    row = await rig.store.recordings.get(recording_id)
    assert row is not None
    assert (row.status, row.manifest_sha256, row.storage_key) == ("recovered", manifest_sha, key)
    assert recovered.data["manifest_sha256"] == manifest_sha
    assert verify_store(layout.storage_root, public_key).ok
    assert verify_recording(storage.path_of(key), public_key).ok
    _left, right = await stored_audio(service, row)
    assert dominant(frames(right, 3, len(right) // 160 - 3)) == PROMPT_HZ


async def test_recovery_keeps_a_copy_the_ledger_already_holds(rig: Rig) -> None:
    """The crash after the ledger entry, before the row update and the spool removal (a trigger
    refuses the update): recovery keeps the vouched-for copy byte for byte and only finishes the rest."""
    fail_update = ("CREATE TRIGGER crash_before_row_update BEFORE UPDATE ON recordings "
                   "BEGIN SELECT RAISE(ABORT, 'simulated crash'); END")
    async with rig.store.engine.begin() as connection:
        await connection.execute(text(fail_update))  # sealed, stored, ledgered; then the process "dies"
    call_id, recording_id, spool = await _record_and_fail(rig)
    async with rig.store.engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER crash_before_row_update"))
    layout = rig.layout(RecordingSettings())
    storage = LocalStorage(layout.storage_root)
    key = storage.find_sync(recording_id)
    assert key is not None
    before = {p.name: p.read_bytes() for p in storage.path_of(key).iterdir()}
    public_key = load_public_key(layout.public_key)
    assert len(read_ledger(layout.ledger, public_key)[0]) == 1

    await rig.service(include_ivr=True)  # the restart
    await rig.wait_for("recording.recovered", call_id)
    assert {p.name: p.read_bytes() for p in storage.path_of(key).iterdir()} == before
    manifest_bytes = before["manifest.json"]
    assert json.loads(manifest_bytes)["recovered"] is False  # the copy sealed before the crash, kept
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    entries, problems = read_ledger(layout.ledger, public_key)
    assert problems == [] and [(e["recording_id"], e["manifest_sha256"]) for e in entries] == [
        (recording_id, manifest_sha)]
    row = await rig.store.recordings.get(recording_id)
    assert row is not None
    assert (row.status, row.manifest_sha256, row.storage_key) == ("recovered", manifest_sha, key)
    assert row.duration_s is not None and row.duration_s >= 0.7
    assert not await asyncio.to_thread(Path(spool).exists)
    assert verify_store(layout.storage_root, public_key).ok


# ---- retention ---------------------------------------------------------------------------------------

async def _short_recording(rig: Rig, service: RecordingService) -> tuple[datetime, datetime, datetime, str]:
    recording, line = await rig.call(service)
    await recording.consent(answer("granted"))
    assert await recording.start() is True
    await asyncio.sleep(0.3)
    recording.ended("completed")
    await rig.wait_for("recording.stored", line.call_id)
    row = await stored_row(service, recording)
    return row.started_at, row.delete_after, row.floor_until, row.retention_policy


async def test_retention_dates_follow_the_policy_and_its_changes(rig: Rig) -> None:
    service = await rig.service(include_ivr=True)
    started, delete_after, floor_until, policy = await _short_recording(rig, service)
    assert policy == "default"
    assert delete_after - started == timedelta(days=365)
    assert floor_until - started == timedelta(days=30)

    await rig.store.retention.set_days("default", 400, "admin", datetime.now(UTC))
    await service.reload_retention()
    started, delete_after, floor_until, _ = await _short_recording(rig, service)
    assert delete_after - started == timedelta(days=400)
    assert floor_until - started == timedelta(days=30)


# ---- consent evidence -----------------------------------------------------------------------------------

async def test_consent_evidence_cannot_be_changed(rig: Rig) -> None:
    service = await rig.service()
    recording, line = await rig.call(service)
    await recording.consent(answer("denied", response="2"))
    [before] = await rig.store.consent.for_call(line.call_id)
    with pytest.raises(DBAPIError, match="consent_records is append-only"):
        async with rig.store.sessions() as session, session.begin():
            await session.execute(update(ConsentRecord).where(ConsentRecord.id == before.id)
                                  .values(outcome="granted"))
    with pytest.raises(DBAPIError):
        async with rig.store.sessions() as session, session.begin():
            await session.execute(delete(ConsentRecord).where(ConsentRecord.id == before.id))
    assert await rig.store.consent.for_call(line.call_id) == [before]
    assert before.record_sha256 == consent_digest(
        {k: v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v
         for k, v in before.model_dump().items()})


# ---- control after the start (found while writing these tests) ------------------------------------------

async def test_start_after_stop_records_again(rig: Rig) -> None:
    """``recording: stop`` then ``recording: start`` (or ``resume``): start() says True, so the caller's
    audio after it must be in the recording."""
    service = await rig.service(include_ivr=True)
    recording, line = await rig.call(service)
    await recording.consent(answer("granted"))
    assert await recording.start() is True
    await asyncio.sleep(0.6)
    await recording.stop()
    await asyncio.sleep(0.3)
    line.probe.start_audio(tone(LATER_HZ, 1.0))
    await asyncio.sleep(0.2)  # the phone now sends the second tone
    assert await recording.start() is True
    await asyncio.sleep(0.8)
    recording.ended("completed")
    await rig.wait_for("recording.stored", line.call_id)
    row = await stored_row(service, recording)
    left, _right = await stored_audio(service, row)
    count = len(left) // 160
    assert dominant(frames(left, 3, 25)) == CALLER_HZ
    assert dominant(frames(left, count - 30, count - 3)) == LATER_HZ, (
        f"after stop() and start() the recording did not continue ({count} frames in all)")


async def test_a_second_manual_pause_is_ended_by_one_resume(rig: Rig) -> None:
    """``pause`` is a switch, not a counter (only ``sensitive`` nests): pause, pause, resume records again."""
    service = await rig.service(include_ivr=True)
    recording, line = await rig.call(service)
    await recording.consent(answer("granted"))
    assert await recording.start() is True
    await asyncio.sleep(0.4)
    await recording.pause("agent asked")
    await asyncio.sleep(0.2)
    await recording.pause("agent asked again")
    await asyncio.sleep(0.2)
    await recording.resume("agent resumed")
    resumed_at = len(rig.of_type("recording.resumed", line.call_id))
    await asyncio.sleep(0.6)
    recording.ended("completed")
    await rig.wait_for("recording.stored", line.call_id)
    row = await stored_row(service, recording)
    left, _right = await stored_audio(service, row)
    count = len(left) // 160
    assert resumed_at == 1
    assert dominant(frames(left, count - 20, count - 3)) == CALLER_HZ, (
        "one resume() after two pause() calls left the recording paused to the end")


async def test_a_recording_that_captured_nothing_is_not_left_recording(rig: Rig) -> None:
    """The capture opened (row inserted as ``recording``) and the call ended before the first tick: no
    audio, so no seal; the row must not stay ``recording`` (live) forever."""
    service = await rig.service(include_ivr=True)
    recording, line = await rig.call(service)
    await recording.consent(answer("granted"))
    assert await recording.start() is True
    recording.ended("abandoned")  # no await in between: not one 20 ms tick ran
    await service.close()
    rig.services.remove(service)
    rows = await rig.store.recordings.for_call(line.call_id)
    stuck = [(r.id, r.status) for r in rows if r.status == "recording"]
    assert stuck == [], "no audio was ever written, yet the row claims a live recording"
    assert not rig.of_type("recording.stored", line.call_id)


async def test_a_spool_that_cannot_be_written_is_reported_and_the_service_goes_on(rig: Rig) -> None:
    """The recording's spool directory cannot be made (a file stands in its way, as a full or broken
    disk would refuse it): the call goes on, the failure is a ``recording.failed`` event at the end
    (stage ``write``, with the reason), the row does not claim a recording, and the next call records."""
    service = await rig.service(include_ivr=True)
    recording, line = await rig.call(service)
    (service.layout.spool / recording.recording_id).write_bytes(b"in the way")
    await recording.consent(answer("granted"))
    assert await recording.start() is True
    await line.play(1000.0, 1.5)
    recording.ended("completed")
    failed = await rig.wait_for("recording.failed", line.call_id)
    assert failed.data["stage"] == "write" and failed.data["error"], failed.data
    assert not rig.of_type("recording.stored", line.call_id)
    rows = await rig.store.recordings.for_call(line.call_id)
    assert [r.status for r in rows] == ["empty"]

    second, other = await rig.call(service)
    await second.consent(answer("granted"))
    assert await second.start() is True
    await other.play(1000.0, 1.2)
    second.ended("completed")
    await rig.wait_for("recording.stored", other.call_id)
