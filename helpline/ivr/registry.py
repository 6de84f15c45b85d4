"""The live set of flows: loaded from a directory, validated, hot-reloaded, last good version kept."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from helpline.ivr.loader import ParsedFlow, parse_file
from helpline.ivr.model import Flow
from helpline.ivr.snapshot import build_flows, is_loadable
from helpline.ivr.validate import check_flows, expand_paths

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FlowStatus:
    """One flow file as the registry sees it. ``flow_id`` is None when no version of it serves."""

    flow_id: str | None
    version: str | None
    path: str
    description: str
    problems: tuple[str, ...]


class FlowRegistry:
    """Serves immutable :class:`Flow` snapshots by id.

    Each (re)load builds a new generation of snapshots; a running call keeps the one it started with.
    When a changed file is invalid, its problems are logged and the last good version of that file
    stays in service.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._good: dict[Path, ParsedFlow] = {}
        self._mtimes: dict[Path, float] = {}
        self._flows: dict[str, Flow] = {}
        self.problems: dict[Path, list[str]] = {}
        self.reload()

    def get(self, flow_id: str) -> Flow | None:
        return self._flows.get(flow_id)

    def ids(self) -> list[str]:
        return sorted(self._flows)

    def catalog(self) -> list[FlowStatus]:
        """What an operator needs to know: every flow in service with its version and file, and every
        file whose latest change was rejected (with its problems and whether an older version serves)."""
        serving = {f.source: f for f in self._flows.values()}
        out = [
            FlowStatus(flow.id, flow.version, str(flow.source), flow.document.flow.description or "",
                       tuple(self.problems.get(flow.source, ())))
            for flow in sorted(self._flows.values(), key=lambda f: f.id)
        ]
        out += [
            FlowStatus(None, None, str(path), "", tuple(problems))
            for path, problems in sorted(self.problems.items())
            if path not in serving
        ]
        return out

    def _scan(self) -> dict[Path, float]:
        out: dict[Path, float] = {}
        for path in expand_paths([self.directory]):
            try:
                out[path] = path.stat().st_mtime
            except OSError:
                continue
        return out

    def reload(self) -> bool:
        """Re-read changed, new and removed files; returns whether anything changed.

        Files rejected last time are read again whenever anything changes, since what they were
        missing (a subflow) may just have arrived.
        """
        mtimes = self._scan()
        changed = [p for p, m in mtimes.items() if self._mtimes.get(p) != m]
        removed = [p for p in self._good if p not in mtimes]
        for path in [p for p in self.problems if p not in mtimes]:
            del self.problems[path]
        if not changed and not removed and self._mtimes:
            return False
        self._mtimes = mtimes
        retry = [p for p in self.problems if p in mtimes and p not in changed]
        candidates = {p: v for p, v in self._good.items() if p not in removed}
        candidates.update({path: parse_file(path) for path in [*changed, *retry]})
        self._settle(candidates)
        if candidates.keys() == self._good.keys() and all(v is self._good[p] for p, v in candidates.items()):
            return True  # nothing new got in: keep serving the current generation as it is
        self._good = candidates
        self._flows = build_flows(self._good.values())
        log.info("flows loaded", extra={"flows": ",".join(sorted(self._flows))})
        return True

    def _settle(self, candidates: dict[Path, ParsedFlow]) -> None:
        """Check ``candidates`` together until every one is loadable.

        A file that fails (its own errors, or a subflow that is missing or invalid in this set) is
        rejected: logged and listed in :attr:`problems`, and replaced by its last good version when
        there is one, else left out. Each replacement or removal can make another file fail, so the
        set is checked again; it shrinks or falls back each round, so this ends.
        """
        for path in candidates:
            self.problems.pop(path, None)
        while True:
            check_flows(list(candidates.values()))
            failing = [path for path, parsed in candidates.items() if not is_loadable(parsed)]
            if not failing:
                return
            for path in failing:
                parsed = candidates.pop(path)
                last_good = self._good.get(path)
                kept = last_good is not None and last_good is not parsed
                lines = [str(p) for p in parsed.problems if p.is_error]
                self.problems[path] = lines
                log.error(
                    "flow file rejected",
                    extra={"path": str(path), "problems": lines, "kept_last_good": kept},
                )
                if kept and last_good is not None:
                    candidates[path] = last_good

    async def watch(self, interval: float = 1.0) -> None:
        """Poll for changes until cancelled; parsing runs in a thread so the loop never blocks."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:
                log.exception("flow reload failed; serving the previous flows")
