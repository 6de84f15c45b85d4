"""The append-only ledger of sealed manifests and deletion receipts (``<storage>/ledger.jsonl``).

A signature on each manifest proves a recording unaltered but cannot show that a whole recording is
gone; the ledger can. Each line is one entry, hash-chained to the one before it and signed:

    {"seq", "at", "kind": "sealed"|"deleted", "recording_id", "manifest_sha256", "reason"?, "actor"?,
     "prev", "hash", "sig"}

``hash = sha256(bytes.fromhex(prev) + canonical(entry without hash and sig))`` in hex (``prev`` of the
first entry is 64 zeros) and ``sig`` is the base64 Ed25519 signature of the raw ``hash`` digest. Editing
a line breaks its hash (or its signature, when the hash is recomputed); removing or reordering lines
breaks the chain of the line after. A recording whose files vanished without a ``deleted`` entry is
then reported by ``verify``. Removing the *last* lines is what a chain alone cannot show: ``verify``
catches it for recordings still in storage (not in the ledger), and the head can be published
elsewhere (``Ledger.head``) to pin it.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from helpline.recording.keys import SigningKey, verify_signature
from helpline.recording.manifest import Problem, canonical, iso_utc

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
_TAIL_BLOCK = 8192


def entry_hash(prev: str, body: dict[str, Any]) -> str:
    """The chain hash of an entry (``body`` without ``hash`` and ``sig``)."""
    return hashlib.sha256(bytes.fromhex(prev) + canonical(body)).hexdigest()


@dataclass(frozen=True, slots=True)
class LedgerHead:
    seq: int  # the last entry's seq; -1 for an empty ledger
    hash: str


def _last_line(fh: IO[bytes]) -> bytes | None:
    """The last complete line of an open file, read backwards from the end (the ledger may be large)."""
    end = fh.seek(0, os.SEEK_END)
    buf = b""
    pos = end
    while pos > 0:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        fh.seek(pos)
        buf = fh.read(step) + buf
        stripped = buf.rstrip(b"\n")
        cut = stripped.rfind(b"\n")
        if cut >= 0:
            return stripped[cut + 1 :]
    stripped = buf.rstrip(b"\n")
    return stripped or None


class Ledger:
    """Appends entries under a thread lock and an exclusive ``flock`` (the CLI and the service may both
    append), with flush and fsync before returning: an entry returned is an entry on disk."""

    def __init__(self, path: Path, signing_key: SigningKey) -> None:
        self.path = path
        self._key = signing_key
        self._lock = threading.Lock()

    def _repair_tail(self, fh: IO[bytes]) -> None:
        """A crash mid-append can leave a line without its newline; it was never acknowledged (the
        fsync did not return), so it is cut off, and logged so the fragment is not lost silently."""
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return
        fh.seek(max(0, end - 1024 * 1024))
        tail = fh.read()
        keep = end - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        logger.error(
            "ledger %s ends with an unfinished entry (crash during append?); cutting %d bytes: %r",
            self.path,
            end - keep,
            tail[keep - end :],
        )
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())

    def _head_of(self, fh: IO[bytes]) -> LedgerHead:
        line = _last_line(fh)
        if line is None:
            return LedgerHead(-1, GENESIS)
        try:
            last = json.loads(line)
            return LedgerHead(int(last["seq"]), str(last["hash"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{self.path}: the last ledger entry is unreadable ({exc}); refusing to append"
            ) from None

    def head(self) -> LedgerHead:
        """The current last entry (seq and hash), e.g. to publish as a checkpoint."""
        if not self.path.exists():
            return LedgerHead(-1, GENESIS)
        with open(self.path, "rb") as fh:
            return self._head_of(fh)

    def append(self, kind: str, recording_id: str, manifest_sha256: str, **extra: str) -> dict[str, Any]:
        """Append one entry and return it as written (blocking: run it in a thread from the loop)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            with os.fdopen(fd, "r+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    self._repair_tail(fh)
                    head = self._head_of(fh)
                    body: dict[str, Any] = {
                        "seq": head.seq + 1,
                        "at": iso_utc(datetime.now(UTC)),
                        "kind": kind,
                        "recording_id": recording_id,
                        "manifest_sha256": manifest_sha256,
                        **extra,
                        "prev": head.hash,
                    }
                    digest = entry_hash(head.hash, body)
                    sig = base64.b64encode(self._key.sign(bytes.fromhex(digest))).decode("ascii")
                    entry = {**body, "hash": digest, "sig": sig}
                    fh.seek(0, os.SEEK_END)
                    fh.write(canonical(entry) + b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            if created:
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        return entry

    def append_sealed(self, recording_id: str, manifest_sha256: str) -> dict[str, Any]:
        return self.append("sealed", recording_id, manifest_sha256)

    def append_deleted(
        self, recording_id: str, manifest_sha256: str, reason: str, actor: str
    ) -> dict[str, Any]:
        """The deletion receipt: what went, why and on whose action; it makes the absence legitimate."""
        return self.append("deleted", recording_id, manifest_sha256, reason=reason, actor=actor)


def copy_ledger(path: Path, out: IO[bytes]) -> None:
    """Stream the ledger into ``out`` under a shared lock, so no half-appended line is copied."""
    with open(path, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        try:
            while block := fh.read(64 * 1024):
                out.write(block)
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_ledger(path: Path, public_key: Ed25519PublicKey) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Every readable entry, and every problem: unreadable, edited or badly signed lines, chain breaks."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; iterated lazily
    except FileNotFoundError:
        return [], []
    with fh:
        return check_ledger_lines(fh, public_key)


def check_ledger_lines(
    lines: Iterable[bytes], public_key: Ed25519PublicKey
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """``read_ledger`` over any line source (a file, a zip member)."""
    entries: list[dict[str, Any]] = []
    problems: list[Problem] = []
    prev_hash = GENESIS
    prev_seq = -1
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        if not raw.endswith(b"\n"):
            problems.append(
                Problem(
                    "ledger-malformed",
                    f"ledger line {lineno} is unfinished (crash during an append?)",
                    line=lineno,
                )
            )
            continue
        try:
            entry = json.loads(raw)
            body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
            seq, prev, stated, sig_b64 = int(entry["seq"]), entry["prev"], entry["hash"], entry["sig"]
            rid = str(entry["recording_id"])
            computed = entry_hash(prev, body)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(
                Problem(
                    "ledger-malformed", f"ledger line {lineno} is not a ledger entry ({exc!r})", line=lineno
                )
            )
            continue
        if prev != prev_hash or seq != prev_seq + 1:
            gap = (
                f"entries {prev_seq + 1}-{seq - 1} are missing"
                if seq > prev_seq + 1
                else "the chain does not follow"
            )
            problems.append(
                Problem(
                    "ledger-chain",
                    f"ledger chain broken at line {lineno} (seq {seq}): {gap}; "
                    "lines were removed, reordered or edited",
                    rid,
                    line=lineno,
                )
            )
        if computed != stated:
            problems.append(
                Problem("ledger-edited", f"ledger line {lineno} (seq {seq}) was edited", rid, line=lineno)
            )
        else:
            try:
                signature = base64.b64decode(sig_b64, validate=True)
                valid = verify_signature(public_key, signature, bytes.fromhex(stated))
            except (binascii.Error, ValueError, TypeError):
                valid = False
            if not valid:
                problems.append(
                    Problem(
                        "ledger-signature",
                        f"ledger line {lineno} (seq {seq}) has a bad signature: "
                        "rewritten or signed by another key",
                        rid,
                        line=lineno,
                    )
                )
        entries.append(entry)
        prev_hash, prev_seq = stated, seq
    return entries, problems
