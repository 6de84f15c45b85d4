"""``play`` and ``pause``: output only, one outcome."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from helpline.ivr.context import RunContext
from helpline.ivr.model import NodeBase
from helpline.ivr.prompts import Prompts


class PlayNode(NodeBase):
    """Play one or more prompts. With ``barge_in`` a key skips the rest (the key itself is consumed)."""

    type: Literal["play"]
    prompt: Prompts = Field(min_length=1)
    barge_in: bool = False

    async def run(self, ctx: RunContext) -> str:
        await ctx.play(self.prompt, barge_in=self.barge_in)
        return "next"


class PauseNode(NodeBase):
    """Silence for ``ms`` milliseconds (pacing, or time for a back end)."""

    type: Literal["pause"]
    ms: int = Field(gt=0, le=600_000)

    async def run(self, ctx: RunContext) -> str:
        await ctx.channel.pause(self.ms / 1000)
        return "next"
