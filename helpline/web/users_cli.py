"""``helpline user add|disable|enable|list|passwd|token``: manage the people who sign in, from a shell.

Every change is audited with the actor ``cli:<os user>``. Generated passwords and tokens are printed
once and never stored (only their argon2id hash, or the token's SHA-256). Refusals name the field and
exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from helpline.cli_support import EXIT_FAILED, EXIT_REFUSED, Refused, cli_actor, run_on_store
from helpline.config import Settings
from helpline.store import Store
from helpline.store.users import ROLES, StoredUser, UserError, UserRecord
from helpline.web.auth import Auth, generate_password, hash_password
from helpline.web.users import MIN_PASSWORD_LENGTH

logger = logging.getLogger(__name__)


def add_user_commands(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], Any]) -> None:
    """Add the ``user`` command group to the top-level CLI's subparsers."""
    user = subparsers.add_parser("user", help="manage people who sign in to the web UI and the API")
    commands = user.add_subparsers(dest="user_command", required=True)

    add = with_config(commands.add_parser("add", help="add a user (prints a generated password)"))
    add.add_argument("username", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--display-name", help="shown in the UI (default: NAME)")
    add.add_argument("--agent-extension", metavar="EXT", help="the agent this user is (role agent)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=cmd_add)

    for name, func, text in (
        ("disable", cmd_disable, "disable a user and end their sessions"),
        ("enable", cmd_enable, "enable a disabled user"),
    ):
        command = with_config(commands.add_parser(name, help=text))
        command.add_argument("username", metavar="NAME")
        command.set_defaults(func=func)

    listing = with_config(commands.add_parser("list", help="list users"))
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(func=cmd_list)

    passwd_help = "set a password (generated unless --password-stdin)"
    passwd = with_config(commands.add_parser("passwd", help=passwd_help))
    passwd.add_argument("username", metavar="NAME")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd.set_defaults(func=cmd_passwd)

    token = with_config(commands.add_parser("token", help="issue an API bearer token (printed once)"))
    token.add_argument("username", metavar="NAME")
    token.add_argument("--days", type=float, help="valid for this many days (default [web] api_token_days)")
    token.set_defaults(func=cmd_token)




def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password to set and whether it was generated (and so must be printed)."""
    if not args.password_stdin:
        return generate_password(), True
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Refused("password", f"at least {MIN_PASSWORD_LENGTH} characters")
    return password, False


def _command(work: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn refusals into ``helpline: FIELD: message`` and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return work(args)
        except (Refused, UserError) as exc:
            where = f"{exc.field}: " if exc.field else ""
            print(f"helpline: {where}{exc.message}", file=sys.stderr)
            return EXIT_REFUSED
        except (SQLAlchemyError, OSError) as exc:
            logger.debug("user command failed", exc_info=True)
            print(f"helpline: database error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    run.__doc__ = work.__doc__
    return run


async def _existing(store: Store, username: str) -> StoredUser:
    user = await store.users.get(username)
    if user is None:
        raise Refused("username", f"no user {username!r}")
    return user


@_command
def cmd_add(args: argparse.Namespace) -> int:
    """Add a user; without --password-stdin a strong password is generated and printed once."""
    password, generated = _password(args)

    async def work(store: Store, _settings: Settings) -> StoredUser:
        user = await store.users.create(
            args.username, args.role, await hash_password(password), display_name=args.display_name,
            agent_extension=args.agent_extension,
        )  # fmt: skip
        await store.audit.append(
            "user_add", actor=cli_actor(), target_type="user", target_id=user.username,
            detail={"role": user.role, "agent_extension": user.agent_extension},
        )  # fmt: skip
        return user

    user = run_on_store(args, work)
    print(f"user {user.username} added ({user.role})")
    if generated:
        print(f"password: {password}")
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    async def work(store: Store, settings: Settings) -> int:
        current = await _existing(store, args.username)
        last_admin = current.role == "admin" and not current.disabled
        if disabled and last_admin and await store.users.count(role="admin", enabled_only=True) <= 1:
            raise Refused("username", "that would leave no enabled admin")
        user = await store.users.update(args.username, {"disabled": disabled})
        if current.disabled != disabled:
            await store.audit.append("user_disable" if disabled else "user_enable", actor=cli_actor(),
                                     target_type="user", target_id=user.username)  # fmt: skip
        if not disabled:
            return 0
        return await Auth(store, settings.web).end_sessions(user, "user_disabled")

    ended = run_on_store(args, work)
    print(f"user {args.username} {'disabled' if disabled else 'enabled'}"
          + (f"; {ended} session(s) ended" if ended else ""))  # fmt: skip
    return 0


@_command
def cmd_disable(args: argparse.Namespace) -> int:
    """Disable a user: they cannot sign in, and their sessions and tokens end now."""
    return _set_disabled(args, True)


@_command
def cmd_enable(args: argparse.Namespace) -> int:
    """Enable a disabled user."""
    return _set_disabled(args, False)


@_command
def cmd_list(args: argparse.Namespace) -> int:
    """Every user, as a table or as JSON."""

    async def work(store: Store, _settings: Settings) -> list[UserRecord]:
        return [user.public() for user in await store.users.list()]

    users = run_on_store(args, work)
    if args.json:
        print(json.dumps([u.model_dump(mode="json") for u in users], indent=2))
        return 0
    rows = [("USERNAME", "ROLE", "ENABLED", "AGENT", "NAME")]
    rows += [(u.username, u.role, "no" if u.disabled else "yes", u.agent_extension or "-", u.display_name)
             for u in users]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


@_command
def cmd_passwd(args: argparse.Namespace) -> int:
    """Set a user's password (generated and printed unless --password-stdin); their sessions end."""
    password, generated = _password(args)

    async def work(store: Store, settings: Settings) -> None:
        await _existing(store, args.username)
        user = await store.users.set_password_hash(args.username, await hash_password(password))
        await store.audit.append("password_change", actor=cli_actor(), target_type="user",
                                 target_id=user.username)  # fmt: skip
        await Auth(store, settings.web).end_sessions(user, "password_changed")

    run_on_store(args, work)
    print(f"password of {args.username} set")
    if generated:
        print(f"password: {password}")
    return 0


@_command
def cmd_token(args: argparse.Namespace) -> int:
    """Issue a bearer token for API clients; only the token is printed, so scripts can capture it."""
    if args.days is not None and args.days <= 0:
        raise Refused("days", "must be more than 0")

    async def work(store: Store, settings: Settings) -> str:
        user = await _existing(store, args.username)
        if user.disabled:
            raise Refused("username", f"user {args.username!r} is disabled")
        days = args.days if args.days is not None else settings.web.api_token_days
        auth = Auth(store, settings.web)
        return await auth.issue_token(user, timedelta(days=days), actor=cli_actor())

    print(run_on_store(args, work))
    return 0
