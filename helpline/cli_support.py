"""What every command-line group shares: exit codes, refusals that name the field, running work on a
migrated store, and who the audit log says ran a command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from helpline.config import Settings
from helpline.store import Store, upgrade_sync

EXIT_REFUSED = 2
EXIT_FAILED = 1
T = TypeVar("T")


class Refused(Exception):
    """Bad input for a command; ``field`` names what to fix."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def run_on_store(args: argparse.Namespace, work: Callable[[Store, Settings], Awaitable[T]]) -> T:
    """Load the configuration, bring the schema up to date, run ``work`` on a store."""
    from helpline.cli import settings_from_args

    settings = settings_from_args(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_sync(settings.database_url)

    async def main() -> T:
        store = Store(settings.database_url)
        try:
            return await work(store, settings)
        finally:
            await store.close()

    return asyncio.run(main())


def cli_actor() -> str:
    """``cli:<os user>``: who ran the command, as the audit log records it."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        name = f"uid{os.getuid()}"
    return f"cli:{name}"
