"""An RTP endpoint for tests and benchmarks that plays the *caller's* media side.

Helpline's own media engine is what is under test, so this probe is deliberately independent of it:
it sends G.711 audio and RFC 4733 events paced on a monotonic clock, records every packet it receives
with its arrival time, and offers the analyses e2e tests need (inter-arrival statistics, loss,
which tone is playing).

Typical use::

    probe = await RtpProbe.open()
    offer = make_sdp_offer(probe.local_port)
    ...                                   # SIP setup, answer says where Helpline listens
    probe.set_remote(answer.host, answer.port, codec="PCMU")
    probe.start_audio()                   # continuous silence (keeps media timeouts at bay)
    await probe.send_dtmf("11")           # two distinct events, not one retransmitted
    await probe.wait_for_tone(440.0, timeout=5)
    probe.close()
"""

from __future__ import annotations

import asyncio
import audioop
import contextlib
import logging
import math
import random
import re
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from helpline.voice.tones import detect_tones, dominant_tone

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160 samples = 160 bytes of G.711
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}
CODEC_BY_PT = {pt: name for name, pt in PAYLOAD_TYPES.items()}
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
DIGIT_BY_EVENT = {code: digit for digit, code in DTMF_EVENTS.items()}
_RTP_HEADER = struct.Struct("!BBHII")

# -- G.711 ---------------------------------------------------------------------------------------


def encode_g711(pcm16: bytes, codec: str) -> bytes:
    """PCM16 (little endian, mono) -> G.711 bytes for ``codec`` ("PCMU" or "PCMA")."""
    if codec == "PCMU":
        return audioop.lin2ulaw(pcm16, 2)
    if codec == "PCMA":
        return audioop.lin2alaw(pcm16, 2)
    raise ValueError(f"unsupported codec {codec!r} (PCMU or PCMA)")


def decode_g711(payload: bytes, codec: str) -> bytes:
    """G.711 bytes -> PCM16 (little endian, mono)."""
    if codec == "PCMU":
        return audioop.ulaw2lin(payload, 2)
    if codec == "PCMA":
        return audioop.alaw2lin(payload, 2)
    raise ValueError(f"unsupported codec {codec!r} (PCMU or PCMA)")


def sine_pcm16(
    freqs: Sequence[float], seconds: float, amplitude: float = 0.3, phase_samples: int = 0
) -> bytes:
    """A sum of sines at ``freqs`` as PCM16 at 8 kHz; ``amplitude`` is the total peak (0..1)."""
    count = round(seconds * SAMPLE_RATE)
    peak = 32767 * amplitude / max(1, len(freqs))
    samples = [
        round(sum(peak * math.sin(2 * math.pi * f * (n + phase_samples) / SAMPLE_RATE) for f in freqs))
        for n in range(count)
    ]
    return struct.pack(f"<{count}h", *samples)


# -- tone analysis ----------------------------------------------------------------------------------
#
# helpline.voice.tones is the production detector; the probe measures with it so that tests and the
# product agree on what "a 440 Hz tone" means.


def tone_levels(pcm16: bytes, candidates: Iterable[float], rate: int = SAMPLE_RATE) -> dict[float, float]:
    """Power of each candidate frequency in ``pcm16`` (scale as defined by helpline.voice.tones)."""
    return detect_tones(pcm16, rate, list(candidates))


def strongest_tone(
    pcm16: bytes, candidates: Iterable[float], rate: int = SAMPLE_RATE, min_share: float = 0.5
) -> float | None:
    """The candidate holding at least ``min_share`` of the signal's power, or None (silence, noise)."""
    return dominant_tone(pcm16, rate, list(candidates), min_share)


# -- SDP (test side: a plain string builder and a tolerant reader) -------------------------------------


def make_sdp_offer(
    port: int,
    host: str = "127.0.0.1",
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    dtmf_pt: int | None = 101,
    direction: str = "sendrecv",
    session_version: int = 1,
) -> str:
    """An SDP offer for a probe: G.711 in ``codecs`` order plus telephone-event/8000 on ``dtmf_pt``."""
    pts = [str(PAYLOAD_TYPES[c]) for c in codecs]
    rtpmaps = [f"a=rtpmap:{PAYLOAD_TYPES[c]} {c}/8000" for c in codecs]
    if dtmf_pt is not None:
        pts.append(str(dtmf_pt))
        rtpmaps += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-15"]
    lines = [
        "v=0",
        f"o=probe 4242 {session_version} IN IP4 {host}",
        "s=rtp-probe",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(pts)}",
        *rtpmaps,
        "a=ptime:20",
        f"a={direction}",
    ]
    return "\r\n".join(lines) + "\r\n"


@dataclass(frozen=True, slots=True)
class SdpMedia:
    """What a test needs from an SDP answer's first audio m-line."""

    host: str
    port: int
    payload_types: tuple[int, ...]
    rtpmap: dict[int, str]
    direction: str

    @property
    def codec(self) -> str | None:
        """The first G.711 codec in the answer (the one both sides will use)."""
        for pt in self.payload_types:
            name = self.rtpmap.get(pt, CODEC_BY_PT.get(pt, "")).split("/")[0].upper()
            if name in PAYLOAD_TYPES:
                return name
        return None

    @property
    def dtmf_pt(self) -> int | None:
        for pt in self.payload_types:
            if self.rtpmap.get(pt, "").lower().startswith("telephone-event"):
                return pt
        return None


def parse_sdp(sdp: str) -> SdpMedia:
    """Read the first audio m-line of ``sdp``; raises ValueError naming what is missing."""
    session_host: str | None = None
    media_host: str | None = None
    port: int | None = None
    pts: tuple[int, ...] = ()
    rtpmap: dict[int, str] = {}
    direction = "sendrecv"
    in_audio = False
    seen_audio = False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if seen_audio:
                break
            parts = line[2:].split()
            in_audio = parts[0] == "audio"
            if in_audio:
                seen_audio = True
                port = int(parts[1])
                pts = tuple(int(p) for p in parts[3:] if p.isdigit())
        elif line.startswith("c="):
            addr = line.split()[-1]
            if in_audio:
                media_host = addr
            elif not seen_audio:
                session_host = addr
        elif in_audio and (m := re.match(r"a=rtpmap:(\d+)\s+(\S+)", line)):
            rtpmap[int(m.group(1))] = m.group(2)
        elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive") and (
            in_audio or not seen_audio
        ):
            direction = line[2:]
    host = media_host or session_host
    if port is None:
        raise ValueError("SDP has no audio m-line")
    if host is None:
        raise ValueError("SDP has no c= line for the audio stream")
    return SdpMedia(host=host, port=port, payload_types=pts, rtpmap=rtpmap, direction=direction)


# -- received packets and their statistics -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpPacket:
    arrival: float  # time.monotonic() at reception
    source: tuple[str, int]
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes, arrival: float, source: tuple[str, int]) -> RtpPacket | None:
    """Parse an RTP packet (version 2, CSRCs and extension skipped); None when it is not one."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    first, second, seq, ts, ssrc = _RTP_HEADER.unpack_from(data)
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20 and end > offset:
        end -= data[-1]
    if end < offset:
        return None
    return RtpPacket(arrival, source, second & 0x7F, bool(second & 0x80), seq, ts, ssrc, data[offset:end])


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Receiver-side quality of one RTP stream.

    ``late`` counts packets whose transit time exceeds the stream's best transit by more than the
    jitter budget: a receiver with that much jitter buffer would have had to drop them.
    """

    received: int
    expected: int
    lost: int
    late: int
    duplicates: int
    mean_interval_ms: float
    p95_interval_dev_ms: float
    max_interval_dev_ms: float
    jitter_ms: float  # RFC 3550 interarrival jitter estimate

    @property
    def loss_ratio(self) -> float:
        return self.lost / self.expected if self.expected else 0.0

    @property
    def late_or_lost_ratio(self) -> float:
        return (self.lost + self.late) / self.expected if self.expected else 0.0


class ArrivalStats:
    """Streaming accumulator behind :class:`StreamStats` (cheap enough for thousands of streams)."""

    __slots__ = (
        "_base_seq",
        "_best_transit",
        "_dups",
        "_jitter",
        "_last_arrival",
        "_last_transit",
        "_max_ext",
        "_seen",
        "_transits",
        "intervals",
        "jitter_budget",
        "received",
    )

    def __init__(self, jitter_budget: float = 0.040) -> None:
        self.jitter_budget = jitter_budget
        self.received = 0
        self.intervals: list[float] = []
        self._transits: list[float] = []
        self._seen: set[int] = set()
        self._dups = 0
        self._base_seq: int | None = None
        self._max_ext = 0
        self._last_arrival: float | None = None
        self._last_transit: float | None = None
        self._best_transit = math.inf
        self._jitter = 0.0

    def add(self, seq: int, timestamp: int, arrival: float) -> None:
        if self._base_seq is None:
            self._base_seq = seq
        # Extend the 16-bit sequence number around the highest seen so far.
        ext = self._max_ext + ((seq - (self._base_seq + self._max_ext)) + 0x8000) % 0x10000 - 0x8000
        if ext in self._seen:
            self._dups += 1
            return
        self._seen.add(ext)
        self._max_ext = max(self._max_ext, ext)
        self.received += 1
        if self._last_arrival is not None:
            self.intervals.append(arrival - self._last_arrival)
        self._last_arrival = arrival
        transit = arrival - timestamp / SAMPLE_RATE
        if self._last_transit is not None:
            # Timestamps wrap after 2**32 samples (6 days at 8 kHz): irrelevant for tests.
            self._jitter += (abs(transit - self._last_transit) - self._jitter) / 16
        self._last_transit = transit
        self._transits.append(transit)
        self._best_transit = min(self._best_transit, transit)

    def summary(self) -> StreamStats:
        expected = self._max_ext + 1 if self._base_seq is not None else 0
        devs = sorted(abs(i - FRAME_MS / 1000) * 1000 for i in self.intervals)
        late = sum(1 for t in self._transits if t - self._best_transit > self.jitter_budget)
        return StreamStats(
            received=self.received,
            expected=expected,
            lost=max(0, expected - self.received),
            late=late,
            duplicates=self._dups,
            mean_interval_ms=1000 * sum(self.intervals) / len(self.intervals) if self.intervals else 0.0,
            p95_interval_dev_ms=devs[min(len(devs) - 1, int(0.95 * len(devs)))] if devs else 0.0,
            max_interval_dev_ms=devs[-1] if devs else 0.0,
            jitter_ms=self._jitter * 1000,
        )


# -- the probe --------------------------------------------------------------------------------------


class _ProbeProtocol(asyncio.DatagramProtocol):
    owner: RtpProbe | None = None  # set right after the endpoint exists

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.owner is not None:
            self.owner._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while the far end is not listening yet (or any more) is normal.
        logger.debug("rtp probe: socket error %s", exc)


@dataclass(slots=True)
class _SendState:
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    timestamp: int = field(default_factory=lambda: random.getrandbits(32))


class RtpProbe:
    """One UDP port on 127.0.0.1 speaking RTP like a caller's phone."""

    def __init__(self, transport: asyncio.DatagramTransport, local_port: int) -> None:
        self._transport = transport
        self.local_port = local_port
        self.remote: tuple[str, int] | None = None
        self.codec = "PCMU"
        self.dtmf_pt = 101
        self.received: list[RtpPacket] = []
        self.sent_packets = 0
        self._state = _SendState()
        self._send_lock = asyncio.Lock()
        self._audio_task: asyncio.Task[None] | None = None
        self._audio_source: bytes = b""
        self._arrival = asyncio.Event()
        self._epoch = time.monotonic()
        self._next_send: float | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0) -> RtpProbe:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_ProbeProtocol, local_addr=(host, port))
        probe = cls(transport, transport.get_extra_info("sockname")[1])
        protocol.owner = probe
        return probe

    # -- configuration ------------------------------------------------------------------------------

    def set_remote(self, host: str, port: int, codec: str | None = None, dtmf_pt: int | None = None) -> None:
        """Where to send (normally taken from the SDP answer) and with what."""
        self.remote = (host, port)
        if codec is not None:
            if codec not in PAYLOAD_TYPES:
                raise ValueError(f"unsupported codec {codec!r}")
            self.codec = codec
        if dtmf_pt is not None:
            self.dtmf_pt = dtmf_pt

    def use_answer(self, answer: SdpMedia) -> None:
        self.set_remote(answer.host, answer.port, answer.codec or self.codec, answer.dtmf_pt or self.dtmf_pt)

    # -- sending ------------------------------------------------------------------------------------

    def _send(
        self, payload_type: int, payload: bytes, marker: bool = False, timestamp: int | None = None
    ) -> None:
        if self.remote is None:
            raise RuntimeError("RtpProbe.set_remote() first: no destination for RTP")
        st = self._state
        header = _RTP_HEADER.pack(
            0x80,
            (0x80 if marker else 0) | payload_type,
            st.seq,
            st.timestamp if timestamp is None else timestamp,
            st.ssrc,
        )
        st.seq = (st.seq + 1) & 0xFFFF
        self._transport.sendto(header + payload, self.remote)
        self.sent_packets += 1

    async def _paced(self, frames: Iterable[bytes]) -> None:
        """Send one G.711 frame per 20 ms on one monotonic schedule shared by every sender.

        The schedule survives between calls (background stream chunks, tones, DTMF gaps), so the
        stream keeps 20 ms spacing across them; after an idle spell it restarts from now.
        """
        for frame in frames:
            now = time.monotonic()
            if self._next_send is None or now - self._next_send > 0.1:
                self._next_send = now
            await asyncio.sleep(max(0.0, self._next_send - now))
            self._send(PAYLOAD_TYPES[self.codec], frame)
            self._state.timestamp = (self._state.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
            self._next_send += FRAME_MS / 1000

    def _frames(self, pcm16: bytes) -> list[bytes]:
        g711 = encode_g711(pcm16, self.codec)
        pad = (-len(g711)) % FRAME_SAMPLES
        g711 += encode_g711(b"\x00\x00" * pad, self.codec)
        return [g711[i : i + FRAME_SAMPLES] for i in range(0, len(g711), FRAME_SAMPLES)]

    async def send_pcm(self, pcm16: bytes) -> None:
        """Send PCM16/8 kHz audio as paced 20 ms G.711 frames (pauses the background stream)."""
        async with self._send_lock:
            await self._paced(self._frames(pcm16))

    async def send_tone(self, freqs: float | Sequence[float], seconds: float, amplitude: float = 0.3) -> None:
        freq_list = [freqs] if isinstance(freqs, (int, float)) else list(freqs)
        await self.send_pcm(sine_pcm16(freq_list, seconds, amplitude))

    async def send_silence(self, seconds: float) -> None:
        await self.send_pcm(b"\x00\x00" * round(seconds * SAMPLE_RATE))

    def start_audio(self, pcm16: bytes | None = None) -> None:
        """Stream ``pcm16`` in a loop (silence when None) in the background until stop_audio().

        DTMF and send_pcm() take the stream over while they run, like a phone muting its
        microphone during a key press.
        """
        self._audio_source = pcm16 if pcm16 else b"\x00\x00" * FRAME_SAMPLES
        if self._audio_task is None or self._audio_task.done():
            self._audio_task = asyncio.get_running_loop().create_task(self._audio_loop())

    async def stop_audio(self) -> None:
        task, self._audio_task = self._audio_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _audio_loop(self) -> None:
        while True:
            frames = self._frames(self._audio_source)
            # Short chunks release the lock often so DTMF can cut in within ~100 ms.
            for i in range(0, len(frames), 5):
                async with self._send_lock:
                    await self._paced(frames[i : i + 5])

    async def send_dtmf(
        self,
        digits: str,
        duration_ms: int = 100,
        gap_ms: int = 100,
        volume: int = 10,
        end_repeats: int = 3,
    ) -> None:
        """Send RFC 4733 events: marker on the first packet, 20 ms updates, ``end_repeats`` end packets.

        Each event starts at a new timestamp (the clock keeps running through the gap), so "11"
        is two key presses, not a retransmission of one.
        """
        for i, digit in enumerate(digits):
            if digit.upper() not in DTMF_EVENTS:
                raise ValueError(f"not a DTMF digit: {digit!r}")
            event = DTMF_EVENTS[digit.upper()]
            async with self._send_lock:
                st = self._state
                event_ts = st.timestamp
                steps = max(1, duration_ms // FRAME_MS)
                start = time.monotonic()
                for k in range(steps):
                    delay = start + k * FRAME_MS / 1000 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    duration = min((k + 1) * FRAME_SAMPLES, 0xFFFF)
                    end = k == steps - 1
                    payload = struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration)
                    repeats = end_repeats if end else 1
                    for _ in range(repeats):
                        self._send(self.dtmf_pt, payload, marker=(k == 0), timestamp=event_ts)
                st.timestamp = (event_ts + steps * FRAME_SAMPLES) & 0xFFFFFFFF
            if i < len(digits) - 1 or gap_ms:
                await self.send_silence(gap_ms / 1000)

    # -- receiving ----------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        packet = parse_rtp(data, time.monotonic(), addr)
        if packet is None:
            logger.warning(
                "rtp probe %s: non-RTP datagram of %d bytes from %s", self.local_port, len(data), addr
            )
            return
        self.received.append(packet)
        self._arrival.set()

    def now(self) -> float:
        """Clock used for arrival times (pass its values as since/until)."""
        return time.monotonic()

    def packets(
        self, payload_type: int | None = None, since: float | None = None, until: float | None = None
    ) -> list[RtpPacket]:
        return [
            p
            for p in self.received
            if (payload_type is None or p.payload_type == payload_type)
            and (since is None or p.arrival >= since)
            and (until is None or p.arrival < until)
        ]

    def audio_packets(self, since: float | None = None, until: float | None = None) -> list[RtpPacket]:
        return [p for p in self.packets(since=since, until=until) if p.payload_type in CODEC_BY_PT]

    async def wait_for_packets(self, count: int, timeout: float, payload_type: int | None = None) -> None:
        """Wait until ``count`` packets (of ``payload_type``) have arrived; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while len(self.packets(payload_type)) < count:
                self._arrival.clear()
                await self._arrival.wait()

    def pcm(self, since: float | None = None, until: float | None = None) -> bytes:
        """Received G.711 audio decoded to PCM16, in sequence order."""
        pkts = sorted(self.audio_packets(since, until), key=lambda p: (p.ssrc, p.seq))
        return b"".join(decode_g711(p.payload, CODEC_BY_PT[p.payload_type]) for p in pkts)

    def stats(
        self, since: float | None = None, until: float | None = None, jitter_budget: float = 0.040
    ) -> StreamStats:
        """Inter-arrival, loss and lateness of the received audio (one SSRC assumed per window)."""
        acc = ArrivalStats(jitter_budget)
        for p in self.audio_packets(since, until):
            acc.add(p.seq, p.timestamp, p.arrival)
        return acc.summary()

    def received_dtmf(self) -> str:
        """Digits received as RFC 4733 events (one per distinct event timestamp)."""
        digits: list[str] = []
        seen: set[tuple[int, int]] = set()
        for p in self.packets(self.dtmf_pt):
            if len(p.payload) >= 4 and (p.ssrc, p.timestamp) not in seen:
                seen.add((p.ssrc, p.timestamp))
                digits.append(DIGIT_BY_EVENT.get(p.payload[0], "?"))
        return "".join(digits)

    def tone_levels(
        self, candidates: Iterable[float], since: float | None = None, until: float | None = None
    ) -> dict[float, float]:
        return tone_levels(self.pcm(since, until), candidates)

    def dominant_tone(
        self, candidates: Iterable[float], since: float | None = None, until: float | None = None
    ) -> float | None:
        return strongest_tone(self.pcm(since, until), candidates)

    async def wait_for_tone(
        self,
        freq: float,
        timeout: float,
        candidates: Iterable[float] = (350.0, 440.0, 480.0, 620.0, 1000.0, 1400.0),
        window: float = 0.2,
    ) -> None:
        """Wait until the last ``window`` seconds of received audio are dominated by ``freq``."""
        others = sorted({*candidates, freq})
        async with asyncio.timeout(timeout):
            while True:
                now = time.monotonic()
                if self.dominant_tone(others, since=now - window) == freq:
                    return
                await asyncio.sleep(window / 4)

    def close(self) -> None:
        if self._audio_task is not None:
            self._audio_task.cancel()
            self._audio_task = None
        self._transport.close()

    async def __aenter__(self) -> RtpProbe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_audio()
        self.close()
