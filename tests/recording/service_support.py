"""The recording service's test rig: a migrated SQLite store, a real event bus, a real media engine on
127.0.0.1 with RTP sessions fed by a UDP peer (an ``RtpProbe`` streaming the caller's tone), and
``RecordingService`` instances on one data directory, so a second service can recover what a first left.

A module of its own (not conftest) so the tests import it by a unique name.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from helpline.events import DomainEvent, EventBus
from helpline.ivr.channel import ConsentAnswer, ConsentMethod, ConsentOutcome
from helpline.recording.audio import channels
from helpline.recording.policy import RecordingSettings, RetentionSettings
from helpline.recording.service import CallRecording, RecordingService
from helpline.recording.setup import RecordingLayout
from helpline.store import Store
from helpline.store.recordings import RecordingRow
from helpline.voice import MediaEngine, PromptAudio, PromptCache, PromptSpec, RtpSession, negotiate
from helpline.voice.tones import dominant_tone
from tests.support.rtp_probe import RtpProbe, make_sdp_offer, sine_pcm16

HOST = "127.0.0.1"
RATE = 8000
FRAME_SAMPLES = 160  # one 20 ms frame of one channel
CALLER_HZ = 440.0  # what the caller's phone sends
PROMPT_HZ = 1000.0  # what we play to the caller (IVR prompt, stands in for the agent too)
LATER_HZ = 600.0  # a second tone, to tell "before" from "after" on one channel
TONES = [CALLER_HZ, PROMPT_HZ, LATER_HZ]  # none of them is a DTMF frequency: nothing is scrubbed
CALLER = "+12125550123"
DID = "+18005550100"
FLOW = "main"


def tone(freq: float, seconds: float) -> bytes:
    return sine_pcm16([freq], seconds, amplitude=0.3)


def dominant(samples: NDArray[np.int16]) -> float | None:
    """The tone holding at least 80 % of the power of ``samples`` (None for silence or a mix)."""
    return dominant_tone(samples.astype("<i2").tobytes(), RATE, TONES, 0.8)


def frames(samples: NDArray[np.int16], start: int, end: int) -> NDArray[np.int16]:
    """Frames ``[start, end)`` of one channel."""
    return samples[start * FRAME_SAMPLES:end * FRAME_SAMPLES]


def answer(outcome: ConsentOutcome, *, method: ConsentMethod = "dtmf", response: str | None = "1",
           prompts: tuple[PromptSpec, ...] = ()) -> ConsentAnswer:
    """A consent decision as the ``consent`` node hands it over."""
    now = datetime.now(UTC)
    return ConsentAnswer(
        outcome=outcome, method=method, mode="consent", response=response, prompt_id="consent",
        language="en", prompts=prompts, prompt_started_at=now if prompts else None,
        prompt_ended_at=now if prompts else None, responded_at=now, flow_id=FLOW, node_id="ask",
    )


@dataclass
class Line:
    """One answered call's media: our RTP session and the caller's phone (a UDP peer) sending a tone."""

    call_id: str
    session: RtpSession
    probe: RtpProbe

    async def play(self, freq: float, seconds: float) -> None:
        """Play a prompt to the caller and wait until it has gone out."""
        await self.session.play(PromptAudio(tone(freq, seconds)), barge_in=False)


@dataclass
class Rig:
    root: Path
    store: Store
    bus: EventBus
    engine: MediaEngine
    prompts: PromptCache
    events: list[DomainEvent] = field(default_factory=list)
    services: list[RecordingService] = field(default_factory=list)
    probes: list[RtpProbe] = field(default_factory=list)
    _calls: int = 0

    def layout(self, settings: RecordingSettings) -> RecordingLayout:
        return RecordingLayout.of(self.root / "data", settings)

    async def service(self, retention: RetentionSettings | None = None, **settings: Any) -> RecordingService:
        """A started service on the rig's data directory (the key files are opened in a thread)."""
        chosen = RecordingSettings(**{"segment_seconds": 0.5, **settings})
        service = await asyncio.to_thread(
            RecordingService, chosen, retention or RetentionSettings(), store=self.store, bus=self.bus,
            layout=self.layout(chosen), prompts=self.prompts)
        self.services.append(service)
        await service.start()
        return service

    async def line(self, caller_hz: float = CALLER_HZ) -> Line:
        """An answered call's RTP session with the caller's phone streaming ``caller_hz`` at it."""
        self._calls += 1
        call_id = f"call{self._calls:04d}{datetime.now(UTC):%H%M%S%f}"
        probe = await RtpProbe.open(HOST)
        self.probes.append(probe)
        session = await self.engine.open_session(call_id)
        session.start(negotiate(make_sdp_offer(probe.local_port, codecs=("PCMU",)).encode(), HOST,
                                session.local_port))
        probe.set_remote(HOST, session.local_port, "PCMU", 101)
        probe.start_audio(tone(caller_hz, 1.0))
        return Line(call_id, session, probe)

    async def call(self, service: RecordingService, caller_hz: float = CALLER_HZ
                   ) -> tuple[CallRecording, Line]:
        line = await self.line(caller_hz)
        recording = service.for_call(call_id=line.call_id, caller=CALLER, did=DID, flow_id=FLOW,
                                     session=line.session)
        return recording, line

    def of_type(self, type_: str, call_id: str) -> list[DomainEvent]:
        return [e for e in self.events if e.type == type_ and e.call_id == call_id]

    async def wait_for(self, type_: str, call_id: str, timeout: float = 15.0) -> DomainEvent:
        """The first ``type_`` event for the call; fails naming what did arrive."""
        try:
            await until(lambda: self.of_type(type_, call_id), timeout)
        except TimeoutError:
            seen = [e.type for e in self.events if e.call_id == call_id]
            raise AssertionError(f"no {type_} for {call_id} within {timeout} s; saw {seen}") from None
        return self.of_type(type_, call_id)[0]

    async def close(self) -> None:
        for service in self.services:
            await service.close()
        for probe in self.probes:
            await probe.stop_audio()
            probe.close()
        await self.engine.close()


async def until(condition: Callable[[], object], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - events in a list, nothing to wait on
            await asyncio.sleep(0.02)


async def stored_row(service: RecordingService, recording: CallRecording) -> RecordingRow:
    row = await service.store.recordings.get(recording.recording_id)
    assert row is not None, f"no row for recording {recording.recording_id}"
    return row


async def stored_dir(service: RecordingService, row: RecordingRow) -> Path:
    assert row.storage_key is not None, f"recording {row.id} has no storage key (status {row.status})"
    return (await service.storage.open(row.storage_key, "manifest.json")).parent


def _read_wav(path: Path) -> tuple[int, int, bytes]:
    with wave.open(str(path), "rb") as reader:
        return reader.getnchannels(), reader.getframerate(), reader.readframes(reader.getnframes())


async def stored_audio(service: RecordingService, row: RecordingRow
                       ) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
    """The stored WAV's left (caller) and right (what the caller heard) channels."""
    assert row.storage_key is not None
    path = await service.storage.open(row.storage_key, "audio.wav")
    count, rate, data = await asyncio.to_thread(_read_wav, path)
    assert (count, rate) == (2, RATE)
    left, right = channels(data)
    return np.frombuffer(left, "<i2"), np.frombuffer(right, "<i2")
