"""Run ``python -m helpline.voice.probe`` in another process: receive-side RTP timing from the kernel.

A receiver inside the test's own event loop stamps packets when its callback runs, so a busy test loop
looks like jitter on the wire. The probe process stamps them with SO_TIMESTAMPNS instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

ProbeRun = tuple[list[int], "asyncio.Future[dict[str, Any]]"]


@asynccontextmanager
async def run_probe(count: int, duration: float, host: str = "127.0.0.1") -> AsyncIterator[ProbeRun]:
    """Bind ``count`` ports in a probe process; yields the ports and a future of its JSON report."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "helpline.voice.probe", "--host", host, "--count", str(count),
        "--duration", str(duration), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        limit=1 << 24,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        async with asyncio.timeout(10):
            ports = json.loads(await proc.stdout.readline())["ports"]

        async def result() -> dict[str, Any]:
            assert proc.stdout is not None
            async with asyncio.timeout(duration + 10):
                line = await proc.stdout.readline()
            return dict(json.loads(line))

        yield ports, asyncio.ensure_future(result())
    finally:
        if proc.returncode is None:
            proc.stdin.close()
            async with asyncio.timeout(duration + 10):
                await proc.wait()
