"""Serving an app over real HTTP for the API tests, and signing test clients in."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import uvicorn
from starlette.applications import Starlette

from helpline.store import Store
from helpline.store.users import StoredUser
from helpline.web.auth import Auth, hash_password


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on an ephemeral 127.0.0.1 port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    await task
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()


async def bearer_headers(
    store: Store, username: str = "test-admin", role: str = "admin", *, agent_extension: str | None = None
) -> dict[str, str]:
    """Create a user and an API token for it; the headers a client sends to act as that user."""
    user = await add_user(store, username, role, agent_extension=agent_extension)
    token = await Auth(store).issue_token(user, timedelta(hours=1), actor="test")
    return {"Authorization": f"Bearer {token}"}


async def add_user(
    store: Store, username: str, role: str, password: str = "test-password", *,
    agent_extension: str | None = None,
) -> StoredUser:  # fmt: skip
    return await store.users.create(
        username, role, await hash_password(password), agent_extension=agent_extension
    )
