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


CHILD = "flow: {id: child, entry: r}\nnodes:\n  - {id: r, type: return, outcome: done}\n"
PARENT = ("flow: {{id: parent, version: {v}, entry: s}}\nnodes:\n"
          "  - {{id: s, type: subflow, flow: {child}, next: {{done: h}}}}\n  - {{id: h, type: hangup}}\n")


def _rejections(caplog: pytest.LogCaptureFixture, path: Path) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "flow file rejected"
            and getattr(r, "path", None) == str(path)]


def test_a_parent_dropped_for_its_subflow_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parent_file, child_file = tmp_path / "parent.yaml", tmp_path / "child.yaml"
    _write(child_file, CHILD, 0)
    _write(parent_file, PARENT.format(v=1, child="child"), 0)
    registry = FlowRegistry(tmp_path)
    assert registry.ids() == ["child", "parent"] and registry.problems == {}
    with caplog.at_level(logging.ERROR, logger="helpline.ivr.registry"):
        child_file.unlink()
        assert registry.reload()
    assert registry.ids() == []
    assert any("unknown subflow id 'child'" in line for line in registry.problems[parent_file])
    (record,) = _rejections(caplog, parent_file)
    assert record.kept_last_good is False  # type: ignore[attr-defined]
    # the subflow comes back: the parent, unchanged on disk, is taken in again
    _write(child_file, CHILD, 30)
    assert registry.reload()
    assert registry.ids() == ["child", "parent"] and registry.problems == {}


def test_a_changed_parent_whose_new_subflow_is_invalid_keeps_its_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parent_file, child_file = tmp_path / "parent.yaml", tmp_path / "child.yaml"
    _write(child_file, CHILD, 0)
    _write(parent_file, PARENT.format(v=1, child="child"), 0)
    registry = FlowRegistry(tmp_path)
    served = registry.get("parent")
    with caplog.at_level(logging.ERROR, logger="helpline.ivr.registry"):
        _write(tmp_path / "child2.yaml", CHILD.replace("child", "child2").replace("done", "d one"), 0)
        _write(parent_file, PARENT.format(v=2, child="child2"), 10)
        assert registry.reload()
    assert registry.get("parent") is served and registry.ids() == ["child", "parent"]
    assert any("subflow 'child2' is invalid" in line for line in registry.problems[parent_file])
    assert registry.problems[tmp_path / "child2.yaml"]
    (record,) = _rejections(caplog, parent_file)
    assert record.kept_last_good is True  # type: ignore[attr-defined]
    status = {s.path: s for s in registry.catalog()}
    assert status[str(tmp_path / "child2.yaml")].flow_id is None
