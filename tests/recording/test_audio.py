"""Interleaving and DTMF detection on synthetic signals: every keypad pair, alone and inside speech-like
sound, is found; speech-like sound, noise and call-progress tones alone are not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpline.recording.audio import DIGIT_TONES, DtmfScrubber, channels, dtmf_tone, find_dtmf, interleave
from tests.recording.audio_support import speech_like

RATE = 8000


def tone(freqs: tuple[float, ...], seconds: float, dbfs: float = -10.0) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * math.pi * f * t) for f in freqs) * 32768 * 10 ** (dbfs / 20)
    return np.asarray(wave).astype("<i2").tobytes()


def mix(a: bytes, b: bytes) -> bytes:
    x = np.frombuffer(a, "<i2").astype(np.int32) + np.frombuffer(b, "<i2").astype(np.int32)
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def test_interleave_puts_left_first_and_channels_splits_back() -> None:
    left = np.arange(160, dtype="<i2").tobytes()
    right = (-np.arange(160, dtype="<i2")).tobytes()
    stereo = interleave(left, right)
    assert np.frombuffer(stereo, "<i2")[:6].tolist() == [0, 0, 1, -1, 2, -2]
    assert channels(stereo) == (left, right)
    with pytest.raises(ValueError, match="equal length"):
        interleave(left, right[:-2])


@pytest.mark.parametrize("digit", sorted(DIGIT_TONES))
def test_every_keypad_pair_is_detected_in_a_frame_and_in_a_channel(digit: str) -> None:
    scrubber = DtmfScrubber()
    assert scrubber.scan(dtmf_tone(digit, 0.02))
    assert scrubber.scan(bytes(320) + dtmf_tone(digit, 0.02))  # both channels of a tick
    pcm = bytes(4000) + dtmf_tone(digit, 0.08) + bytes(4000) + dtmf_tone(digit, 0.02) + bytes(4000)
    found = find_dtmf(pcm)
    assert [d for _, d in found] == [digit]  # 20 ms is too short to be a keypress
    assert found[0][0] == pytest.approx(0.25, abs=0.015)


@pytest.mark.parametrize("seed", range(4))
def test_digits_inside_speech_like_sound_are_found_and_the_speech_alone_is_not(seed: int) -> None:
    speech = speech_like(12.0, seed, rms_dbfs=-20.0)
    assert find_dtmf(speech) == []
    assert find_dtmf(speech_like(12.0, seed + 100, rms_dbfs=-14.0)) == []  # louder speech alone
    digits = "159#*0D4"  # each tone at -10 dBFS: the pair is 10 dB above the speech
    keyed = bytearray(speech)
    starts = []
    for i, digit in enumerate(digits):
        at = (1.0 + 1.3 * i + 0.013 * seed) * RATE  # off the 20 ms grid
        start = 2 * round(at)
        starts.append(start / 2 / RATE)
        keyed[start:start + 1120] = mix(bytes(keyed[start:start + 1120]), dtmf_tone(digit, 0.07))
    found = find_dtmf(bytes(keyed))
    assert [d for _, d in found] == list(digits)
    assert all(abs(at - start) <= 0.02 for (at, _), start in zip(found, starts, strict=True))


@pytest.mark.parametrize("freqs", [(440.0,), (350.0, 440.0), (440.0, 480.0), (480.0, 620.0), (1000.0,),
                                   (697.0,), (1209.0,), (950.0, 1400.0, 1800.0)])
def test_single_tones_and_call_progress_tones_are_not_keypresses(freqs: tuple[float, ...]) -> None:
    assert find_dtmf(tone(freqs, 1.0)) == []


def test_noise_and_silence_are_not_keypresses() -> None:
    rng = np.random.default_rng(7)
    noise = np.clip(rng.normal(0, 6000, RATE * 5), -32768, 32767).astype("<i2").tobytes()
    assert find_dtmf(noise) == []
    assert find_dtmf(bytes(RATE * 2)) == []
    assert not DtmfScrubber().scan(bytes(640))


def test_a_quiet_pair_below_the_floor_is_ignored_and_a_lopsided_pair_too() -> None:
    assert find_dtmf(dtmf_tone("5", 0.1, dbfs=-60)) == []
    lopsided = mix(tone((770.0,), 0.1, dbfs=-6), tone((1336.0,), 0.1, dbfs=-26))  # 20 dB twist
    assert find_dtmf(lopsided) == []
