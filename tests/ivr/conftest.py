"""Shared helpers for IVR tests: write a small flow to a temp dir and run it on the simulator."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

FLOW_HEAD = """\
flow:
  id: {id}
  entry: {entry}
"""


@pytest.fixture
def write_flow(tmp_path: Path) -> Callable[..., Path]:
    def write(body: str, *, name: str = "t", entry: str = "start", head: str = "") -> Path:
        path = tmp_path / f"{name}.yaml"
        text = FLOW_HEAD.format(id=name, entry=entry) + head + textwrap.dedent(body)
        path.write_text(text)
        return path

    return write
