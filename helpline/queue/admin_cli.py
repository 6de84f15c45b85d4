"""``helpline agent add|list|show|set|passwd|remove``: manage agents in the database from a shell.

The CLI writes the same table as the API; a running service picks the changes up by polling
(``AgentRepository.changed_since``). Passwords are hashed under the configured realm
(``[agents] realm``) and never stored. Refusals name the field and exit with status 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from helpline.cli_support import EXIT_FAILED, EXIT_REFUSED, Refused, run_on_store
from helpline.config import Settings
from helpline.store import AgentError, AgentRecord, Store, StoredAgent
from helpline.store.agents import validate_profile

logger = logging.getLogger(__name__)

DEFAULT_REALM = "helpline"


def add_agent_commands(subparsers: Any, with_config: Callable[[argparse.ArgumentParser], Any]) -> None:
    """Add the ``agent`` command group to the top-level CLI's subparsers; ``with_config`` adds the
    shared ``--config`` option to a parser."""
    agent = subparsers.add_parser("agent", help="manage agents (extension, skills, queues, password)")
    commands = agent.add_subparsers(dest="agent_command", required=True)

    add = with_config(commands.add_parser("add", help="add an agent"))
    add.add_argument("extension", metavar="EXT")
    add.add_argument("--name", required=True, help="display name")
    _password_options(add)
    _profile_options(add)
    add.add_argument("--disabled", action="store_true", help="store the agent disabled")
    add.set_defaults(func=cmd_add)

    listing = with_config(commands.add_parser("list", help="list agents"))
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(func=cmd_list)

    show = with_config(commands.add_parser("show", help="show one agent"))
    show.add_argument("extension", metavar="EXT")
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    show.set_defaults(func=cmd_show)

    change = with_config(commands.add_parser("set", help="change an agent's profile"))
    change.add_argument("extension", metavar="EXT")
    change.add_argument("--name", help="display name")
    _profile_options(change)
    change.add_argument("--remove-skill", action="append", default=[], metavar="NAME")
    change.add_argument("--clear-skills", action="store_true", help="remove every skill first")
    change.add_argument("--remove-attr", action="append", default=[], metavar="KEY")
    change.add_argument("--clear-attrs", action="store_true", help="remove every attribute first")
    change.add_argument("--remove-queue", action="append", default=[], metavar="QUEUE")
    change.add_argument("--clear-queues", action="store_true", help="leave every queue first")
    change.add_argument("--no-wrapup", action="store_true", help="use the queues' wrap-up time")
    enabled = change.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True)
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False)
    change.set_defaults(func=cmd_set)

    passwd = with_config(commands.add_parser("passwd", help="set an agent's SIP password"))
    passwd.add_argument("extension", metavar="EXT")
    _password_options(passwd)
    passwd.set_defaults(func=cmd_passwd)

    remove = with_config(commands.add_parser("remove", help="remove an agent"))
    remove.add_argument("extension", metavar="EXT")
    remove.set_defaults(func=cmd_remove)


def _password_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    source.add_argument("--password", metavar="PW", help="the password (visible in the process list)")


def _profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skill", action="append", default=[], metavar="NAME=LEVEL", help="repeatable")
    parser.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="repeatable; numbers and true/false are typed, anything else is text",
    )
    parser.add_argument("--queue", action="append", default=[], metavar="QUEUE[:TIER]", help="repeatable")
    parser.add_argument("--wrapup", type=float, metavar="SECONDS", help="wrap-up after each call")


# ---- parsing options ------------------------------------------------------------------------------


def _pairs(values: list[str], option: str, field: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise Refused(field, f"{option} wants KEY=VALUE, got {value!r}")
        out.append((key, rest))
    return out


def _skills(values: list[str]) -> dict[str, int]:
    skills = {}
    for name, level in _pairs(values, "--skill", "skills"):
        try:
            skills[name] = int(level)
        except ValueError:
            raise Refused(f"skills.{name}", f"level {level!r} is not a whole number") from None
    return skills


def _attribute_value(text: str) -> Any:
    """``3`` -> 3, ``2.5`` -> 2.5, ``true`` -> True; anything else (``007``, ``abc``) stays text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float | str) else text


def _attributes(values: list[str]) -> dict[str, Any]:
    return {key: _attribute_value(value) for key, value in _pairs(values, "--attr", "attributes")}


def _memberships(values: list[str]) -> dict[str, int]:
    queues: dict[str, int] = {}
    for value in values:
        name, sep, tier = value.partition(":")
        if not name:
            raise Refused("queues", f"--queue wants QUEUE[:TIER], got {value!r}")
        try:
            queues[name] = int(tier) if sep else 1
        except ValueError:
            raise Refused(f"queues.{name}.tier", f"tier {tier!r} is not a whole number") from None
    return queues


def _membership_list(queues: Mapping[str, int]) -> list[dict[str, Any]]:
    return [{"queue": name, "tier": tier} for name, tier in queues.items()]


def _password(args: argparse.Namespace, extension: str) -> str:
    if args.password is not None:
        return str(args.password)
    if args.password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise Refused("password", "give --password-stdin (or --password PW)")
    first = getpass.getpass(f"SIP password for {extension}: ")
    if getpass.getpass("again: ") != first:
        raise Refused("password", "the two passwords differ")
    return first


# ---- running a command ----------------------------------------------------------------------------


def _realm(settings: Settings) -> str:
    return str(getattr(getattr(settings, "agents", None), "realm", DEFAULT_REALM))


def _queue_names(settings: Settings) -> set[str]:
    return set(getattr(settings, "queues", {}) or {})




def _command(work: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn refusals into ``helpline: FIELD: message`` and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return work(args)
        except Refused as exc:
            return _refused(exc.field, exc.message)
        except AgentError as exc:
            return _refused(exc.field, exc.message)
        except (SQLAlchemyError, OSError) as exc:
            logger.debug("agent command failed", exc_info=True)
            print(f"helpline: database error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    run.__doc__ = work.__doc__
    return run


def _refused(field: str | None, message: str) -> int:
    print(f"helpline: {field}: {message}" if field else f"helpline: {message}", file=sys.stderr)
    return EXIT_REFUSED


# ---- the commands ---------------------------------------------------------------------------------


@_command
def cmd_add(args: argparse.Namespace) -> int:
    """Add an agent; its password is stored as digest HA1s under the configured realm."""
    values = {
        "extension": args.extension, "display_name": args.name, "skills": _skills(args.skill),
        "attributes": _attributes(args.attr), "queues": _membership_list(_memberships(args.queue)),
        "wrapup_s": args.wrapup, "enabled": not args.disabled,
    }  # fmt: skip
    profile = validate_profile(values)
    password = _password(args, profile.extension)

    async def work(store: Store, settings: Settings) -> StoredAgent:
        return await store.agents.create(
            profile, password, _realm(settings), queue_names=_queue_names(settings)
        )

    agent = run_on_store(args, work)
    print(f"agent {agent.extension} added")
    return 0


@_command
def cmd_list(args: argparse.Namespace) -> int:
    """Every agent, as a table or as JSON."""

    async def work(store: Store, _settings: Settings) -> list[StoredAgent]:
        return await store.agents.list()

    agents = [agent.public() for agent in run_on_store(args, work)]
    if args.json:
        print(json.dumps([a.model_dump(mode="json") for a in agents], indent=2))
        return 0
    rows = [("EXT", "NAME", "ENABLED", "QUEUES", "SKILLS", "WRAPUP")]
    rows += [
        (a.extension, a.display_name, "yes" if a.enabled else "no",
         ",".join(f"{m.queue}:{m.tier}" for m in a.queues) or "-",
         ",".join(f"{k}={v}" for k, v in sorted(a.skills.items())) or "-",
         "-" if a.wrapup_s is None else f"{a.wrapup_s:g}s")
        for a in agents
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


@_command
def cmd_show(args: argparse.Namespace) -> int:
    """One agent, as text or JSON."""

    async def work(store: Store, _settings: Settings) -> StoredAgent | None:
        return await store.agents.get(args.extension)

    stored = run_on_store(args, work)
    if stored is None:
        raise Refused("extension", f"no agent {args.extension!r}")
    agent = stored.public()
    if args.json:
        print(json.dumps(agent.model_dump(mode="json"), indent=2))
        return 0
    _print_agent(agent)
    return 0


def _print_agent(agent: AgentRecord) -> None:
    lines = {
        "extension": agent.extension,
        "name": agent.display_name,
        "enabled": "yes" if agent.enabled else "no",
        "queues": ", ".join(f"{m.queue} (tier {m.tier})" for m in agent.queues) or "-",
        "skills": ", ".join(f"{k}={v}" for k, v in sorted(agent.skills.items())) or "-",
        "attributes": ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(agent.attributes.items())) or "-",
        "wrapup": "queue default" if agent.wrapup_s is None else f"{agent.wrapup_s:g}s",
        "realm": agent.realm,
        "created": agent.created_at.isoformat(),
        "updated": agent.updated_at.isoformat(),
    }
    for key, value in lines.items():
        print(f"{key + ':':<12}{value}")


def _changes(args: argparse.Namespace, current: AgentRecord) -> dict[str, Any]:
    """The fields ``agent set`` replaces: lists are cleared, then trimmed, then added to."""
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["display_name"] = args.name
    if args.clear_skills or args.remove_skill or args.skill:
        skills = {} if args.clear_skills else dict(current.skills)
        for name in args.remove_skill:
            skills.pop(name, None)
        changes["skills"] = skills | _skills(args.skill)
    if args.clear_attrs or args.remove_attr or args.attr:
        attributes: dict[str, Any] = {} if args.clear_attrs else dict(current.attributes)
        for key in args.remove_attr:
            attributes.pop(key, None)
        changes["attributes"] = attributes | _attributes(args.attr)
    if args.clear_queues or args.remove_queue or args.queue:
        queues = {} if args.clear_queues else {m.queue: m.tier for m in current.queues}
        for name in args.remove_queue:
            queues.pop(name, None)
        changes["queues"] = _membership_list(queues | _memberships(args.queue))
    if args.no_wrapup and args.wrapup is not None:
        raise Refused("wrapup_s", "give --wrapup or --no-wrapup, not both")
    if args.no_wrapup or args.wrapup is not None:
        changes["wrapup_s"] = None if args.no_wrapup else args.wrapup
    if args.enabled is not None:
        changes["enabled"] = args.enabled
    return changes


@_command
def cmd_set(args: argparse.Namespace) -> int:
    """Change some fields of an agent's profile."""

    async def work(store: Store, settings: Settings) -> StoredAgent:
        current = await store.agents.get(args.extension)
        if current is None:
            raise Refused("extension", f"no agent {args.extension!r}")
        changes = _changes(args, current)
        if not changes:
            raise Refused(None, "nothing to change (see helpline agent set --help)")
        return await store.agents.update(args.extension, changes, queue_names=_queue_names(settings))

    agent = run_on_store(args, work)
    print(f"agent {agent.extension} updated")
    return 0


@_command
def cmd_passwd(args: argparse.Namespace) -> int:
    """Set an agent's SIP password (hashed under the configured realm)."""
    password = _password(args, args.extension)

    async def work(store: Store, settings: Settings) -> StoredAgent:
        return await store.agents.set_password(args.extension, password, _realm(settings))

    agent = run_on_store(args, work)
    print(f"password of agent {agent.extension} set")
    return 0


@_command
def cmd_remove(args: argparse.Namespace) -> int:
    """Remove an agent (its event history stays)."""

    async def work(store: Store, _settings: Settings) -> None:
        await store.agents.delete(args.extension)

    run_on_store(args, work)
    print(f"agent {args.extension} removed")
    return 0
