"""WAV files of any common layout, turned into what the media engine plays: 8 kHz mono 16-bit PCM.

The standard ``wave`` module of Python 3.11 reads integer PCM only, and refuses float samples and the
WAVE_FORMAT_EXTENSIBLE header most editors write for 24-bit or multichannel files, so the RIFF chunks
are walked here and the sample conversions done by ``audioop``.
"""

from __future__ import annotations

import struct
import sys
from array import array

from helpline.voice.g711 import SAMPLE_RATE, SAMPLE_WIDTH, audioop

FORMAT_PCM = 1
FORMAT_FLOAT = 3
FORMAT_ALAW = 6
FORMAT_ULAW = 7
FORMAT_EXTENSIBLE = 0xFFFE
_FMT = struct.Struct("<HHIIHH")


class WavError(ValueError):
    """The bytes are not a WAV file we can read; the message says what is wrong."""


def _chunks(data: bytes) -> dict[bytes, bytes]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    chunks: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset:offset + 4]
        size = int.from_bytes(data[offset + 4:offset + 8], "little")
        body = data[offset + 8:offset + 8 + size]  # a streaming writer may leave size unset: take the rest
        chunks.setdefault(chunk_id, body)
        offset += 8 + size + (size & 1)
    for needed in (b"fmt ", b"data"):
        if needed not in chunks:
            raise WavError(f"no {needed.decode().strip()!r} chunk")
    return chunks


def _floats_to_pcm16(raw: bytes, typecode: str) -> bytes:
    values = array(typecode)
    values.frombytes(raw[: len(raw) - len(raw) % values.itemsize])
    if sys.byteorder == "big":
        values.byteswap()
    out = array("h", (32767 if v >= 1.0 else -32768 if v <= -1.0 else int(v * 32767.0) for v in values))
    return out.tobytes()


def _downmix(pcm: bytes, channels: int) -> bytes:
    if channels == 1:
        return pcm
    if channels == 2:
        return audioop.tomono(pcm, SAMPLE_WIDTH, 0.5, 0.5)
    samples = array("h")
    samples.frombytes(pcm)
    frames = len(samples) // channels
    mixed = array("h", (sum(samples[i * channels:(i + 1) * channels]) // channels for i in range(frames)))
    return mixed.tobytes()


def wav_to_pcm8k(data: bytes) -> bytes:
    """Decode a WAV file (integer 8/16/24/32-bit, float 32/64-bit, A-law, μ-law; any channel count
    and rate) into 8 kHz mono 16-bit PCM in native byte order. ``WavError`` says what is unsupported.
    """
    chunks = _chunks(data)
    fmt = chunks[b"fmt "]
    if len(fmt) < _FMT.size:
        raise WavError("'fmt' chunk too short")
    tag, channels, rate, _byte_rate, block_align, bits = _FMT.unpack_from(fmt)
    if tag == FORMAT_EXTENSIBLE:
        if len(fmt) < 26:
            raise WavError("extensible 'fmt' chunk too short")
        tag = int.from_bytes(fmt[24:26], "little")  # first two bytes of the sub-format GUID
    if channels < 1 or rate < 1 or block_align < 1:
        raise WavError(f"bad header: {channels} channels, {rate} Hz, block align {block_align}")
    width = block_align // channels
    raw = chunks[b"data"]
    raw = raw[: len(raw) - len(raw) % block_align]
    if tag == FORMAT_PCM and width in (1, 2, 3, 4):
        if sys.byteorder == "big" and width > 1:
            raw = audioop.byteswap(raw, width)
        if width == 1:  # 8-bit WAV is unsigned
            raw = audioop.bias(raw, 1, -128)
        pcm = audioop.lin2lin(raw, width, SAMPLE_WIDTH) if width != SAMPLE_WIDTH else raw
    elif tag == FORMAT_FLOAT and width in (4, 8):
        pcm = _floats_to_pcm16(raw, "f" if width == 4 else "d")
    elif tag in (FORMAT_ALAW, FORMAT_ULAW) and width == 1:
        pcm = (audioop.alaw2lin if tag == FORMAT_ALAW else audioop.ulaw2lin)(raw, SAMPLE_WIDTH)
    else:
        raise WavError(f"unsupported sample format: tag {tag:#x}, {bits} bits in {width} bytes")
    pcm = _downmix(pcm, channels)
    if rate != SAMPLE_RATE:
        pcm, _state = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, rate, SAMPLE_RATE, None)
    return pcm
