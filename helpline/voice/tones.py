"""Tone synthesis and detection on 16-bit PCM.

Detection uses the Goertzel algorithm: the power of a handful of known frequencies costs one pass
over the samples, with no FFT. Tests use it to check that the audio arriving over RTP is the prompt
we sent; answering-machine and fax (CNG 1100 Hz / CED 2100 Hz) detection can build on it.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable, Sequence

_FULL_SCALE = 32768.0


def _samples(pcm16: bytes) -> array[int]:
    samples = array("h")
    samples.frombytes(pcm16[: len(pcm16) - len(pcm16) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _goertzel(samples: Sequence[int], rate: int, freq: float) -> float:
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def tone_power(pcm16: bytes, rate: int, freq: float) -> float:
    """Power at ``freq`` as squared amplitude relative to full scale (a full-scale sine gives ~1.0).

    ``pcm16`` is little-endian signed 16-bit mono at ``rate`` Hz.
    """
    samples = _samples(pcm16)
    if not samples:
        return 0.0
    half = len(samples) / 2.0
    return _goertzel(samples, rate, freq) / (half * half * _FULL_SCALE * _FULL_SCALE)


def detect_tones(pcm16: bytes, rate: int, candidates: Iterable[float]) -> dict[float, float]:
    """For each candidate frequency, the share of the signal's total power it holds (0..~1).

    A pure tone at a candidate gives about 1.0 for it and about 0 for the others; silence gives 0s.
    """
    samples = _samples(pcm16)
    freqs = list(candidates)
    if not samples:
        return dict.fromkeys(freqs, 0.0)
    n = len(samples)
    total = sum(x * x for x in samples) / n  # mean square; a sine of amplitude A has A²/2
    if total == 0:
        return dict.fromkeys(freqs, 0.0)
    half = n / 2.0
    return {f: (_goertzel(samples, rate, f) / (half * half)) / 2.0 / total for f in freqs}


def dominant_tone(pcm16: bytes, rate: int, candidates: Iterable[float],
                  min_share: float = 0.5) -> float | None:
    """The candidate holding the most power, if it holds at least ``min_share`` of the total."""
    shares = detect_tones(pcm16, rate, candidates)
    if not shares:
        return None
    best = max(shares, key=lambda f: shares[f])
    return best if shares[best] >= min_share else None


def synthesize_tone(freqs: Sequence[float], duration_ms: int, rate: int = 8000,
                    level_dbfs: float = -10.0) -> bytes:
    """A tone (or the sum of several, e.g. a DTMF pair) as 16-bit little-endian PCM at ``rate``.

    The combined peak stays at ``level_dbfs``; 5 ms ramps at each end avoid clicks.
    """
    count = rate * duration_ms // 1000
    if not freqs or count <= 0:
        return bytes(2 * max(count, 0))
    amplitude = _FULL_SCALE * 10 ** (level_dbfs / 20) / len(freqs)
    steps = [2 * math.pi * f / rate for f in freqs]
    ramp = max(1, min(rate * 5 // 1000, count // 2))
    samples = array("h", bytes(2 * count))
    for i in range(count):
        gain = min(1.0, i / ramp, (count - 1 - i) / ramp)
        samples[i] = int(gain * amplitude * sum(math.sin(step * i) for step in steps))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()
