"""``helpline security bans|unban``: see and lift the SIP edge's bans from a shell.

The commands act on the ``bans`` table; a running service polls it every second, so a lift reaches its
guard without a restart. Lifts are audited with the actor ``cli:<os user>``. An unknown or already
ended ban is a refusal (status 2) naming the key.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from helpline.cli_support import EXIT_FAILED, EXIT_REFUSED, Refused, cli_actor, run_on_store
from helpline.config import Settings
from helpline.store import Store
from helpline.store.bans import BanRecord, ban_key

logger = logging.getLogger(__name__)


def add_security_commands(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], Any]) -> None:
    """Add the ``security`` command group to the top-level CLI's subparsers."""
    security = subparsers.add_parser("security", help="bans and locks of the SIP edge")
    commands = security.add_subparsers(dest="security_command", required=True)

    bans = with_config(commands.add_parser("bans", help="list the active bans and locks"))
    bans.add_argument("--all", action="store_true", help="also the lifted and expired ones")
    bans.add_argument("--json", action="store_true", help="JSON instead of a table")
    bans.set_defaults(func=cmd_bans)

    unban = with_config(commands.add_parser("unban", help="lift a source's ban or an extension's lock"))
    unban.add_argument("key", metavar="IP_OR_USER", help="the banned IP address or the locked extension")
    unban.set_defaults(func=cmd_unban)


def _command(work: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn refusals into ``helpline: FIELD: message`` (status 2), database trouble into status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return work(args)
        except Refused as exc:
            where = f"{exc.field}: " if exc.field else ""
            print(f"helpline: {where}{exc.message}", file=sys.stderr)
            return EXIT_REFUSED
        except (SQLAlchemyError, OSError) as exc:
            logger.debug("security command failed", exc_info=True)
            print(f"helpline: database error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    run.__doc__ = work.__doc__
    return run


def _when(at: datetime | None, empty: str) -> str:
    return empty if at is None else at.strftime("%Y-%m-%d %H:%M:%SZ")


def _status(ban: BanRecord, now: datetime) -> str:
    if ban.lifted_at is not None:
        return "expired" if ban.lifted_by == "expiry" else f"lifted by {ban.lifted_by}"
    return "active" if ban.active_at(now) else "expired"


def _table(bans: Sequence[BanRecord], now: datetime) -> list[str]:
    rows = [("KEY", "KIND", "REASON", "SINCE", "UNTIL", "STATUS")]
    rows += [(b.key, b.kind, b.reason, _when(b.since, "-"), _when(b.until, "never"), _status(b, now))
             for b in bans]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


@_command
def cmd_bans(args: argparse.Namespace) -> int:
    """The active bans (with --all every one the table holds), as a table or as JSON."""

    async def work(store: Store, _settings: Settings) -> Sequence[BanRecord]:
        return await store.bans.list(all=args.all)

    bans = run_on_store(args, work)
    if args.json:
        print(json.dumps([b.model_dump(mode="json") for b in bans], indent=2))
        return 0
    if not bans:
        print("no bans" if args.all else "no active bans")
        return 0
    for line in _table(bans, datetime.now(UTC)):
        print(line)
    return 0


@_command
def cmd_unban(args: argparse.Namespace) -> int:
    """Lift the active ban of an IP address, or unlock an extension; the running service follows."""
    key = ban_key(args.key)
    if not key:
        raise Refused("key", "must not be empty")

    async def work(store: Store, _settings: Settings) -> BanRecord:
        ban = await store.bans.get(key)
        actor = cli_actor()
        if ban is None or not await store.bans.lift(key, actor):
            raise Refused("key", f"no active ban or lock for {key!r}")
        await store.audit.append(
            "unban", actor=actor, target_type="ban", target_id=key,
            detail={"kind": ban.kind, "reason": ban.reason, "since": ban.since.isoformat()},
        )  # fmt: skip
        return ban

    ban = run_on_store(args, work)
    print(f"{'unlocked extension' if ban.kind == 'user' else 'unbanned'} {key}")
    return 0
