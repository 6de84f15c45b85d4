"""Fuzz target: the pure functions of the RTP receive path.

``RtpSession.datagram_received`` runs inside the event loop's socket callback, where nothing catches:
``parse_rtp_packet`` must answer ``None`` for anything that is not RTP, ``DtmfReceiver.feed`` must
ignore what is not a keypad event, and the G.711 decoders take any payload. The input is used three
ways:

- as one datagram for ``parse_rtp_packet`` (the payload must be a piece of the packet after the
  12-byte header, never reach outside it);
- as a sequence of 5-byte telephone-event records (1 byte RTP timestamp, so timestamps repeat and
  the end-packet de-duplication is exercised, then a 4-byte RFC 4733 block) for ``DtmfReceiver``:
  every digit reported is a keypad digit with a duration the 16-bit field can express, and no more
  digits than packets;
- as a G.711 payload for both decoders: two bytes of PCM per byte, and decoding is idempotent through
  a re-encode.
"""

from __future__ import annotations

from helpline.voice.dtmf import EVENT_DIGITS, DtmfReceiver, decode_event
from helpline.voice.g711 import CODECS, SAMPLE_RATE
from helpline.voice.rtp import RTP_HEADER, parse_rtp_packet
from tests.fuzz.harness import Finding, fuzz

TARGET = "rtp_packet"
MAX_LEN = 2048
_RECORD = 5
_MAX_DURATION_MS = 0xFFFF * 1000 // SAMPLE_RATE


def _check_packet(data: bytes) -> None:
    packet = parse_rtp_packet(data)
    if packet is None:
        return
    if len(packet.payload) > len(data) - RTP_HEADER.size or packet.payload not in data[RTP_HEADER.size:]:
        raise Finding(f"payload of {len(packet.payload)} bytes is not inside the packet")
    if not (0 <= packet.payload_type < 128 and 0 <= packet.sequence <= 0xFFFF):
        raise Finding(f"header fields out of range: {packet}")
    decode_event(packet.payload)


def _check_dtmf(data: bytes) -> None:
    digits: list[tuple[str, int]] = []
    receiver = DtmfReceiver(lambda digit, duration_ms: digits.append((digit, duration_ms)))
    packets = 0
    for start in range(0, len(data) - _RECORD + 1, _RECORD):
        receiver.feed(data[start], data[start + 1:start + _RECORD])
        packets += 1
    if len(digits) > packets:
        raise Finding(f"{len(digits)} digits from {packets} packets")
    for digit, duration_ms in digits:
        if digit not in EVENT_DIGITS or not 0 <= duration_ms <= _MAX_DURATION_MS:
            raise Finding(f"reported digit {digit!r} lasting {duration_ms} ms")


def _check_g711(payload: bytes) -> None:
    for codec in CODECS.values():
        pcm = codec.decode(payload)
        if len(pcm) != 2 * len(payload) or codec.decode(codec.encode(pcm)) != pcm:
            raise Finding(f"{codec.name} decode of {len(payload)} bytes is not stable")


def check(data: bytes) -> None:
    """``data`` as an RTP packet, as a telephone-event stream and as a G.711 payload."""
    _check_packet(data)
    _check_dtmf(data)
    _check_g711(data)


if __name__ == "__main__":
    fuzz(TARGET, check, max_len=MAX_LEN)
