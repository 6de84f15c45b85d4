"""Running real SIPp from tests: build the command line, run it with a timeout, read its verdict.

Used by the SIP edge tests and the end-to-end tests that drive ``helpline serve``. A missing binary
fails the test (the ``peer`` marker's promise), it never skips.
"""

from __future__ import annotations

import asyncio
import csv
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def require_binary(name: str) -> str:
    """Absolute path of ``name`` on PATH; fails the test (not skip) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required binary {name!r} is not installed (apt-get install {name})")
    return path


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run reported: exit code (0 = every call succeeded), output and statistics."""

    returncode: int
    stdout: str
    stderr: str
    stats: dict[str, str] = field(default_factory=dict)
    errors: str = ""
    messages: str = ""

    def stat(self, name: str) -> int:
        """A cumulative counter from ``-trace_stat`` (e.g. ``SuccessfulCall(C)``), 0 when absent."""
        value = self.stats.get(name, "0") or "0"
        return int(value)

    def explain(self) -> str:
        return (
            f"sipp exit {self.returncode}\n--- stderr\n{self.stderr[-2000:]}"
            f"\n--- errors\n{self.errors[-3000:]}\n--- messages\n{self.messages[-6000:]}"
        )


def sipp_command(
    scenario: Path | str,
    target: tuple[str, int],
    *,
    transport: str = "u1",
    local_ip: str | None = None,
    local_port: int | None = None,
    service: str | None = None,
    calls: int = 1,
    timeout_s: int = 20,
    keys: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The SIPp argument list for ``scenario`` against ``target`` (exits after ``calls`` calls).

    ``keys`` become ``-key name value`` (``[name]`` in the scenario). With ``workdir`` the
    statistics, unexpected-message log and message trace are written there.
    """
    cmd = [
        require_binary("sipp"),
        f"{target[0]}:{target[1]}",
        "-sf",
        str(scenario),
        "-t",
        transport,
        "-m",
        str(calls),
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-nostdin",
        "-nr",
    ]
    if local_ip:
        cmd += ["-i", local_ip]
    if local_port is not None:
        cmd += ["-p", str(local_port)]
    if service:
        cmd += ["-s", service]
    for name, value in (keys or {}).items():
        cmd += ["-key", name, value]
    if workdir is not None:
        cmd += [
            "-trace_stat",
            "-stf",
            str(workdir / "stats.csv"),
            "-trace_err",
            "-error_file",
            str(workdir / "errors.log"),
            "-trace_msg",
            "-message_file",
            str(workdir / "messages.log"),
        ]
    return [*cmd, *extra]


def _last_stats_row(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    return {k: (v or "") for k, v in rows[-1].items() if k} if rows else {}


async def run_sipp(
    scenario: Path | str,
    target: tuple[str, int],
    *,
    wait_s: float = 30.0,
    **options: object,
) -> SippResult:
    """Run SIPp to completion (killed after ``wait_s``) and collect its verdict and statistics."""
    with tempfile.TemporaryDirectory(prefix="sipp-") as tmp:
        workdir = Path(tmp)
        cmd = sipp_command(scenario, target, workdir=workdir, **options)  # type: ignore[arg-type]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(wait_s):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return SippResult(-9, out.decode(errors="replace"), err.decode(errors="replace") + "\n[killed]")
        read = lambda name: (workdir / name).read_text(errors="replace") if (workdir / name).exists() else ""  # noqa: E731
        return SippResult(
            returncode=proc.returncode if proc.returncode is not None else -1,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            stats=_last_stats_row(workdir / "stats.csv"),
            errors=read("errors.log"),
            messages=read("messages.log"),
        )
