"""Fixtures for the harness self-tests: SIPp as a UAS on 127.0.0.1 (run inside scripts/in-netns)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not put the repo on sys.path
    sys.path.insert(0, str(REPO_ROOT))

SCENARIOS = REPO_ROOT / "tests" / "scenarios"


class SippUas:
    """A SIPp UAS subprocess; ``wait()`` returns its exit code (0 = every call succeeded)."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, media_port: int) -> None:
        self.proc = proc
        self.port = port
        self.media_port = media_port

    async def wait(self, timeout: float = 15.0) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()


SippFactory = Callable[..., "asyncio.Future[SippUas]"]


@pytest.fixture
async def sipp_uas(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Start ``sipp`` as a UAS: sipp_uas(scenario="uas_answer.xml" | "-sn uas", transport="udp")."""
    started: list[asyncio.subprocess.Process] = []
    ports = iter(range(15060, 15160, 2))

    async def start(scenario: str = "uas_answer.xml", transport: str = "udp", calls: int = 1) -> SippUas:
        port = next(ports)
        media_port = port + 10000
        scen = ["-sn", "uas"] if scenario == "-sn uas" else ["-sf", str(SCENARIOS / scenario)]
        proc = await asyncio.create_subprocess_exec(
            "sipp",
            *scen,
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            "u1" if transport == "udp" else "t1",
            "-rtp_echo",
            "-mp",
            str(media_port),
            "-m",
            str(calls),
            "-nostdin",
            "-s",
            "+18005550100",
            "-trace_err",
            "-error_file",
            str(tmp_path / f"sipp-{port}-errors.log"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(tmp_path / f"sipp-{port}.stderr").open("wb"),
        )
        started.append(proc)
        await asyncio.sleep(0.3)  # SIPp binds its sockets right after start-up
        return SippUas(proc, port, media_port)

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
