"""``helpline recordings verify``: check recordings, the store's ledger, or an export bundle offline.

Exit status 0 when everything verifies, 1 when any problem is found, 2 when the command cannot run
(no such key file, unreadable arguments). Each report line names the recording and the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from helpline.recording.keys import Kek, KeyFileError, fingerprint, load_public_key
from helpline.recording.storage import PUBLIC_KEY_NAME
from helpline.recording.verify import StoreReport, verify_bundle, verify_store

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def add_verify_command(
    subparsers: Any, with_config: Callable[[argparse.ArgumentParser], Any] | None = None
) -> argparse.ArgumentParser:
    """Add ``verify`` to the ``recordings`` command group; ``with_config`` adds the shared ``--config``
    (used to find ``<data_dir>/recordings`` when ``--root`` is not given)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "verify", help="verify recordings, the ledger, or an export bundle (offline)"
    )
    if with_config is not None:
        with_config(parser)
    target = parser.add_mutually_exclusive_group()
    parser.add_argument("recording_id", nargs="?", metavar="RECORDING_ID", help="verify this recording only")
    target.add_argument("--all", action="store_true", help="verify every stored recording (the default)")
    target.add_argument(
        "--bundle", type=Path, metavar="ZIP", help="verify an export bundle instead of the store"
    )
    parser.add_argument(
        "--root", type=Path, metavar="DIR", help="recording storage (default <data_dir>/recordings)"
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM",
        help=f"signing public key (default <root>/{PUBLIC_KEY_NAME})",
    )
    parser.add_argument(
        "--kek", type=Path, metavar="FILE", help="key-encryption key: also check encrypted audio"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_verify)
    return parser


def _storage_root(args: argparse.Namespace) -> Path:
    if args.root is not None:
        return Path(args.root)
    from helpline.config import ConfigError, load_settings

    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    return settings.data_dir / "recordings"


class _UsageError(Exception):
    pass


def run_verify(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the verification ``args`` ask for and print the report; returns the exit status."""
    out = out or sys.stdout
    try:
        report = _verify(args)
    except (_UsageError, KeyFileError) as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        print_report(report, out)
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _verify(args: argparse.Namespace) -> StoreReport:
    if args.bundle is not None:
        if args.recording_id is not None:
            raise _UsageError("give either a RECORDING_ID or --bundle, not both")
        if not Path(args.bundle).is_file():
            raise _UsageError(f"{args.bundle}: no such bundle")
        key = load_public_key(args.public_key) if args.public_key is not None else None
        return verify_bundle(args.bundle, key)
    if args.all and args.recording_id is not None:
        raise _UsageError("give either a RECORDING_ID or --all, not both")
    root = _storage_root(args)
    if not root.is_dir():
        raise _UsageError(f"{root}: no recording storage there (use --root)")
    key_path = Path(args.public_key) if args.public_key is not None else root / PUBLIC_KEY_NAME
    public_key: Ed25519PublicKey = load_public_key(key_path)
    source = f"{fingerprint(public_key)} from {key_path}"
    if args.public_key is None:
        source += (
            " (stored beside the recordings: pass --public-key with an independent copy to rule out a swap)"
        )
    kek = Kek.load(args.kek) if args.kek is not None else None
    only = {args.recording_id} if args.recording_id is not None else None
    return verify_store(root, public_key, kek, recording_ids=only, key_source=source)


def print_report(report: StoreReport, out: TextIO) -> None:
    """One line per recording and per problem, then a summary line."""
    print(f"source: {report.source}", file=out)
    print(f"public key: {report.key}", file=out)
    ledger_state = "ok" if not report.ledger_problems else f"{len(report.ledger_problems)} problem(s)"
    print(f"ledger: {report.ledger_entries} entries, {ledger_state}", file=out)
    for problem in report.ledger_problems:
        print(f"  LEDGER {problem}", file=out)
    for problem in report.store_problems:
        print(f"FAIL {problem.recording_id or '-'}: {problem.message}", file=out)
    for recording in report.recordings:
        if recording.ok:
            print(f"OK   {recording.recording_id}", file=out)
        for problem in recording.problems:
            print(f"FAIL {recording.recording_id}: {problem.message}", file=out)
        for note in recording.notes:
            print(f"     {recording.recording_id}: note: {note}", file=out)
    for note in report.notes:
        print(f"note: {note}", file=out)
    total = len(report.problems)
    verdict = "all verified" if total == 0 else f"{total} problem(s) found"
    print(f"{len(report.recordings)} recording(s) checked: {verdict}", file=out)
