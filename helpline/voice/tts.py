"""Text to speech through the espeak-ng command line, run as an asyncio subprocess.

The text goes in on stdin, never as an argument, so text that begins with ``-`` cannot be taken for
an option, and the WAV comes back on stdout, so no temporary file touches the disk. ``PromptCache``
converts the result to 8 kHz and caches it.
"""

from __future__ import annotations

import asyncio
import logging
import re

log = logging.getLogger(__name__)

ESPEAK = "espeak-ng"
_VOICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+\-]{0,63}")


class TtsError(RuntimeError):
    """espeak-ng could not turn the text into audio; the message carries its exit status and stderr."""


async def espeak_to_wav(text: str, voice: str, *, executable: str = ESPEAK) -> bytes:
    """Speak ``text`` with espeak-ng voice ``voice``; the WAV file's bytes (streamed: sizes unset).

    Bound the time with ``asyncio.timeout``: on cancellation the process is killed.
    """
    if not _VOICE.fullmatch(voice):
        raise TtsError(f"bad voice name {voice!r}")
    try:
        proc = await asyncio.create_subprocess_exec(
            executable, "-v", voice, "--stdout", "--stdin",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise TtsError(f"cannot run {executable}: {exc}") from exc
    try:
        wav, stderr = await proc.communicate(text.encode("utf-8"))
    finally:
        if proc.returncode is None:
            proc.kill()
    message = stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not wav:
        raise TtsError(f"{executable} -v {voice} exited with {proc.returncode}: {message or 'no output'}")
    if message:
        log.warning("%s -v %s said: %s", executable, voice, message)
    return wav
