"""Prompts: WAV files of any layout (made by sox, not by us), espeak-ng TTS with its disk cache, tones."""

from __future__ import annotations

import asyncio
import math
import os
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from helpline.voice import PromptAudio, PromptCache, PromptError, PromptSpec
from helpline.voice.tones import detect_tones, dominant_tone, tone_power

CANDIDATES = [300.0, 440.0, 700.0, 1000.0, 1500.0, 2000.0]


def sox_tone(path: Path, *, rate: int, channels: int, bits: int, encoding: str = "signed-integer",
             freq: float = 1000.0, seconds: float = 1.0) -> Path:
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", str(channels), "-b", str(bits), "-e", encoding, str(path),
         "synth", str(seconds), "sine", str(freq), "vol", "0.5"],
        check=True, capture_output=True, timeout=30,
    )
    return path


@pytest.mark.parametrize(("rate", "channels", "bits", "encoding"), [
    (8000, 1, 16, "signed-integer"),
    (16000, 2, 16, "signed-integer"),
    (22050, 1, 8, "unsigned-integer"),
    (44100, 1, 24, "signed-integer"),
    (48000, 2, 32, "signed-integer"),
    (16000, 1, 32, "floating-point"),
    (11025, 1, 8, "a-law"),
    (8000, 1, 8, "u-law"),
])
async def test_wav_of_any_layout_becomes_8khz_with_the_tone_preserved(
        tmp_path: Path, rate: int, channels: int, bits: int, encoding: str) -> None:
    wav = sox_tone(tmp_path / f"t-{rate}-{channels}-{bits}-{encoding}.wav", rate=rate, channels=channels,
                   bits=bits, encoding=encoding)
    audio = await PromptCache(tmp_path / "cache").get(PromptSpec(file=wav))
    assert 980 <= audio.duration_ms <= 1020
    assert dominant_tone(audio.pcm, 8000, CANDIDATES, min_share=0.8) == 1000.0
    assert 0.15 <= tone_power(audio.pcm, 8000, 1000.0) <= 0.35  # sox wrote it at half scale
    assert len(audio.frames("PCMU")) == 50 and all(len(f) == 160 for f in audio.frames("PCMA"))


async def test_converted_wav_is_cached_on_disk_and_invalidated_by_edits(tmp_path: Path) -> None:
    wav = sox_tone(tmp_path / "greeting.wav", rate=16000, channels=1, bits=16, freq=700.0)
    first = await PromptCache(tmp_path / "cache").get(PromptSpec(file=wav))
    cached = list((tmp_path / "cache" / "wav").glob("*.pcm"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.pcm
    again = await PromptCache(tmp_path / "cache").get(PromptSpec(file=wav))
    assert again.pcm == first.pcm
    sox_tone(wav, rate=16000, channels=1, bits=16, freq=1500.0, seconds=0.5)
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    edited = await PromptCache(tmp_path / "cache").get(PromptSpec(file=wav))
    assert dominant_tone(edited.pcm, 8000, CANDIDATES) == 1500.0


async def test_wav_file_errors_name_the_file(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "cache")
    with pytest.raises(PromptError, match=r"missing\.wav"):
        await cache.get(PromptSpec(file=tmp_path / "missing.wav"))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not a wav file at all")
    with pytest.raises(PromptError, match=r"junk\.wav: not a RIFF/WAVE file"):
        await cache.get(PromptSpec(file=junk))
    odd = tmp_path / "odd.wav"
    fmt = struct.pack("<HHIIHH", 2, 1, 8000, 4000, 1, 4)  # MS-ADPCM
    odd.write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
                    + b"data" + struct.pack("<I", 4) + b"\0\0\0\0")
    with pytest.raises(PromptError, match=r"odd\.wav: unsupported sample format"):
        await cache.get(PromptSpec(file=odd))


def counting_espeak(tmp_path: Path) -> tuple[str, Path]:
    """A wrapper that logs each run and then executes the real espeak-ng."""
    log = tmp_path / "espeak-runs.log"
    script = tmp_path / "espeak-counting"
    script.write_text(f'#!/bin/sh\necho run >> "{log}"\nexec espeak-ng "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


async def test_tts_speaks_and_is_cached_on_disk(tmp_path: Path) -> None:
    espeak, log = counting_espeak(tmp_path)
    spec = PromptSpec(tts="Welcome to the help line. Press one for sales.", voice="en")
    first_cache = PromptCache(tmp_path / "cache", espeak=espeak)
    audio, same = await asyncio.gather(first_cache.get(spec), first_cache.get(spec))
    assert same is audio
    assert log.read_text().count("run") == 1
    assert audio.duration_ms > 1500
    samples = struct.unpack(f"<{len(audio.pcm) // 2}h", audio.pcm)
    assert math.sqrt(sum(s * s for s in samples) / len(samples)) > 500  # speech, not silence
    fresh_cache = PromptCache(tmp_path / "cache", espeak=espeak)  # as after a restart
    again = await fresh_cache.get(spec)
    assert again.pcm == audio.pcm
    assert log.read_text().count("run") == 1
    assert fresh_cache.tts_runs == 0
    other_voice = await fresh_cache.get(PromptSpec(tts=spec.tts, voice="de"))
    assert other_voice.pcm != audio.pcm
    assert log.read_text().count("run") == 2


async def test_tts_failures_name_the_text(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "cache")
    with pytest.raises(PromptError, match=r"'Hello there' \(voice zzz\)"):
        await cache.get(PromptSpec(tts="Hello there", voice="zzz"))
    with pytest.raises(PromptError, match=r"bad voice name"):
        await cache.get(PromptSpec(tts="Hi", voice="--help"))
    broken = PromptCache(tmp_path / "cache", espeak=str(tmp_path / "does-not-exist"))
    with pytest.raises(PromptError, match=r"'Hi' .*cannot run"):
        await broken.get(PromptSpec(tts="Hi"))


async def test_text_starting_with_a_dash_is_spoken_not_parsed(tmp_path: Path) -> None:
    audio = await PromptCache(tmp_path / "cache").get(PromptSpec(tts="--version"))
    assert audio.duration_ms > 300


async def test_tones_and_silence(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "cache")
    ringback = await cache.get(PromptSpec(tone_hz=(440.0, 480.0), duration_ms=2000))
    assert ringback.duration_ms == 2000
    shares = detect_tones(ringback.pcm, 8000, [440.0, 480.0, 1000.0])
    assert shares[440.0] > 0.4 and shares[480.0] > 0.4 and shares[1000.0] < 0.01
    quiet = await cache.get(PromptSpec(duration_ms=500))
    assert quiet.pcm == bytes(8000) and quiet.label == "silence:500ms"
    assert dominant_tone(quiet.pcm, 8000, [440.0]) is None
    with pytest.raises(PromptError, match="only one"):
        await cache.get(PromptSpec(tts="x", tone_hz=(440.0,), duration_ms=10))


def test_joined_prompts_play_as_one() -> None:
    joined = PromptAudio.join([PromptAudio(bytes(3200), "a"), PromptAudio(bytes(1000), "b")])
    assert joined.duration_ms == 262 and joined.label == "a + b"
    assert len(joined.frames("PCMU")) == 14
