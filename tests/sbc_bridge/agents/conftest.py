"""Fixtures for the agent listener tests (the harness itself is in agent_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.sbc_bridge.agents.agent_support import AgentHarness, build_harness


@pytest.fixture
async def make_agent_edge() -> AsyncIterator[Callable[..., Awaitable[AgentHarness]]]:
    started: list[AgentHarness] = []

    async def factory(**kwargs: Any) -> AgentHarness:
        harness = build_harness(**kwargs)
        await harness.edge.start()
        started.append(harness)
        return harness

    yield factory
    for harness in started:
        await harness.edge.stop()
