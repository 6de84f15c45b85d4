"""A real ``helpline serve`` per module, on fixed ports inside the test run's private network namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import RunningServer, start_server
from tests.support.sipp import require_binary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.peer)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_binary("sipp")
    require_binary("espeak-ng")
    # The transfer tests send callers to numbers: allowed here by policy, refused by default.
    srv = start_server(
        tmp_path_factory.mktemp("helpline"), extra="[security.outbound]\nrefer_to_numbers = true\n"
    )
    yield srv
    code = srv.stop()
    problems = [
        line for line in srv.log_lines()
        if line.get("level") in ("error", "critical") or "Traceback" in str(line.get("raw", ""))
    ]
    assert code == 0, f"helpline serve exited {code}"
    assert not problems, f"server logged errors: {problems[:5]}"


@pytest.fixture
def scenarios() -> Path:
    return Path(__file__).resolve().parents[1] / "scenarios"
