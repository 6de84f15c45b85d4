"""The recording service: records calls as their policy says, seals them, stores them, recovers them.

One :class:`RecordingService` per process. Each answered call gets a :class:`CallRecording`, which is the
call's ``RecordingControl`` (what the ``consent`` and ``recording`` flow nodes talk to). It decides, per
channel, what may be written (the consent gate), opens a :class:`~helpline.recording.capture.Capture`
fed by the caller session's tap, follows the queue's events (agent answered, hold, transfer) through the
event bus, and at the end of the call seals the recording (hash chain, signed manifest, ledger entry,
optional encryption) into storage. Sealing and file work run in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from helpline.events import DomainEvent, EventBus
from helpline.ivr.channel import ConsentAnswer, ConsentPolicy, RecordingUnavailable
from helpline.recording.assemble import assemble
from helpline.recording.capture import Capture
from helpline.recording.crypto import encrypt_file
from helpline.recording.keys import Kek, SigningKey, new_data_key
from helpline.recording.ledger import Ledger, read_ledger
from helpline.recording.manifest import build_manifest, consent_digest, iso_utc, sign_manifest
from helpline.recording.peaks import compute_peaks
from helpline.recording.policy import RecordingSettings, ResolvedPolicy, RetentionSettings, resolve_policy
from helpline.recording.setup import RecordingLayout
from helpline.recording.spool import SegmentWriter, SpooledRecording, read_spool, recover
from helpline.recording.storage import LocalStorage, RecordingStorage, recording_key
from helpline.store import Store
from helpline.store.recordings import RetentionRow
from helpline.voice import PromptCache, RtpSession
from helpline.voice.prompt_spec import PromptSpec

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 50
RETENTION_REFRESH_S = 30.0
CHANNEL_MAP = (
    {"channel": 0, "side": "left", "role": "caller", "party": None,
     "source": "audio received from the caller"},
    {"channel": 1, "side": "right", "role": "agent",
     "party": "agents and system prompts", "source": "audio sent to the caller"},
)
MEDIA_FORMAT = {"container": "wav", "encoding": "pcm_s16le", "rate": 8000, "channels": 2}
MARK_FIELDS = ("queue", "agent", "extension", "held", "target", "result")
QUEUE_MARKS = {
    "queue.connected": "agent",
    "queue.hold": "hold",
    "queue.transfer": "transfer",
    "queue.agent_lost": "agent_lost",
}


def _recorder() -> str:
    try:
        return f"helpline {version('helpline')}"
    except PackageNotFoundError:
        return "helpline"


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def evidence_doc(record: Mapping[str, Any]) -> dict[str, Any]:
    """A consent record in the one JSON form that is hashed, stored in ``consent.json`` and checked
    by ``verify``: times as ISO 8601 UTC with a ``Z``."""
    return {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in record.items()}


class RecordingService:
    """Owns the segment writer, the signing key, the ledger and storage; hands out per-call control."""

    def __init__(
        self, settings: RecordingSettings, retention: RetentionSettings, *, store: Store, bus: EventBus,
        layout: RecordingLayout, prompts: PromptCache, storage: RecordingStorage | None = None,
    ) -> None:
        """Opens the key files: blocking, so build it in a thread (``asyncio.to_thread``)."""
        self.settings = settings
        self.retention = retention
        self.store = store
        self.bus = bus
        self.layout = layout
        self.storage = storage or LocalStorage(layout.storage_root)
        self.prompts = prompts
        self.signing = SigningKey.load_or_create(layout.signing_key)
        self.kek = Kek.load_or_create(layout.kek_file) if settings.encrypt else None
        self.ledger = Ledger(layout.ledger, self.signing)
        self.writer = SegmentWriter()
        self._calls: dict[str, CallRecording] = {}
        self._sealing: set[asyncio.Task[Any]] = set()
        self._retention: dict[str, RetentionRow] = {}
        self._refresher: asyncio.Task[None] | None = None
        bus.subscribe(self._on_event)

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Seed retention policies, publish the public key, and finish what a crash left in the spool."""
        await asyncio.to_thread(self._prepare_dirs)
        policies = {name: p.model_dump() for name, p in self.retention.policies.items()}
        await self.store.retention.seed(policies, datetime.now(UTC))
        await self.reload_retention()
        await self.recover()
        self._refresher = asyncio.create_task(self._refresh_retention(), name="retention-refresh")

    def _prepare_dirs(self) -> None:
        self.layout.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.layout.public_key.parent.mkdir(parents=True, exist_ok=True)
        self.signing.export_public(self.layout.public_key)

    async def _refresh_retention(self) -> None:
        """Pick up retention policies an admin changed (through the API or another process)."""
        while True:
            await asyncio.sleep(RETENTION_REFRESH_S)
            try:
                await self.reload_retention()
            except Exception:
                log.exception("could not reload retention policies; keeping the ones loaded before")

    async def close(self) -> None:
        """Wait for recordings being sealed (calls ended before shutdown), then stop the writer."""
        if self._refresher is not None:
            self._refresher.cancel()
        if self._sealing:
            await asyncio.gather(*self._sealing, return_exceptions=True)
        await asyncio.to_thread(self.writer.close)

    # ---- per call ---------------------------------------------------------------------------------
    def for_call(self, *, call_id: str, caller: str, did: str, flow_id: str, session: RtpSession
                 ) -> CallRecording:
        policy = resolve_policy(self.settings, caller=caller, did=did, flow_id=flow_id)
        recording = CallRecording(self, call_id=call_id, caller=caller, did=did, flow_id=flow_id,
                                  session=session, policy=policy)
        self._calls[call_id] = recording
        return recording

    def _finished(self, recording: CallRecording, disposition: str) -> None:
        self._calls.pop(recording.call_id, None)
        self.background(recording.finish(disposition), f"seal {recording.call_id}")

    def background(self, work: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``work`` as a task the service waits for at shutdown; a failure is logged, not lost."""
        task = asyncio.get_running_loop().create_task(work, name=what)
        self._sealing.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._sealing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording task %r failed", task.get_name(), exc_info=task.exception())

    def retention_policy(self) -> RetentionRow:
        """The retention policy new recordings get (as last loaded from the store)."""
        name = self.settings.retention_policy
        row = self._retention.get(name)
        if row is None:
            raise RecordingUnavailable(f"retention policy {name!r} is not in the store")
        return row

    async def reload_retention(self) -> None:
        """Load retention policies from the store (at start, and after an admin changed one)."""
        self._retention = {row.name: row for row in await self.store.retention.list()}

    def _on_event(self, event: DomainEvent) -> None:
        if event.call_id is None or not event.type.startswith("queue."):
            return
        recording = self._calls.get(event.call_id)
        if recording is not None:
            recording.queue_event(event)

    def publish(self, type: str, call_id: str | None, data: dict[str, Any]) -> None:
        self.bus.publish(DomainEvent.now(type, call_id, data))

    # ---- sealing ----------------------------------------------------------------------------------
    async def seal(self, spooled: SpooledRecording, *, recovered: bool, disposition: str | None,
                   updates: Mapping[str, Any] | None = None) -> None:
        """Turn a spooled recording into a sealed, stored one and record it in the store.

        ``updates`` are what the live call learnt after the capture opened (agents, queue, consent);
        after a crash they are missing and the marks in the spool's event log stand for them."""
        meta = {**spooled.meta, **(updates or {})}
        recording_id = str(meta["recording_id"])
        call_id = str(meta["call_id"])
        consent = await self.store.consent.for_call(call_id)  # every decision, withdrawals included
        consent_docs = [evidence_doc(c.model_dump()) for c in consent]
        meta["consent"] = [{"id": c.id, "sha256": c.record_sha256, "outcome": c.outcome} for c in consent]
        sealed = await asyncio.to_thread(self._seal_files, spooled, meta, consent_docs, recovered)
        started = datetime.fromisoformat(str(meta["started_at"]))
        key, manifest_sha256 = await self._store_sealed(recording_id, started, sealed)
        fields = {
            "status": "recovered" if recovered else "stored",
            "ended_at": started + timedelta(seconds=sealed.duration_s),
            "duration_s": sealed.duration_s,
            "overlays": sealed.overlays,
            "storage_key": key,
            "encrypted": sealed.encrypted,
            "size_bytes": sealed.size_bytes,
            "manifest_sha256": manifest_sha256,
            "agents": meta.get("agents", []),
            "agent": meta.get("agent"),
            "queue": meta.get("queue"),
            "consent_ids": meta.get("consent", []),
            "consent_outcome": meta.get("consent_outcome"),
        }
        if disposition is not None:
            fields["disposition"] = disposition
        if await self.store.recordings.get(recording_id) is None:
            await self.store.recordings.insert(_row_from_meta(meta))
        await self.store.recordings.update(recording_id, **fields)
        await asyncio.to_thread(shutil.rmtree, spooled.path, True)
        self.publish("recording.recovered" if recovered else "recording.stored", call_id, {
            "recording_id": recording_id, "duration_s": round(sealed.duration_s, 2),
            "manifest_sha256": sealed.manifest_sha256, "encrypted": sealed.encrypted,
        })

    async def _store_sealed(self, recording_id: str, started: datetime, sealed: _Sealed) -> tuple[str, str]:
        """Put the sealed files into storage and the ledger. A crash between the two (seen at recovery as
        a stored copy with no ledger entry) is repaired by replacing that copy: it was never vouched for.
        A copy that is in the ledger already is kept as it is."""
        existing = await asyncio.to_thread(self._ledgered_manifest, recording_id)
        if existing is not None:
            log.warning("recording %s was sealed before the crash; keeping the stored copy", recording_id)
            return recording_key(recording_id, started), existing
        key = recording_key(recording_id, started)
        if await self.storage.exists(key):
            log.warning("recording %s was stored but not in the ledger; storing it again", recording_id)
            await self.storage.delete(key)
        key = await self.storage.put_dir(recording_id, started, sealed.files)
        await asyncio.to_thread(self.ledger.append_sealed, recording_id, sealed.manifest_sha256)
        return key, sealed.manifest_sha256

    def _ledgered_manifest(self, recording_id: str) -> str | None:
        entries, _problems = read_ledger(self.ledger.path, self.signing.public_key)
        found = None
        for entry in entries:
            if entry.get("recording_id") == recording_id:
                found = entry.get("manifest_sha256") if entry.get("kind") == "sealed" else None
        return found

    def _seal_files(self, spooled: SpooledRecording, meta: Mapping[str, Any],
                    consent_docs: Sequence[Mapping[str, Any]], recovered: bool) -> _Sealed:
        work = spooled.path / "sealing"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        wav = work / "audio.wav"
        assembled = assemble(spooled, wav)
        peaks = compute_peaks(wav)
        (work / "peaks.json").write_text(json.dumps(peaks, separators=(",", ":")))
        encryption: dict[str, Any] | None = None
        audio_name = "audio.wav"
        if self.kek is not None:
            dek = new_data_key()
            encrypted = encrypt_file(wav, work / "audio.wav.enc", dek)
            (work / "key.wrapped").write_bytes(self.kek.wrap(dek))
            encryption = encrypted.manifest_entry()
            wav.unlink()
            audio_name = "audio.wav.enc"
        consent_refs = [{"id": c["id"], "sha256": c["record_sha256"]} for c in consent_docs]
        manifest = build_manifest(
            recording_id=str(meta["recording_id"]), call_id=str(meta["call_id"]),
            created_at=datetime.now(UTC), media_format=MEDIA_FORMAT, channels=meta["channels"],
            segments=assembled.segments, audio_sha256=assembled.audio_sha256,
            duration_frames=assembled.frames, overlays=assembled.overlays, consent=consent_refs,
            recovered=recovered, recorder=_recorder(), encryption=encryption,
        )
        manifest_bytes, signature = sign_manifest(manifest, self.signing)
        (work / "manifest.json").write_bytes(manifest_bytes)
        (work / "manifest.sig").write_text(signature)
        metadata = {k: v for k, v in meta.items() if k != "consent"}
        metadata["overlays"] = assembled.overlays
        metadata["duration_s"] = assembled.frames / FRAMES_PER_SECOND
        (work / "metadata.json").write_text(json.dumps(metadata, indent=1, sort_keys=True, default=str))
        (work / "consent.json").write_text(json.dumps(list(consent_docs), indent=1, sort_keys=True))
        files = {p.name: p for p in work.iterdir()}
        return _Sealed(
            files=files, duration_s=assembled.frames / FRAMES_PER_SECOND, overlays=assembled.overlays,
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(), encrypted=encryption is not None,
            size_bytes=(work / audio_name).stat().st_size,
        )

    async def recover(self) -> int:
        """Seal every recording a crash left in the spool; returns how many were recovered."""
        spooled = await asyncio.to_thread(recover, self.layout.spool)
        count = 0
        for item in spooled:
            try:
                await self.seal(item, recovered=True, disposition=None)
                count += 1
            except Exception:
                log.exception("could not recover the spooled recording in %s", item.path)
                self.publish("recording.failed", str(item.meta.get("call_id")),
                             {"recording_id": item.meta.get("recording_id"), "stage": "recovery"})
        for row in await self.store.recordings.unfinished():
            if row.id in self._open_ids() or (self.layout.spool / row.id).exists():
                continue
            # opened, but the process died before its first segment reached the disk
            await self.store.recordings.update(row.id, status="empty", duration_s=0.0)
            log.warning("recording %s captured nothing before an unclean stop", row.id,
                        extra={"call_id": row.call_id})
        if count:
            log.info("recovered %d recordings left by an unclean stop", count)
        return count

    @property
    def capturing(self) -> int:
        """Calls whose recording is capturing right now."""
        return sum(1 for c in self._calls.values() if c.capturing)

    def _open_ids(self) -> set[str]:
        return {c.recording_id for c in self._calls.values()}


@dataclass(frozen=True, slots=True)
class _Sealed:
    files: Mapping[str, Path]
    duration_s: float
    overlays: list[dict[str, Any]]
    manifest_sha256: str
    encrypted: bool
    size_bytes: int


def _row_from_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The recordings row as first inserted: what the capture knew when it opened."""
    return {
        "id": meta["recording_id"], "call_id": meta["call_id"], "status": "recording",
        "caller": meta.get("caller"), "did": meta.get("did"), "queue": meta.get("queue"),
        "agent": meta.get("agent"), "agents": list(meta.get("agents", [])),
        "started_at": datetime.fromisoformat(str(meta["started_at"])), "ended_at": None,
        "duration_s": None, "channels": list(meta["channels"]), "media_format": dict(MEDIA_FORMAT),
        "overlays": [], "consent_outcome": meta.get("consent_outcome"),
        "consent_ids": list(meta.get("consent", [])), "policy": dict(meta["policy"]),
        "retention_policy": meta["retention"]["policy"],
        "delete_after": datetime.fromisoformat(meta["retention"]["delete_after"]),
        "floor_until": datetime.fromisoformat(meta["retention"]["floor_until"]),
        "legal_hold": None, "storage_key": None, "encrypted": False, "size_bytes": None,
        "manifest_sha256": None, "disposition": None, "deleted_at": None, "deletion": None,
    }


class CallRecording:
    """One call's recording control: the consent gate, the capture and its life cycle.

    Channel rules: the caller's channel is written only while the caller's consent is granted and not
    withdrawn. The agent channel is written when the caller granted, or declined under a policy whose
    ``decline_action`` is ``agent_only``. Before any grant nothing exists for the call, not even a spool
    directory.
    """

    def __init__(self, service: RecordingService, *, call_id: str, caller: str, did: str, flow_id: str,
                 session: RtpSession, policy: ResolvedPolicy) -> None:
        self._service = service
        self.call_id = call_id
        self.caller = caller
        self.did = did
        self.flow_id = flow_id
        self._session = session
        self._policy = policy
        self.recording_id = uuid.uuid4().hex
        self._granted = False
        self._declined = False
        self._withdrawn = False
        self._armed = False
        self._stopped = False
        self._capture: Capture | None = None
        self._sensitive = 0
        self._manual_pause = False
        self._consent: list[dict[str, str]] = []
        self._consent_outcome: str | None = None
        self._agents: list[dict[str, Any]] = []
        self._queue: str | None = None
        self._typed = ""
        self._ended = False
        self._row_insert: asyncio.Task[Any] | None = None

    # ---- RecordingControl -------------------------------------------------------------------------
    def policy(self) -> ConsentPolicy:
        return self._policy.consent_policy()

    async def consent(self, answer: ConsentAnswer) -> None:
        """Store the decision as evidence, then open or keep closed the gate."""
        await self._store_consent(answer.outcome, answer.method, answer.response, answer=answer)
        if answer.outcome == "granted" and self._policy.record:
            self._granted = True
        else:
            self._declined = True
        self._apply_gate()

    async def start(self) -> bool:
        if not self._policy.record or self._ended:
            return False
        if not (self._caller_allowed or self._agent_allowed):
            self._service.publish("recording.refused", self.call_id, {
                "reason": "no consent", "mode": self._policy.mode})
            return False
        self._armed = True
        was_stopped, self._stopped = self._stopped, False
        if self._capture is not None:
            if was_stopped:  # started again after a stop: the same recording goes on, marked
                self._session.tap = self._capture.frame
                self._capture.mark("started", {})
                self._service.publish("recording.started", self.call_id, {
                    "recording_id": self.recording_id, "again": True, "frame": self._capture.frames})
        elif self._policy.include_ivr or self._agents:
            self._open()
        return True

    async def stop(self) -> None:
        self._stopped = True
        self._armed = False
        if self._capture is not None:
            self._session.tap = None
            self._capture.mark("stopped", {})
            self._service.publish("recording.stopped", self.call_id, {"frame": self._capture.frames})

    async def pause(self, reason: str) -> None:
        if self._manual_pause:
            return  # one manual pause at a time: one resume ends it
        self._manual_pause = True
        if self._capture is not None:
            self._capture.pause("manual")
            self._service.publish("recording.paused", self.call_id,
                                  {"reason": "manual", "note": reason, "frame": self._capture.frames})

    async def resume(self, reason: str) -> None:
        if self._manual_pause and self._capture is not None:
            self._capture.resume("manual")
            self._service.publish("recording.resumed", self.call_id,
                                  {"reason": "manual", "note": reason, "frame": self._capture.frames})
        self._manual_pause = False
        if self._stopped and self._policy.record:
            await self.start()

    async def sensitive(self, on: bool) -> None:
        """Pause (fail closed) while the call is in a sensitive node; nesting counts."""
        try:
            if on:
                self._sensitive += 1
                if self._sensitive == 1 and self._capture is not None:
                    self._capture.pause("sensitive")
                    self._service.publish("recording.paused", self.call_id,
                                          {"reason": "sensitive", "frame": self._capture.frames})
            else:
                self._sensitive = max(0, self._sensitive - 1)
                if self._sensitive == 0 and self._capture is not None:
                    self._capture.resume("sensitive")
                    self._service.publish("recording.resumed", self.call_id,
                                          {"reason": "sensitive", "frame": self._capture.frames})
        except Exception as exc:
            log.exception("recording could not %s for a sensitive node", "pause" if on else "resume",
                          extra={"call_id": self.call_id})
            raise RecordingUnavailable(f"recording could not be paused: {exc}") from exc

    # ---- call signals -----------------------------------------------------------------------------
    def digit(self, digit: str) -> None:
        """Every digit of the call: blank it from the audio, and watch for the withdraw sequence."""
        if self._capture is not None:
            self._capture.dtmf()
        sequence = self._service.settings.withdraw_sequence
        if not sequence or not self._caller_allowed:
            return
        self._typed = (self._typed + digit)[-len(sequence):]
        if self._typed == sequence:
            self._typed = ""
            self._service.background(self.withdraw(), "consent withdrawal")

    async def withdraw(self) -> None:
        """The caller took consent back: their channel stops at once, and by policy the whole
        recording."""
        self._withdrawn = True
        self._apply_gate()
        if self._capture is not None:
            self._capture.mark("consent_withdrawn", {})
        self._service.publish("recording.withdrawn", self.call_id, {
            "frame": None if self._capture is None else self._capture.frames,
            "decline_action": self._policy.decline_action})
        await self._store_consent("withdrawn", "withdraw_key", None, answer=None)

    def queue_event(self, event: DomainEvent) -> None:
        kind = QUEUE_MARKS.get(event.type)
        if kind is None:
            return
        data = dict(event.data)
        if event.type == "queue.connected":
            self._queue = str(data.get("queue")) if data.get("queue") else self._queue
            agent = data.get("agent") or data.get("extension")
            self._agents.append({"agent": agent, "at": _iso(event.at),
                                 "frame": None if self._capture is None else self._capture.frames})
            if self._armed and self._capture is None and not self._stopped:
                self._open()
        if self._capture is not None:
            keep: dict[str, Any] = {k: data[k] for k in MARK_FIELDS if k in data}
            self._capture.mark(kind, keep)

    def ended(self, disposition: str) -> None:
        """The call is over: detach, and let the service seal what was recorded."""
        if self._ended:
            return
        self._ended = True
        if self._capture is not None:
            self._session.tap = None
        self._service._finished(self, disposition)

    async def finish(self, disposition: str) -> None:
        capture = self._capture
        if capture is None:
            return
        try:
            await capture.close()
            if capture.failed:  # e.g. a full disk: what was written is sealed, and the loss is reported
                log.error("the recording lost segments it could not write: %s", capture.error,
                          extra={"call_id": self.call_id})
                self._service.publish("recording.failed", self.call_id, {
                    "recording_id": self.recording_id, "stage": "write", "error": str(capture.error)})
            if self._row_insert is not None:
                await self._row_insert  # the row exists before sealing looks for it
            spooled = await asyncio.to_thread(_spooled, capture)
            if spooled is None:  # the call ended before a single frame was captured
                await self._service.store.recordings.update(
                    self.recording_id, status="empty", ended_at=datetime.now(UTC), duration_s=0.0,
                    disposition=disposition)
                return
            updates = {"agents": list(self._agents), "queue": self._queue,
                       "agent": self._agents[0]["agent"] if self._agents else None,
                       "consent_outcome": self._consent_outcome}
            await self._service.seal(spooled, recovered=False, disposition=disposition, updates=updates)
        except Exception:
            log.exception("sealing the recording failed; it stays in the spool for recovery",
                          extra={"call_id": self.call_id})
            self._service.publish("recording.failed", self.call_id,
                                  {"recording_id": self.recording_id, "stage": "seal"})

    @property
    def capturing(self) -> bool:
        """Whether frames are being captured (opened, not stopped, the call not over)."""
        return self._capture is not None and not self._stopped and not self._ended

    # ---- internals --------------------------------------------------------------------------------
    @property
    def _caller_allowed(self) -> bool:
        return self._granted and not self._withdrawn

    @property
    def _agent_allowed(self) -> bool:
        if self._withdrawn and self._policy.decline_action != "agent_only":
            return False
        return self._granted or (self._declined and self._policy.decline_action == "agent_only")

    def _apply_gate(self) -> None:
        if self._capture is not None:
            self._capture.allow(caller=self._caller_allowed, agent=self._agent_allowed)

    def _open(self) -> None:
        """Open the capture and attach it to the caller's session at once (no await before the tap:
        the first frames after an agent answers are recorded); the row is inserted in the background."""
        if self._capture is not None or self._ended:
            return
        service = self._service
        started = datetime.now(UTC)
        retention = service.retention_policy()
        meta = {
            "recording_id": self.recording_id, "call_id": self.call_id, "caller": self.caller,
            "did": self.did, "flow_id": self.flow_id, "started_at": started.isoformat(),
            "channels": [dict(c, party=self.caller) if c["role"] == "caller" else dict(c)
                         for c in CHANNEL_MAP],
            "policy": self._policy.as_dict(), "consent": list(self._consent),
            "consent_outcome": self._consent_outcome, "agents": list(self._agents),
            "agent": self._agents[0]["agent"] if self._agents else None, "queue": self._queue,
            "include_ivr": self._policy.include_ivr,
            "retention": {
                "policy": retention.name, "purpose": retention.purpose,
                "lawful_basis": retention.lawful_basis,
                "delete_after": (started + timedelta(days=retention.days)).isoformat(),
                "floor_until": (started + timedelta(days=retention.floor_days)).isoformat(),
            },
        }
        spool = service.layout.spool / self.recording_id
        capture = Capture(self.recording_id, spool, service.writer, meta=meta,
                          segment_frames=max(1, round(service.settings.segment_seconds * FRAMES_PER_SECOND)))
        capture.allow(caller=self._caller_allowed, agent=self._agent_allowed)
        self._capture = capture
        self._session.tap = capture.frame
        self._row_insert = service.background(service.store.recordings.insert(_row_from_meta(meta)),
                                              "recording row")
        service.publish("recording.started", self.call_id, {
            "recording_id": self.recording_id, "mode": self._policy.mode,
            "caller_channel": self._caller_allowed, "agent_channel": self._agent_allowed,
            "include_ivr": self._policy.include_ivr})
        for reason, active in (("sensitive", self._sensitive > 0), ("manual", self._manual_pause)):
            if active:  # opened inside a sensitive node or a manual pause: paused from its first frame
                capture.pause(reason)
                service.publish("recording.paused", self.call_id, {"reason": reason, "frame": 0})

    async def _store_consent(self, outcome: str, method: str, response: str | None, *,
                             answer: ConsentAnswer | None) -> None:
        service, policy = self._service, self._policy
        prompt_sha = None
        if answer is not None and answer.prompts:
            prompt_sha = await _prompt_digest(service.prompts, answer.prompts)
        now = datetime.now(UTC)
        record: dict[str, Any] = {
            "id": uuid.uuid4().hex, "call_id": self.call_id, "party": "caller", "outcome": outcome,
            "method": method, "response": response, "policy_id": policy.policy_id,
            "policy_version": policy.policy_version, "mode": policy.mode,
            "jurisdiction": policy.as_dict().get("inputs", {}),
            "prompt_id": None if answer is None else answer.prompt_id,
            "language": None if answer is None else answer.language,
            "prompt_sha256": prompt_sha,
            "prompt_started_at": None if answer is None else answer.prompt_started_at,
            "prompt_ended_at": None if answer is None else answer.prompt_ended_at,
            "responded_at": now if answer is None else answer.responded_at,
            "decided_at": now, "clock_source": "system",
        }
        record["record_sha256"] = consent_digest(evidence_doc(record))
        await service.store.consent.append(record)
        ref = {"id": record["id"], "sha256": record["record_sha256"], "outcome": outcome}
        self._consent.append(ref)
        if outcome != "withdrawn":
            self._consent_outcome = outcome
        if self._capture is not None:
            self._capture.mark("consent", {"outcome": outcome, "method": method, "id": record["id"]})
        service.publish("recording.consent", self.call_id, {
            "outcome": outcome, "method": method, "mode": policy.mode, "policy": policy.policy_id,
            "consent_id": record["id"]})


async def _prompt_digest(prompts: PromptCache, specs: Sequence[PromptSpec]) -> str:
    """SHA-256 over the exact audio of the notice the caller heard (8 kHz PCM16, in order)."""
    digest = hashlib.sha256()
    for spec in specs:
        audio = await prompts.get(spec)
        digest.update(audio.pcm)
    return digest.hexdigest()


def _spooled(capture: Capture) -> SpooledRecording | None:
    """The capture's spool as recovery would read it; None when nothing was ever written."""
    return read_spool(capture.spool) if (capture.spool / "meta.json").exists() else None
