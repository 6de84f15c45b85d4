"""``helpline flow validate`` and ``helpline flow simulate``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from helpline.ivr.simulate import describe_event
from helpline.ivr.snapshot import FlowInvalid
from helpline.ivr.testing import arun_flow_test
from helpline.ivr.validate import validate_paths


def add_flow_commands(subparsers: Any) -> None:
    """Add the ``flow`` command group to the top-level CLI's subparsers.

    Each leaf sets ``func`` (``(args) -> int`` exit code) on the namespace.
    """
    flow = subparsers.add_parser("flow", help="validate and simulate IVR flows")
    commands = flow.add_subparsers(dest="flow_command", required=True)

    check = commands.add_parser("validate", help="report every problem as file:line:col")
    check.add_argument("paths", nargs="+", metavar="PATH", help="flow files or directories")
    check.add_argument("--quiet-warnings", action="store_true", help="print errors only")
    check.set_defaults(func=cmd_validate)

    sim = commands.add_parser("simulate", help="run a flow offline and print the caller's transcript")
    sim.add_argument("file", metavar="FILE")
    sim.add_argument("--input", action="append", default=[], metavar="DIGITS",
                     help="digits typed at the next input request ('' = silence); repeatable")
    sim.add_argument("--at", help='clock, e.g. "2026-12-24T17:59 Europe/Berlin"')
    sim.add_argument("--var", action="append", default=[], metavar="K=V", help="set a variable")
    sim.add_argument("--caller", default="+15550100001")
    sim.add_argument("--did", default="+15550100000")
    sim.add_argument("--transfer", default="connected",
                     choices=["connected", "busy", "no_answer", "failed"])
    sim.add_argument("--enqueue", default="timeout",
                     choices=["answered", "timeout", "full", "closed", "left"])
    sim.set_defaults(func=cmd_simulate)


def cmd_validate(args: argparse.Namespace) -> int:
    problems = validate_paths(args.paths)
    for problem in problems:
        if problem.is_error or not args.quiet_warnings:
            print(problem)
    errors = sum(p.is_error for p in problems)
    print(f"{errors} error(s), {len(problems) - errors} warning(s)", file=sys.stderr)
    return 1 if errors else 0


def _variables(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--var wants K=V, got {pair!r}")
        out[key] = value
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        variables = _variables(args.var)
        transcript = asyncio.run(arun_flow_test(
            args.file, args.input, at=args.at, variables=variables, caller=args.caller, did=args.did,
            transfer=args.transfer, enqueue=args.enqueue,
        ))
    except FlowInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for event in transcript.events:
        line = describe_event(event)
        if line is not None:
            print(line)
    if transcript.channel.unused_inputs:
        print(f"(unused input: {' '.join(transcript.channel.unused_inputs)})")
    return 0 if transcript.outcome != "error" else 3


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m helpline.ivr.cli flow ...``) for use before the CLI is wired."""
    parser = argparse.ArgumentParser(prog="helpline")
    add_flow_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
