"""Fixtures for the media engine tests: an engine on 127.0.0.1, raw UDP peers, the RTP probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from helpline.voice import MediaEngine, PromptCache
from tests.voice.media_support import HOST, Peer


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every async test here runs on the default loop and on uvloop (unless its marker picks one)."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


_port_base = [30000]


def _next_range(size: int = 200) -> tuple[int, int]:
    low = _port_base[0]
    _port_base[0] = low + size if low + size < 60000 else 30000
    return low, low + size - 1


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[MediaEngine]:
    """An engine with short supervision times so timeouts and learning are testable."""
    low, high = _next_range()
    prompts = PromptCache(tmp_path / "prompts")
    media = MediaEngine(HOST, low, high, prompts, media_timeout=0.6, learn_window=0.4)
    yield media
    await media.close()


@pytest.fixture
async def make_peer() -> AsyncIterator[Callable[[], Any]]:
    """Factory of ``Peer`` endpoints on ephemeral ports, closed after the test."""
    peers: list[Peer] = []

    async def make() -> Peer:
        _, peer = await asyncio.get_running_loop().create_datagram_endpoint(Peer, local_addr=(HOST, 0))
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


