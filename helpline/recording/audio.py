"""Sample-level helpers for recordings: stereo interleaving and in-band DTMF detection.

A stored recording must not hold keypad tones: a caller typing a card number or a PIN while
recording runs (the IVR's sensitive nodes pause it, but a caller may press keys anywhere) would
otherwise leave the digits in the audio, readable by anyone with a DTMF decoder. ``DtmfScrubber``
finds them frame by frame before anything leaves memory; ``find_dtmf`` scans a whole channel, so a
test or a compliance check can prove a stored file holds none.

Detection measures the eight DTMF frequencies with a Goertzel-style DFT at exactly those
frequencies, for all of them at once as one matrix product (numpy), over 20 ms (160 samples at
8 kHz); single precision is ample for a yes/no decision and halves the cost. A frame holds a keypress
when one row tone and one column tone stand out of their groups, their levels are within the allowed
twist, and even the weaker of the two is not far below everything else in the frame together: speech
spreads its energy over many harmonics and formants (a voice whose harmonics happen to fall on a row
and a column frequency still has others as strong), a keypad puts it into two pure tones.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from helpline.voice.g711 import FRAME_MS, SAMPLE_RATE

ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COLUMN_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
DIGIT_TONES: dict[str, tuple[float, float]] = {
    KEYPAD[r][c]: (ROW_HZ[r], COLUMN_HZ[c]) for r in range(4) for c in range(4)
}
_PCM = np.dtype("<i2")
_FULL_SCALE = 32768.0
_SCAN_CHUNK = 8192  # windows per matrix product in find_dtmf
_MIN_RUN = 4  # windows (10 ms apart) in a row a pair must be seen in by find_dtmf


def interleave(left: bytes, right: bytes) -> bytes:
    """Two mono PCM16 buffers of equal length as one interleaved stereo buffer (left first)."""
    if len(left) != len(right) or len(left) % 2:
        raise ValueError(f"interleave needs two PCM16 buffers of equal length, got {len(left)} and "
                         f"{len(right)} bytes")
    out = np.empty((len(left) // 2, 2), dtype=_PCM)
    out[:, 0] = np.frombuffer(left, dtype=_PCM)
    out[:, 1] = np.frombuffer(right, dtype=_PCM)
    return out.tobytes()


class DtmfScrubber:
    """Detects DTMF keypresses in 20 ms PCM16 frames.

    ``min_dbfs``: quieter frames are never a keypress (the RMS of the frame). ``min_share``: the two
    tones together must hold this share of the frame's energy. ``max_twist_db``: the level difference
    allowed between the row and the column tone. ``peak_db``: each tone must exceed the others of
    its group by this much. ``tone_to_rest_db``: the weaker tone against all the energy outside the
    pair (the test that keeps harmonic-rich speech out).
    """

    def __init__(self, rate: int = SAMPLE_RATE, *, min_dbfs: float = -45.0, min_share: float = 0.4,
                 max_twist_db: float = 8.0, peak_db: float = 6.0, tone_to_rest_db: float = -3.0) -> None:
        self.rate = rate
        self.frame_samples = rate * FRAME_MS // 1000
        n = np.arange(self.frame_samples, dtype=np.float64)
        freqs = np.array(ROW_HZ + COLUMN_HZ) / rate
        phases = 2.0 * math.pi * np.outer(n, freqs)  # (samples, 8)
        basis = np.concatenate([np.cos(phases), np.sin(phases)], axis=1)  # (samples, 16)
        self._basis = basis.astype(np.float32)
        # A frame's mean square must reach this (full scale sine = 0 dBFS RMS reference).
        self._min_energy = self.frame_samples * (_FULL_SCALE * 10 ** (min_dbfs / 20)) ** 2 / 2
        self._min_share = min_share
        self._max_twist = 10 ** (max_twist_db / 10)
        self._peak = 10 ** (peak_db / 10)
        self._rest = 10 ** (-tone_to_rest_db / 10)  # how many times the weaker tone the rest may be

    def scan(self, frame: bytes) -> bool:
        """Whether ``frame`` holds a keypress. It may hold several 20 ms frames back to back (both
        channels of one tick): then whether any of them does."""
        samples = np.frombuffer(frame, dtype=_PCM).reshape(-1, self.frame_samples)
        return bool((self.digits(samples) >= 0).any())

    def digits(self, frames: NDArray[np.int16]) -> NDArray[np.intp]:
        """For each row of ``frames`` (shape ``(count, frame_samples)``), the index into the keypad
        (``row * 4 + column``) of the keypress it holds, or -1."""
        x = frames.astype(np.float32)
        energy = np.einsum("ij,ij->i", x, x)
        proj = x @ self._basis
        half = len(ROW_HZ) + len(COLUMN_HZ)
        # share of the frame's energy at each frequency: a lone full-length sine there gives ~1
        power = proj[:, :half] ** 2 + proj[:, half:] ** 2
        share = power * (2.0 / self.frame_samples) / np.maximum(energy, 1.0)[:, None]
        rows, cols = share[:, :4], share[:, 4:]
        ordered_rows, ordered_cols = np.sort(rows, axis=1), np.sort(cols, axis=1)
        row_top, col_top = ordered_rows[:, -1], ordered_cols[:, -1]
        found = (
            (energy >= self._min_energy)
            & (row_top + col_top >= self._min_share)
            & (row_top <= col_top * self._max_twist)
            & (col_top <= row_top * self._max_twist)
            & (row_top >= ordered_rows[:, -2] * self._peak)
            & (col_top >= ordered_cols[:, -2] * self._peak)
            & (1.0 - row_top - col_top <= np.minimum(row_top, col_top) * self._rest)
        )
        index = np.argmax(rows, axis=1) * 4 + np.argmax(cols, axis=1)
        return np.where(found, index, -1)


def find_dtmf(pcm: bytes, rate: int = SAMPLE_RATE) -> list[tuple[float, str]]:
    """Every keypress in a whole mono PCM16 channel: ``(start seconds, digit)``, one per tone burst.

    Windows of 20 ms advance by 10 ms, so a tone straddling the frame grid is still seen whole. A
    keypress is one pair seen in at least four windows in a row (one window's dropout inside is
    bridged), which a tone of 30-40 ms gives, depending on how it falls on the grid: ITU-T Q.24's
    receivers must accept 40 ms; a stray frame of speech that looks like a pair is not reported.
    """
    scrubber = DtmfScrubber(rate)
    size = scrubber.frame_samples
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype=_PCM)
    if len(samples) < size:
        return []
    hop = size // 2
    windows = np.lib.stride_tricks.sliding_window_view(samples, size)[::hop]
    found: list[tuple[float, str]] = []
    run_digit, run_start, run_last = -1, 0, 0  # the burst being followed: digit, first and last window
    for first in range(0, len(windows), _SCAN_CHUNK):  # bounded memory for an hour-long channel
        for offset, index in enumerate(scrubber.digits(windows[first:first + _SCAN_CHUNK]).tolist()):
            position = first + offset
            if index < 0:
                continue
            if index == run_digit and position - run_last <= 2:
                run_last = position
                continue
            if run_digit >= 0 and run_last - run_start + 1 >= _MIN_RUN:
                found.append((run_start * hop / rate, KEYPAD[run_digit // 4][run_digit % 4]))
            run_digit, run_start, run_last = index, position, position
    if run_digit >= 0 and run_last - run_start + 1 >= _MIN_RUN:
        found.append((run_start * hop / rate, KEYPAD[run_digit // 4][run_digit % 4]))
    return found


def dtmf_tone(digit: str, seconds: float, *, rate: int = SAMPLE_RATE, dbfs: float = -10.0) -> bytes:
    """The keypad tone pair of ``digit`` as PCM16 (each tone at ``dbfs``): for tests and checks."""
    low, high = DIGIT_TONES[digit.upper()]
    t = np.arange(round(seconds * rate)) / rate
    amplitude = _FULL_SCALE * 10 ** (dbfs / 20)
    wave = amplitude * (np.sin(2 * math.pi * low * t) + np.sin(2 * math.pi * high * t))
    return np.clip(np.round(wave), -32768, 32767).astype(_PCM).tobytes()


def channels(stereo: bytes) -> tuple[bytes, bytes]:
    """The left and right channels of interleaved stereo PCM16."""
    samples = np.frombuffer(stereo[: len(stereo) - len(stereo) % 4], dtype=_PCM).reshape(-1, 2)
    return samples[:, 0].tobytes(), samples[:, 1].tobytes()
