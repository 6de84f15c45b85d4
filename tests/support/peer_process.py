"""Ending a peer subprocess (a softphone driven over stdin/stdout) politely, then firmly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


async def stop_peer(
    proc: asyncio.subprocess.Process | None, reader: asyncio.Task[None] | None, ask: Callable[[], None]
) -> None:
    """``ask`` the peer to quit, kill it after 5 s, then stop reading its output."""
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(Exception):
            ask()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    if reader is not None:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
