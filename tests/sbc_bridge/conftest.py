"""Fixtures for the SIP trunk edge tests (the harness itself is in edge_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.sbc_bridge.edge_support import Edge, build_edge


@pytest.fixture
async def make_edge() -> AsyncIterator[Callable[..., Awaitable[Edge]]]:
    started: list[Edge] = []

    async def factory(**kwargs: Any) -> Edge:
        edge = build_edge(**kwargs)
        await edge.bridge.start()
        started.append(edge)
        return edge

    yield factory
    for edge in started:
        await edge.bridge.stop()
