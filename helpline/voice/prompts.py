"""Prompts as audio: ``PromptSpec`` in, 8 kHz PCM out, converted once and cached.

Each prompt is converted to 8 kHz mono 16-bit PCM once (kept in memory and on disk) and encoded once
per codec into 20 ms frames, so playing it costs the media engine one list lookup per frame.

Disk layout under ``cache_dir``: ``wav/<sha256>.pcm`` keyed by the file's absolute path, mtime and
size (editing the file invalidates it), and ``tts/<sha256>.pcm`` keyed by (voice, text). Files are raw
native-order PCM written atomically.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from helpline.voice.g711 import FRAME_PCM_BYTES, FRAME_SAMPLES, SAMPLE_RATE, codec_by_name
from helpline.voice.prompt_spec import PromptSpec
from helpline.voice.tones import synthesize_tone
from helpline.voice.tts import ESPEAK, TtsError, espeak_to_wav
from helpline.voice.wav import WavError, wav_to_pcm8k

log = logging.getLogger(__name__)


class PromptError(RuntimeError):
    """A prompt could not become audio; the message names the file or text and why."""


class PromptAudio:
    """8 kHz mono 16-bit PCM, plus its G.711 encodings as 20 ms frames, made on first use."""

    __slots__ = ("_frames", "label", "pcm")

    def __init__(self, pcm: bytes, label: str = "") -> None:
        self.pcm = pcm[: len(pcm) - len(pcm) % 2]
        self.label = label
        self._frames: dict[str, tuple[bytes, ...]] = {}

    @property
    def duration_ms(self) -> int:
        """Length in milliseconds."""
        return len(self.pcm) // 2 * 1000 // SAMPLE_RATE

    def frames(self, codec: str) -> tuple[bytes, ...]:
        """The prompt encoded with ``codec`` in 160-byte frames; the last one padded with silence."""
        frames = self._frames.get(codec)
        if frames is None:
            pcm = self.pcm
            if len(pcm) % FRAME_PCM_BYTES:
                pcm += bytes(FRAME_PCM_BYTES - len(pcm) % FRAME_PCM_BYTES)
            encoded = codec_by_name(codec).encode(pcm)
            frames = tuple(encoded[i:i + FRAME_SAMPLES] for i in range(0, len(encoded), FRAME_SAMPLES))
            self._frames[codec] = frames
        return frames

    @classmethod
    def join(cls, parts: Iterable[PromptAudio], label: str = "") -> PromptAudio:
        """Several prompts played back to back as one (one playback, one barge-in point)."""
        parts = list(parts)
        return cls(b"".join(p.pcm for p in parts), label or " + ".join(p.label for p in parts))

    def __repr__(self) -> str:
        return f"PromptAudio({self.label!r}, {self.duration_ms} ms)"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def _locate(file: Path) -> tuple[Path, os.stat_result]:
    path = file.absolute()
    try:
        return path, path.stat()
    except OSError as exc:
        raise PromptError(f"prompt file {path}: {exc.strerror or exc}") from None


def _read_cached(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class PromptCache:
    """Turns ``PromptSpec`` into ``PromptAudio``; concurrent requests for one spec share the work."""

    def __init__(self, cache_dir: Path | str, *, espeak: str = ESPEAK, tts_timeout: float = 30.0) -> None:
        self.cache_dir = Path(cache_dir)
        self.espeak = espeak
        self.tts_timeout = tts_timeout
        self._memory: dict[tuple[object, ...], PromptAudio] = {}
        self._pending: dict[tuple[object, ...], asyncio.Future[PromptAudio]] = {}
        self.tts_runs = 0  # espeak-ng processes started, for diagnostics

    async def get(self, spec: PromptSpec) -> PromptAudio:
        """The audio of ``spec``; ``PromptError`` naming the file or text when it can't be made."""
        chosen = [name for name, value in (("file", spec.file), ("tts", spec.tts), ("tone_hz", spec.tone_hz))
                  if value is not None]
        if len(chosen) > 1:
            raise PromptError(f"prompt {spec.describe()}: sets {' and '.join(chosen)}; only one is allowed")
        if spec.file is not None:
            path, st = await asyncio.to_thread(_locate, spec.file)
            key: tuple[object, ...] = ("file", str(path), st.st_mtime_ns, st.st_size)
            return await self._once(key, lambda: self._load_file(path, key), spec)
        if spec.tts is not None:
            tts_key: tuple[object, ...] = ("tts", spec.voice, spec.tts)
            return await self._once(tts_key, lambda: self._load_tts(spec.tts or "", spec.voice), spec)
        if spec.tone_hz is not None:
            tone_key: tuple[object, ...] = ("tone", spec.tone_hz, spec.duration_ms)
            freqs, duration = spec.tone_hz, spec.duration_ms
            return await self._once(
                tone_key, lambda: asyncio.to_thread(synthesize_tone, freqs, duration), spec)
        return PromptAudio(bytes(2 * SAMPLE_RATE * max(spec.duration_ms, 0) // 1000), spec.describe())

    async def _once(self, key: tuple[object, ...], make: Callable[[], Awaitable[bytes]],
                    spec: PromptSpec) -> PromptAudio:
        audio = self._memory.get(key)
        if audio is not None:
            return audio
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[PromptAudio] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            pcm = await make()
            audio = PromptAudio(pcm, spec.describe())
            self._memory[key] = audio
            future.set_result(audio)
            return audio
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters re-raise their own copy
            raise
        finally:
            del self._pending[key]

    async def _load_file(self, path: Path, key: tuple[object, ...]) -> bytes:
        cached = self.cache_dir / "wav" / f"{_digest(*map(str, key))}.pcm"
        return await asyncio.to_thread(self._convert_file, path, cached)

    @staticmethod
    def _convert_file(path: Path, cached: Path) -> bytes:
        pcm = _read_cached(cached)
        if pcm is not None:
            return pcm
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PromptError(f"prompt file {path}: {exc.strerror or exc}") from None
        try:
            pcm = wav_to_pcm8k(data)
        except WavError as exc:
            raise PromptError(f"prompt file {path}: {exc}") from None
        _write_atomically(cached, pcm)
        log.info("converted prompt %s to 8 kHz (%d ms)", path, len(pcm) // 16)
        return pcm

    async def _load_tts(self, text: str, voice: str) -> bytes:
        cached = self.cache_dir / "tts" / f"{_digest(voice, text)}.pcm"
        pcm = await asyncio.to_thread(_read_cached, cached)
        if pcm is not None:
            return pcm
        self.tts_runs += 1
        try:
            async with asyncio.timeout(self.tts_timeout):
                wav = await espeak_to_wav(text, voice, executable=self.espeak)
            pcm = await asyncio.to_thread(wav_to_pcm8k, wav)
        except TimeoutError:
            raise PromptError(f"tts {text[:80]!r} (voice {voice}): {self.espeak} took longer than "
                              f"{self.tts_timeout:g} s") from None
        except (TtsError, WavError) as exc:
            raise PromptError(f"tts {text[:80]!r} (voice {voice}): {exc}") from None
        await asyncio.to_thread(_write_atomically, cached, pcm)
        log.info("spoke %r with espeak-ng voice %s (%d ms)", text[:80], voice, len(pcm) // 16)
        return pcm
