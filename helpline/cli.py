"""The ``helpline`` command: run the service, check and simulate flows, manage agents and the database."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from helpline.config import ConfigError, Settings, load_settings


def _run(coro: object) -> None:
    """Run on uvloop when it is installed: it carries three times the RTP streams of plain asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on Linux
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)  # type: ignore[arg-type]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings ``--config`` names (defaults without it); a bad file exits with status 2."""
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from helpline.logs import setup_logging
    from helpline.server import serve

    settings = settings_from_args(args)
    setup_logging(settings.server.log_level)
    try:
        _run(serve(settings))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"helpline: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # by alias: the keys as the file spells them ([security.rates] INVITE, global)
    print(json.dumps(settings.model_dump(mode="json", by_alias=True), indent=2))
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from helpline.store import upgrade

    settings = settings_from_args(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(upgrade(settings.database_url))
    print("database is at the latest schema")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from helpline.ivr.cli import add_flow_commands
    from helpline.queue.admin_cli import add_agent_commands
    from helpline.recording.cli import add_recording_commands
    from helpline.security_cli import add_security_commands
    from helpline.web.users_cli import add_user_commands

    parser = argparse.ArgumentParser(prog="helpline", description="SIP/voice-first contact center")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
        return p

    with_config(sub.add_parser("serve", help="run the service")).set_defaults(func=_cmd_serve)
    with_config(sub.add_parser("config", help="print the effective configuration")).set_defaults(
        func=_cmd_config
    )
    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    with_config(db.add_parser("upgrade", help="apply schema migrations")).set_defaults(func=_cmd_db_upgrade)
    add_flow_commands(sub)
    add_agent_commands(sub, with_config)
    add_user_commands(sub, with_config)
    add_recording_commands(sub, with_config)
    add_security_commands(sub, with_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
