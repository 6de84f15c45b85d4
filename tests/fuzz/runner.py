"""Run fuzz targets as subprocesses for a bounded time and say what each found.

``scripts/fuzz [seconds-per-target] [target ...]`` runs this (inside a private network namespace, as
``rtp_session`` binds RTP ports); the bounded CI test calls :func:`run_target` for each target. A run
fails when libFuzzer wrote a crash, timeout or out-of-memory input, or when the target died without
running (an import error is a failure too, not a pass).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.harness import TARGETS, work_dir

REPO = Path(__file__).resolve().parents[2]
STARTUP_ALLOWANCE = 60  # seconds for imports and instrumentation on top of libFuzzer's own budget

_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_STAT = re.compile(r"stat::(\w+):\s+(\d+)")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one bounded run of one target did."""

    target: str
    returncode: int
    log: Path
    artifact: Path | None  # the crashing / hanging / memory-hungry input libFuzzer saved
    executions: int
    exec_per_sec: int
    coverage: int  # libFuzzer "cov": instrumented edges reached
    features: int  # libFuzzer "ft"
    corpus: int
    slowest_unit_s: int
    peak_rss_mb: int

    @property
    def ok(self) -> bool:
        """Ran to its time limit with nothing found."""
        return self.returncode == 0 and self.artifact is None and self.executions > 0

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"FAILED (exit {self.returncode})"
        line = (f"{self.target:12s} {verdict}: {self.executions} execs ({self.exec_per_sec}/s), "
                f"cov {self.coverage}, ft {self.features}, corpus {self.corpus}, "
                f"slowest input {self.slowest_unit_s} s, peak rss {self.peak_rss_mb} MB")
        if self.artifact is not None:
            line += (f"\n  input: {self.artifact}"
                     f"\n  reproduce: .venv/bin/python -m tests.fuzz.{self.target} {self.artifact}")
        if not self.ok:
            line += f"\n  log: {self.log}"
        return line


def parse_log(target: str, returncode: int, log: Path) -> Outcome:
    """Read libFuzzer's progress lines and final statistics from a run's log."""
    text = log.read_text(errors="replace")
    artifact = _ARTIFACT.findall(text)
    status = _STATUS.findall(text)
    stats = {name: int(value) for name, value in _STAT.findall(text)}
    last = status[-1] if status else ("0", "0", "0", "0")
    return Outcome(
        target=target, returncode=returncode, log=log,
        artifact=Path(artifact[-1]) if artifact else None,
        executions=stats.get("number_of_executed_units", int(last[0])),
        exec_per_sec=stats.get("average_exec_per_sec", 0),
        coverage=int(last[1]), features=int(last[2]), corpus=int(last[3]),
        slowest_unit_s=stats.get("slowest_unit_time_sec", 0), peak_rss_mb=stats.get("peak_rss_mb", 0),
    )


def run_target(
    target: str, seconds: int, *, work: Path | None = None, flags: tuple[str, ...] = ()
) -> Outcome:
    """Fuzz ``target`` for ``seconds``; the subprocess is killed if it overruns by ``STARTUP_ALLOWANCE``."""
    work = work or work_dir()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{target}.log"
    env = {**os.environ, "HELPLINE_FUZZ_WORK": str(work)}
    command = [sys.executable, "-m", f"tests.fuzz.{target}", f"-max_total_time={seconds}", *flags]
    with log.open("wb") as out:
        try:
            returncode = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        timeout=seconds + STARTUP_ALLOWANCE, check=False).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\nrunner: killed after {seconds + STARTUP_ALLOWANCE} s\n".encode())
            returncode = -9
    return parse_log(target, returncode, log)


def main(argv: list[str]) -> int:
    """``[seconds-per-target] [target ...]``: run each in turn, print a summary, 1 if any failed."""
    seconds = int(argv[0]) if argv and argv[0].isdigit() else 60
    targets = [a for a in argv if not a.isdigit()] or list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        print(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    print(f"fuzzing {len(targets)} targets for {seconds} s each; work dir {work_dir()}", flush=True)
    outcomes = []
    for target in targets:
        outcome = run_target(target, seconds)
        print(outcome.summary(), flush=True)
        outcomes.append(outcome)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        print(f"{len(failed)} of {len(outcomes)} targets failed", file=sys.stderr)
        for outcome in failed:
            if outcome.artifact is not None:
                print(f"crash input: {outcome.artifact}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
