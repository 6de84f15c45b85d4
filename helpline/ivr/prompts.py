"""Prompt references in flows and their resolution to :class:`PromptSpec`.

A flow has a ``prompts:`` catalog keyed by id; nodes name catalog ids or write a prompt inline. Each
entry is exactly one of ``file`` (WAV path relative to the flow file), ``tts`` (+ ``voice``), ``tone``
or ``silence_ms``. TTS text and file paths may hold ``{{ expr }}`` templates, rendered per call; a
rendered file path must stay inside the flow's directory, since its parts may come from callers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from helpline.ivr.expressions import render_template
from helpline.ivr.markers import PromptFile, PromptId, Template
from helpline.voice.prompt_spec import PromptSpec


class Tone(BaseModel):
    """A pure tone, or a dual tone when ``hz`` is a list."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hz: Annotated[tuple[Annotated[float, Field(gt=0, le=8000)], ...], BeforeValidator(
        lambda v: (v,) if isinstance(v, int | float) else v
    )] = Field(min_length=1, max_length=2)
    ms: int = Field(gt=0, le=600_000)


class Prompt(BaseModel):
    """One inline or catalog prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: PromptFile | None = None
    tts: Template | None = None
    voice: str | None = None
    tone: Tone | None = None
    silence_ms: int | None = Field(default=None, gt=0, le=600_000)

    @model_validator(mode="after")
    def _exactly_one(self) -> Prompt:
        kinds = [k for k in ("file", "tts", "tone", "silence_ms") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            raise ValueError(f"a prompt needs exactly one of file, tts, tone, silence_ms (got {found})")
        if self.voice is not None and self.tts is None:
            raise ValueError("voice only applies to tts prompts")
        return self


PromptRef = PromptId | Prompt


def _as_tuple(value: Any) -> Any:
    if value is None:
        return ()
    if isinstance(value, str | dict):
        return (value,)
    return value


Prompts = Annotated[tuple[PromptRef, ...], BeforeValidator(_as_tuple)]


class UnknownPrompt(LookupError):
    """A node names a prompt id the catalog does not have."""


class PromptFileError(LookupError):
    """A templated ``file`` prompt rendered to a path that is missing or outside the flow directory."""


def _templated_file(rendered: str, base_dir: Path, display: str) -> Path:
    """The file a rendered template names, refused when it leaves ``base_dir`` or does not exist.

    ``display`` is the path as messages may show it (secrets masked).
    """
    root = os.path.normpath(base_dir.resolve())
    target = os.path.normpath(os.path.join(root, rendered))
    if os.path.isabs(rendered) or os.path.commonpath([root, target]) != root:
        raise PromptFileError(f"prompt file {display!r} is outside the flow's directory")
    if not os.path.isfile(target):
        raise PromptFileError(f"prompt file {display!r} does not exist")
    return Path(target)


def resolve_prompt(
    ref: PromptRef,
    catalog: Mapping[str, Prompt],
    base_dir: Path,
    variables: Mapping[str, Any],
    language: str,
    show: Callable[[Any], Any] | None = None,
) -> PromptSpec:
    """Turn one reference into a spec, rendering templates in TTS text and file paths with ``variables``.

    With ``show`` (the interpreter's masker) a rendered prompt whose text differs once hole values
    are masked gets that masked text as its label, which is what events show.
    """
    prompt = ref if isinstance(ref, Prompt) else catalog.get(ref)
    if prompt is None:
        raise UnknownPrompt(f"unknown prompt id {ref!r}")

    def shown(template: str, rendered: str) -> str | None:
        text = render_template(template, variables, show) if show is not None else rendered
        return text if text != rendered else None

    if prompt.file is not None:
        if "{{" not in prompt.file:
            return PromptSpec(file=(base_dir / prompt.file).resolve())
        rendered = render_template(prompt.file, variables)
        label = shown(prompt.file, rendered)
        path = _templated_file(rendered, base_dir, label or rendered)
        return PromptSpec(file=path, label=f"file:{Path(label).name}" if label else "")
    if prompt.tts is not None:
        text = render_template(prompt.tts, variables)
        label = shown(prompt.tts, text)
        return PromptSpec(tts=text, voice=prompt.voice or language, label=f"tts:{label}" if label else "")
    if prompt.tone is not None:
        return PromptSpec(tone_hz=tuple(prompt.tone.hz), duration_ms=prompt.tone.ms)
    return PromptSpec(duration_ms=prompt.silence_ms or 0)


def resolve_prompts(
    refs: Iterable[PromptRef],
    catalog: Mapping[str, Prompt],
    base_dir: Path,
    variables: Mapping[str, Any],
    language: str,
    show: Callable[[Any], Any] | None = None,
) -> list[PromptSpec]:
    return [resolve_prompt(ref, catalog, base_dir, variables, language, show) for ref in refs]
