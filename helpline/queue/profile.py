"""An agent as the administrator manages it: extension, name, skills, queues. Stored in the database.

This is the configuration side of an agent. Its live state (presence, activity, registrations) is
kept by the queue runtime and is never edited here. The SIP password is not part of the profile: it
is turned into digest HA1 values (MD5 and SHA-256) when set, and only those are stored.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from helpline.queue.config import QUEUE_NAME

EXTENSION = r"^[A-Za-z0-9_.-]{1,32}$"
SKILL_NAME = r"^[a-z][a-z0-9_]{0,31}$"
MAX_SKILL_LEVEL = 100

AttributeValue = str | int | float | bool


class Membership(BaseModel):
    """An agent's place in one queue: ``tier`` 1 is offered calls before tier 2 (bullseye rings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str = Field(pattern=QUEUE_NAME)
    tier: int = Field(default=1, ge=1, le=9)


class AgentProfile(BaseModel):
    """What an admin sets for an agent. Levels are 0-100 (a missing skill is not level 0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extension: str = Field(pattern=EXTENSION)
    display_name: str = Field(min_length=1, max_length=64)
    skills: dict[str, int] = Field(default_factory=dict)
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    queues: tuple[Membership, ...] = ()
    wrapup_s: float | None = Field(default=None, ge=0, le=3600)
    enabled: bool = True

    @field_validator("skills")
    @classmethod
    def _skills(cls, value: dict[str, int]) -> dict[str, int]:
        for name, level in value.items():
            if not re.match(SKILL_NAME, name):
                raise ValueError(f"skill name {name!r} must be lower-case letters, digits and _")
            if not 0 <= level <= MAX_SKILL_LEVEL:
                raise ValueError(f"skill {name!r}: level {level} is outside 0..{MAX_SKILL_LEVEL}")
        return value

    @field_validator("queues")
    @classmethod
    def _unique_queues(cls, value: tuple[Membership, ...]) -> tuple[Membership, ...]:
        names = [m.queue for m in value]
        if len(set(names)) != len(names):
            raise ValueError("an agent is a member of each queue at most once")
        return value
