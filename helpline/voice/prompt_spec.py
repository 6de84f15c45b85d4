"""What a prompt is, before it becomes audio.

The IVR resolves a flow's prompt references into these specs; the media engine turns a spec into
8 kHz audio once and caches it. Keeping the spec a plain frozen value lets it be a cache key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One playable prompt: exactly one of ``file``, ``tts`` or ``tone_hz`` is set.

    ``file``: a WAV file of any rate and sample format.
    ``tts``: text spoken by espeak-ng with ``voice`` (a language such as ``en`` or ``ko``).
    ``tone_hz``: a pure tone (or two, for a dual tone) lasting ``duration_ms``.
    ``silence``: a pause of ``duration_ms`` with nothing in the other fields.
    """

    file: Path | None = None
    tts: str | None = None
    voice: str = "en"
    tone_hz: tuple[float, ...] | None = None
    duration_ms: int = 0
    label: str = ""

    def describe(self) -> str:
        """A short human label for transcripts and events."""
        if self.label:
            return self.label
        if self.file is not None:
            return f"file:{self.file.name}"
        if self.tts is not None:
            return f"tts:{self.tts}"
        if self.tone_hz is not None:
            return f"tone:{'+'.join(f'{f:g}' for f in self.tone_hz)}Hz/{self.duration_ms}ms"
        return f"silence:{self.duration_ms}ms"
