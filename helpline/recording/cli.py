"""``helpline recordings``: verify (offline), export, sweep, erase, hold, release and reconcile.

Everything but ``verify`` works on the configured store and storage, like the service does, and is
audited with the actor ``cli:<os user>``. ``verify`` needs only the files and the public key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from helpline.cli_support import EXIT_REFUSED, Refused, cli_actor, run_on_store
from helpline.config import Settings
from helpline.recording.library import LibraryError, RecordingLibrary
from helpline.recording.reconcile import ReconcileReport, reconcile
from helpline.recording.retention import RetentionReport, erase_phone, sweep
from helpline.recording.setup import RecordingLayout, open_library
from helpline.recording.verify_cli import add_verify_command
from helpline.store import Store
from helpline.store.recordings import RecordingFilters

EXPORT_LIMIT = 1_000_000  # the command line may export a whole archive


def add_recording_commands(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], Any]) -> None:
    group = subparsers.add_parser("recordings", help="verify, export, sweep and erase call recordings")
    commands = group.add_subparsers(dest="recordings_command", required=True)
    add_verify_command(commands, with_config)

    export = with_config(commands.add_parser(
        "export", help="write a zip of WAV + metadata + manifests + consent evidence that verify accepts"))
    export.add_argument("--out", type=Path, required=True, metavar="ZIP")
    export.add_argument("--id", dest="ids", action="append", default=[], metavar="RECORDING_ID")
    export.add_argument("--call-id")
    export.add_argument("--caller", help="E.164 number")
    export.add_argument("--agent")
    export.add_argument("--queue")
    export.add_argument("--since", type=_utc, help="ISO 8601 time")
    export.add_argument("--until", type=_utc, help="ISO 8601 time")
    export.add_argument("--all", action="store_true", help="every recording whose media still exists")
    export.set_defaults(func=_command(cmd_export))

    sweeper = with_config(commands.add_parser(
        "sweep", help="delete expired recordings now (what no legal hold or retention floor keeps)"))
    sweeper.add_argument("--json", action="store_true")
    sweeper.set_defaults(func=_command(cmd_sweep))

    erase = with_config(commands.add_parser(
        "erase", help="a data subject's erasure request: delete the recordings of a phone number"))
    erase.add_argument("--phone", required=True, help="E.164 number")
    erase.add_argument("--json", action="store_true")
    erase.set_defaults(func=_command(cmd_erase))

    hold = with_config(commands.add_parser("hold", help="put a recording under legal hold"))
    hold.add_argument("recording_id")
    hold.add_argument("--reason", required=True)
    hold.set_defaults(func=_command(cmd_hold))

    release = with_config(commands.add_parser("release", help="release a recording's legal hold"))
    release.add_argument("recording_id")
    release.set_defaults(func=_command(cmd_release))

    reconciler = with_config(commands.add_parser(
        "reconcile", help="proof of recording: recorded calls against their recordings (1 on findings)"))
    reconciler.add_argument("--since", type=_utc, required=True, help="ISO 8601 time (calls started from)")
    reconciler.add_argument("--until", type=_utc, help="ISO 8601 time (calls started before; default now)")
    reconciler.add_argument("--short-tolerance", type=float, default=0.05, metavar="SHARE",
                            help="how much shorter than the call a recording may be (default 0.05)")
    reconciler.add_argument("--silent-share", type=float, default=0.9, metavar="SHARE",
                            help="share of silent one-second windows that makes a channel one-sided")
    reconciler.add_argument("--energy-floor", type=float, default=-50.0, metavar="DBFS",
                            help="a window below this level is silent (default -50 dBFS)")
    reconciler.add_argument("--settle", type=float, default=300.0, metavar="SECONDS",
                            help="leave calls that ended less than this long ago for the next run")
    reconciler.add_argument("--json", action="store_true")
    reconciler.set_defaults(func=_command(cmd_reconcile))


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _command(work: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return work(args)
        except (Refused, LibraryError) as exc:
            field = getattr(exc, "field", None)
            message = getattr(exc, "message", str(exc))
            print(f"helpline: {field}: {message}" if field else f"helpline: {message}", file=sys.stderr)
            return EXIT_REFUSED

    return run


async def _library(store: Store, settings: Settings) -> RecordingLibrary:
    layout = RecordingLayout.of(settings.data_dir, settings.recording)
    return await asyncio.to_thread(open_library, store, layout, settings.recording)


def cmd_export(args: argparse.Namespace) -> int:
    async def work(store: Store, settings: Settings) -> tuple[Path, list[str]]:
        library = await _library(store, settings)
        ids = list(args.ids)
        if not ids:
            filters = RecordingFilters(call_id=args.call_id, caller=args.caller, agent=args.agent,
                                       queue=args.queue, since=args.since, until=args.until)
            if filters == RecordingFilters() and not args.all:
                raise Refused("--all", "name recordings (--id, --call-id, --caller, ...) or pass --all")
            ids = await library.exportable_ids(filters, limit=EXPORT_LIMIT)
        if not ids:
            raise Refused(None, "no stored recording matches")
        out = await library.export(ids, args.out)
        await store.audit.append("export", actor=cli_actor(), target_type="recording",
                                 target_id=ids[0] if len(ids) == 1 else None,
                                 detail={"recordings": ids, "file": str(out)})
        return out, ids

    out, ids = run_on_store(args, work)
    print(f"exported {len(ids)} recording(s) to {out}")
    return 0


def _print_report(report: RetentionReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=1))
        return
    for recording_id in report.deleted:
        print(f"deleted {recording_id}")
    for kept in report.kept:
        until = f" until {kept.until}" if kept.until else ""
        print(f"kept    {kept.recording_id}: {kept.reason}{until}")
    for failed in report.failed:
        print(f"FAILED  {failed.recording_id}: {failed.reason}")
    for note in report.notes:
        print(f"note: {note}")


def _retention_command(args: argparse.Namespace, action: str,
                       run: Callable[[Store, RecordingLibrary], Awaitable[RetentionReport]]) -> int:
    """Run a sweep or an erasure, audit it with its report, print the report; 1 if anything failed."""
    async def work(store: Store, settings: Settings) -> RetentionReport:
        report = await run(store, await _library(store, settings))
        await store.audit.append(action, actor=cli_actor(), detail=report.as_dict())
        return report

    report = run_on_store(args, work)
    _print_report(report, args.json)
    return 1 if report.failed else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    return _retention_command(args, "retention_sweep",
                              lambda store, library: sweep(store, library, actor=cli_actor()))


def cmd_erase(args: argparse.Namespace) -> int:
    return _retention_command(args, "erase", lambda store, library: erase_phone(
        store, library, args.phone, actor=cli_actor()))


def cmd_hold(args: argparse.Namespace) -> int:
    async def work(store: Store, settings: Settings) -> None:
        library = await _library(store, settings)
        await library.hold(args.recording_id, cli_actor(), args.reason)
        await store.audit.append("hold", actor=cli_actor(), target_type="recording",
                                 target_id=args.recording_id, detail={"reason": args.reason})

    run_on_store(args, work)
    print(f"{args.recording_id} is under legal hold")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    async def work(store: Store, settings: Settings) -> None:
        library = await _library(store, settings)
        await library.release(args.recording_id, cli_actor())
        await store.audit.append("release", actor=cli_actor(), target_type="recording",
                                 target_id=args.recording_id)

    run_on_store(args, work)
    print(f"{args.recording_id}: legal hold released")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    until = args.until or datetime.now(UTC)
    if until <= args.since:
        raise Refused("--until", "must be later than --since")
    if not 0 <= args.short_tolerance < 1:
        raise Refused("--short-tolerance", f"{args.short_tolerance} is not a share within 0..1 (1 excluded)")
    if args.settle < 0:
        raise Refused("--settle", f"{args.settle} is not a number of seconds >= 0")
    if not 0 < args.silent_share <= 1:
        raise Refused("--silent-share", f"{args.silent_share} is not a share within 0..1 (0 excluded)")

    async def work(store: Store, settings: Settings) -> ReconcileReport:
        library = await _library(store, settings)
        report = await reconcile(store, library, since=args.since, until=until,
                                 short_tolerance=args.short_tolerance, silent_share=args.silent_share,
                                 energy_floor_dbfs=args.energy_floor,
                                 settle=timedelta(seconds=args.settle))
        await store.audit.append("reconcile", actor=cli_actor(), detail=report.as_dict())
        return report

    report = run_on_store(args, work)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        for finding in report.findings:
            where = f"call {finding.call_id} recording {finding.recording_id or '-'}"
            print(f"{finding.code.upper():<10} {where}: {finding.message}")
        counts = ", ".join(f"{n} {code}" for code, n in report.counts().items() if n)
        print(f"{report.calls} call(s) from {report.since.isoformat()} to {report.until.isoformat()}: "
              f"{report.in_scope} recorded, {report.recordings} recording(s), {report.ok} ok, "
              f"{report.deleted} deleted, {report.unsettled} not settled yet; "
              f"findings: {counts or 'none'}")
    return 1 if report.findings else 0
