"""FlowRegistry: loads valid flows only, hot-reloads, keeps the last good version and old snapshots."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from helpline.ivr.registry import FlowRegistry

GOOD = """\
flow:
  id: hello
  version: {v}
  entry: start
nodes:
  - id: start
    type: hangup
    prompt: {{tts: "version {v}"}}
"""


def _write(path: Path, text: str, bump: int) -> None:
    """Replace atomically with a distinct mtime, so a poll never sees a half-made change."""
    staging = path.with_suffix(".tmp")
    staging.write_text(text)
    stamp = (path.stat().st_mtime if path.exists() else staging.stat().st_mtime) + bump
    os.utime(staging, (stamp, stamp))
    os.replace(staging, path)


async def _eventually(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 5 s")


async def test_hot_reload_keeps_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow_file = tmp_path / "hello.yaml"
    _write(flow_file, GOOD.format(v=1), 0)
    (tmp_path / "broken.yaml").write_text("flow: [\n")
    registry = FlowRegistry(tmp_path)
    first = registry.get("hello")
    assert first is not None and first.version.startswith("1+")
    assert registry.ids() == ["hello"]
    assert registry.problems[tmp_path / "broken.yaml"]

    watcher = asyncio.create_task(registry.watch(interval=0.01))
    try:
        _write(flow_file, GOOD.format(v=2), 10)
        await _eventually(lambda: registry.get("hello") is not first)
        current = registry.get("hello")
        assert current is not None and current.version.startswith("2+")

        with caplog.at_level(logging.ERROR, logger="helpline.ivr.registry"):
            _write(flow_file, GOOD.format(v=3).replace("type: hangup", "type: hangpu"), 20)
            await _eventually(lambda: flow_file in registry.problems)
        assert registry.get("hello") is current
        record = next(r for r in caplog.records if getattr(r, "path", None) == str(flow_file))
        assert record.kept_last_good is True  # type: ignore[attr-defined]
        assert any("hangpu" in line for line in record.problems)  # type: ignore[attr-defined]
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
    # snapshots are immutable: the first one still plays its own version
    assert first.nodes["start"].prompt[0].tts == "version 1"  # type: ignore[attr-defined]


def test_subflows_resolve_within_a_generation(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(
        "flow: {id: child, entry: r}\nnodes:\n  - {id: r, type: return, outcome: done}\n"
    )
    (tmp_path / "parent.yaml").write_text(
        "flow: {id: parent, entry: s}\nnodes:\n"
        "  - {id: s, type: subflow, flow: child, next: {done: h}}\n  - {id: h, type: hangup}\n"
    )
    registry = FlowRegistry(tmp_path)
    parent = registry.get("parent")
    assert parent is not None and parent.library["child"] is registry.get("child")
    (tmp_path / "child.yaml").unlink()
    registry.reload()
    assert registry.get("child") is None and registry.get("parent") is None
    assert parent.library["child"].id == "child"
