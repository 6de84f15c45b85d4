"""Fixtures for the guard tests (the harness itself is in guard_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.sbc_bridge.guard.guard_support import GuardedEdges, start_guarded


@pytest.fixture
async def guarded() -> AsyncIterator[Callable[..., Awaitable[GuardedEdges]]]:
    started: list[GuardedEdges] = []

    async def factory(**kwargs: Any) -> GuardedEdges:
        edges = await start_guarded(**kwargs)
        started.append(edges)
        return edges

    yield factory
    for edges in started:
        await edges.stop()
