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
        """Re-read changed, new and removed files; returns whether anything changed."""
        mtimes = self._scan()
        changed = [p for p, m in mtimes.items() if self._mtimes.get(p) != m]
        removed = [p for p in self._good if p not in mtimes]
        if not changed and not removed and self._mtimes:
            return False
        self._mtimes = mtimes
        candidates = {p: v for p, v in self._good.items() if p not in removed}
        fresh = {path: parse_file(path) for path in changed}
        candidates.update(fresh)
        check_flows(list(candidates.values()))
        for path, parsed in fresh.items():
            if is_loadable(parsed):
                self.problems.pop(path, None)
                continue
            lines = [str(p) for p in parsed.problems if p.is_error]
            self.problems[path] = lines
            kept = path in self._good
            log.error(
                "flow file rejected",
                extra={"path": str(path), "problems": lines, "kept_last_good": kept},
            )
            if kept:
                candidates[path] = self._good[path]
            else:
                del candidates[path]
        if not removed and not any(is_loadable(p) for p in fresh.values()) and self._flows:
            return True  # nothing new got in: keep serving the current generation as it is
        # a kept or fresh file may now miss a subflow that a rejected file used to provide: recheck once
        check_flows(list(candidates.values()))
        self._good = {p: v for p, v in candidates.items() if is_loadable(v)}
        self._flows = build_flows(self._good.values())
        log.info("flows loaded", extra={"flows": ",".join(sorted(self._flows))})
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll for changes until cancelled; parsing runs in a thread so the loop never blocks."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:
                log.exception("flow reload failed; serving the previous flows")
