"""Synthetic speech-like sound for the DTMF detector's tests: it has to ignore speech and still find
keypresses inside it."""

from __future__ import annotations

import math

import numpy as np

RATE = 8000
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
          (660, 1720, 2410), (440, 1020, 2240), (490, 1350, 1690))


def speech_like(seconds: float, seed: int, rms_dbfs: float = -20.0) -> bytes:
    """Sound with speech's structure: syllables of voiced vowels (a gliding pitch, its harmonics shaped
    by three formants) and unvoiced hiss, with a syllabic envelope and short pauses."""
    rng = np.random.default_rng(seed)
    total = round(seconds * RATE)
    out = np.zeros(total)
    pos = 0
    while pos < total:
        length = int(rng.uniform(0.12, 0.32) * RATE)
        end = min(total, pos + length)
        n = end - pos
        t = np.arange(n) / RATE
        if rng.random() < 0.8:  # voiced
            f0 = rng.uniform(85, 240) * (1 + rng.uniform(-0.15, 0.15) * t / max(t[-1], 1e-3))
            phase = 2 * math.pi * np.cumsum(f0) / RATE
            formants = VOWELS[rng.integers(len(VOWELS))]
            sound = np.zeros(n)
            for k in range(1, int(3800 / f0.max()) + 1):
                freq = k * f0.mean()
                gain = sum(1 / (1 + ((freq - f) / (60 + 0.05 * f)) ** 2) for f in formants) / k ** 0.5
                sound += gain * np.sin(k * phase + rng.uniform(0, 2 * math.pi))
        else:  # fricative
            sound = np.diff(rng.normal(0, 1, n + 1))
        envelope = np.sin(np.pi * np.arange(n) / n) ** 0.6
        out[pos:end] = sound * envelope * rng.uniform(0.4, 1.0)
        pos = end + (int(rng.uniform(0.02, 0.12) * RATE) if rng.random() < 0.3 else 0)
    scale = 32768 * 10 ** (rms_dbfs / 20) / max(float(np.sqrt(np.mean(out ** 2))), 1e-9)
    return np.clip(out * scale, -32768, 32767).astype("<i2").tobytes()
