"""The ledger: a hash-chained, signed JSONL file where edits, removals and forgeries show."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpline.recording.keys import SigningKey
from helpline.recording.ledger import GENESIS, Ledger, read_ledger
from helpline.recording.manifest import canonical


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return SigningKey.load_or_create(tmp_path / "keys" / "signing.pem")


@pytest.fixture
def ledger(tmp_path: Path, key: SigningKey) -> Ledger:
    led = Ledger(tmp_path / "store" / "ledger.jsonl", key)
    for i in range(4):
        led.append_sealed(f"rec-{i}", hashlib.sha256(f"manifest {i}".encode()).hexdigest())
    return led


def _lines(led: Ledger) -> list[str]:
    return led.path.read_text().splitlines(keepends=True)


def test_entries_chain_and_verify(ledger: Ledger, key: SigningKey) -> None:
    receipt = ledger.append_deleted("rec-1", "ab" * 32, "retention expired", "sweeper")
    assert (
        receipt["kind"] == "deleted"
        and receipt["reason"] == "retention expired"
        and receipt["actor"] == "sweeper"
    )
    entries, problems = read_ledger(ledger.path, key.public_key)
    assert problems == []
    assert [e["seq"] for e in entries] == [0, 1, 2, 3, 4]
    assert entries[0]["prev"] == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after["prev"] == before["hash"]
    assert entries[-1] == receipt
    assert ledger.head().seq == 4 and ledger.head().hash == receipt["hash"]


def test_hash_follows_the_contract(ledger: Ledger) -> None:
    entry = json.loads(_lines(ledger)[2])
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    assert entry["hash"] == hashlib.sha256(bytes.fromhex(entry["prev"]) + canonical(body)).hexdigest()
    assert set(body) == {"seq", "at", "kind", "recording_id", "manifest_sha256", "prev"}


def test_edited_line_is_found(ledger: Ledger, key: SigningKey) -> None:
    lines = _lines(ledger)
    lines[1] = lines[1].replace("rec-1", "rec-9")
    ledger.path.write_text("".join(lines))
    _, problems = read_ledger(ledger.path, key.public_key)
    assert [(p.code, p.line) for p in problems] == [("ledger-edited", 2)]


def test_edit_with_recomputed_hash_fails_the_signature(ledger: Ledger, key: SigningKey) -> None:
    lines = _lines(ledger)
    entry = json.loads(lines[3])
    entry["recording_id"] = "rec-forged"
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    entry["hash"] = hashlib.sha256(bytes.fromhex(entry["prev"]) + canonical(body)).hexdigest()
    lines[3] = canonical(entry).decode() + "\n"
    ledger.path.write_text("".join(lines))
    _, problems = read_ledger(ledger.path, key.public_key)
    assert [(p.code, p.line, p.recording_id) for p in problems] == [("ledger-signature", 4, "rec-forged")]


def test_removed_line_breaks_the_chain(ledger: Ledger, key: SigningKey) -> None:
    lines = _lines(ledger)
    del lines[1]
    ledger.path.write_text("".join(lines))
    _, problems = read_ledger(ledger.path, key.public_key)
    assert [(p.code, p.line) for p in problems] == [("ledger-chain", 2)]
    assert "entries 1-1 are missing" in problems[0].message


def test_reordered_lines_break_the_chain(ledger: Ledger, key: SigningKey) -> None:
    lines = _lines(ledger)
    lines[1], lines[2] = lines[2], lines[1]
    ledger.path.write_text("".join(lines))
    _, problems = read_ledger(ledger.path, key.public_key)
    assert {p.code for p in problems} == {"ledger-chain"}
    assert len(problems) == 3  # lines 2, 3 and 4 no longer follow their predecessor


def test_wrong_public_key_fails_every_signature(ledger: Ledger, tmp_path: Path) -> None:
    other = SigningKey.load_or_create(tmp_path / "other.pem")
    _, problems = read_ledger(ledger.path, other.public_key)
    assert [p.code for p in problems] == ["ledger-signature"] * 4


def test_garbage_line_is_reported(ledger: Ledger, key: SigningKey) -> None:
    with open(ledger.path, "a") as fh:
        fh.write("{not json}\n")
    _, problems = read_ledger(ledger.path, key.public_key)
    assert [(p.code, p.line) for p in problems] == [("ledger-malformed", 5)]


def test_threads_append_without_breaking_the_chain(tmp_path: Path, key: SigningKey) -> None:
    led = Ledger(tmp_path / "ledger.jsonl", key)
    second = Ledger(tmp_path / "ledger.jsonl", key)  # another writer on the same file (the CLI)

    def work(n: int) -> None:
        target = led if n % 2 else second
        for i in range(25):
            target.append_sealed(f"rec-{n}-{i}", "00" * 32)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    entries, problems = read_ledger(led.path, key.public_key)
    assert problems == []
    assert [e["seq"] for e in entries] == list(range(200))


def test_unfinished_last_line_is_cut_before_the_next_append(ledger: Ledger, key: SigningKey) -> None:
    with open(ledger.path, "ab") as fh:
        fh.write(b'{"seq":4,"at":"2024-')  # a crash in the middle of an append
    entries, problems = read_ledger(ledger.path, key.public_key)
    assert [p.code for p in problems] == ["ledger-malformed"]
    ledger.append_sealed("rec-after-crash", "11" * 32)
    entries, problems = read_ledger(ledger.path, key.public_key)
    assert problems == []
    assert entries[-1]["seq"] == 4 and entries[-1]["recording_id"] == "rec-after-crash"


def test_reopened_ledger_continues_the_sequence(ledger: Ledger, key: SigningKey) -> None:
    again = Ledger(ledger.path, key)
    entry = again.append_sealed("rec-next", "22" * 32)
    assert entry["seq"] == 4
    assert base64.b64decode(entry["sig"])  # a real signature, checked by read_ledger
    assert read_ledger(ledger.path, key.public_key)[1] == []


def test_missing_ledger_reads_empty(tmp_path: Path, key: SigningKey) -> None:
    assert read_ledger(tmp_path / "none.jsonl", key.public_key) == ([], [])
