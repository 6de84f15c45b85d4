"""Running one ``helpline`` command group through the installed entry point, as an operator would."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

HELPLINE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "helpline"


@dataclass
class CliGroup:
    """``helpline <group> ... --config <config>``; ``db`` is the SQLite file the configuration uses."""

    group: str
    config: Path
    db: Path

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HELPLINE), self.group, *args, "--config", str(self.config)],
            input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def refused(self, *args: str, stdin: str | None = None) -> str:
        """stderr of a command that must be refused with status 2."""
        result = self(*args, stdin=stdin)
        assert result.returncode == 2, (result.stdout, result.stderr)
        return result.stderr
