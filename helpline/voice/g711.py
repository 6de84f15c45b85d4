"""G.711 μ-law (PCMU) and A-law (PCMA): the two codecs every SIP trunk speaks.

The conversions run inside ``audioop`` (C code, about a microsecond per 20 ms frame), which ships with
CPython up to 3.12 and comes from the ``audioop-lts`` package, under the same module name, from 3.13 on.
Everything else in ``voice`` goes through this module, so the import quirk lives in one place.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop as audioop  # re-exported: the one place that knows where audioop comes from

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160 samples, one G.711 byte each
FRAME_PCM_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH


@dataclass(frozen=True, slots=True)
class G711Codec:
    """One G.711 variant: its static payload type and its 16-bit linear PCM conversions."""

    name: str
    payload_type: int
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes], bytes]

    @property
    def silence_frame(self) -> bytes:
        """One encoded 20 ms frame of digital silence (0xFF for μ-law, 0xD5 for A-law)."""
        return self.encode(bytes(FRAME_PCM_BYTES))


def _ulaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, SAMPLE_WIDTH)


def _ulaw_decode(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, SAMPLE_WIDTH)


def _alaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2alaw(pcm, SAMPLE_WIDTH)


def _alaw_decode(data: bytes) -> bytes:
    return audioop.alaw2lin(data, SAMPLE_WIDTH)


PCMU = G711Codec("PCMU", 0, _ulaw_encode, _ulaw_decode)
PCMA = G711Codec("PCMA", 8, _alaw_encode, _alaw_decode)

CODECS: dict[str, G711Codec] = {PCMU.name: PCMU, PCMA.name: PCMA}


def codec_by_name(name: str) -> G711Codec:
    """The codec called ``name`` (case-insensitive); ``KeyError`` naming it when unsupported."""
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise KeyError(f"unsupported codec {name!r}; supported: {', '.join(CODECS)}") from None
