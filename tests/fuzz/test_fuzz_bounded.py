"""Every fuzz target, fuzzed for a few seconds in CI: no crash, hang or runaway memory.

Each target runs as its own subprocess (libFuzzer owns the process and exits on a find) with a fresh
work directory, seeded from ``corpus/<target>/``; about a minute in all. The longer run is
``scripts/fuzz 3600``. A failure names the saved input and how to reproduce it; once understood and
fixed, copy that input to ``regressions/<target>/`` so ``test_fuzz_regressions`` pins it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.harness import TARGETS
from tests.fuzz.runner import STARTUP_ALLOWANCE, run_target

SECONDS = {"sip_message": 15, "sip_stream": 12, "sdp": 12, "rtp_packet": 6, "rtp_session": 15}
MIN_EXECUTIONS = 200  # a target that hardly ran proves nothing


def test_every_target_has_a_budget() -> None:
    assert sorted(SECONDS) == sorted(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.timeout(max(SECONDS.values()) + STARTUP_ALLOWANCE + 30)
def test_target_survives_bounded_fuzzing(target: str, tmp_path: Path) -> None:
    outcome = run_target(target, SECONDS[target], work=tmp_path)
    log_tail = outcome.log.read_text(errors="replace")[-4000:]
    assert outcome.artifact is None, f"{outcome.summary()}\n{log_tail}"
    assert outcome.returncode == 0, f"{outcome.summary()}\n{log_tail}"
    assert outcome.executions >= MIN_EXECUTIONS, f"{outcome.summary()}\n{log_tail}"
    assert outcome.coverage > 0, f"{outcome.summary()}\n{log_tail}"
