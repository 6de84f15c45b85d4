"""``helpline recordings ...`` through the installed entry point on a real archive (SQLite, storage,
keys and ledger in the configured data dir): sweep keeps what a hold or a floor keeps and leaves a
receipt that ``verify`` accepts; erasure reports what stays and why; an export verifies offline; every
act is in the audit log."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpline.store import Store, upgrade
from tests.cli.cli_support import CliGroup
from tests.web.recording_fixture import make_archive

OLD = datetime.now(UTC) - timedelta(days=400)  # past the default policy's 365 days
ERASED, OTHER = "+12145550001", "+12145550002"


async def test_sweep_erase_hold_export_and_verify_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n')
    db = data / "helpline.sqlite3"
    data.mkdir()
    await upgrade(f"sqlite:///{db}")
    store = Store(f"sqlite:///{db}")
    try:
        archive = make_archive(data, store)
        expired, _ = await archive.seal(seconds=3, caller=ERASED, started_at=OLD)
        floored, _ = await archive.seal(seconds=3, caller=ERASED, started_at=OLD, floor_days=1000)
        held, _ = await archive.seal(seconds=3, caller=OTHER, started_at=OLD, encrypted=True)
        fresh, _ = await archive.seal(seconds=3, caller=OTHER)
    finally:
        await store.close()
    cli = CliGroup("recordings", config, db)

    cli.ok("hold", held.id, "--reason", "litigation 2026-17")
    swept = json.loads(cli.ok("sweep", "--json"))
    assert swept["deleted"] == [expired.id]
    kept = {k["recording_id"]: k["reason"] for k in swept["kept"]}
    assert set(kept) == {floored.id, held.id}
    assert "floor" in kept[floored.id] and "litigation 2026-17" in kept[held.id]
    assert "OK" in cli.ok("verify", "--all")  # the deleted one has its receipt in the ledger

    erased = json.loads(cli.ok("erase", "--phone", ERASED, "--json"))
    assert erased["deleted"] == [expired.id]  # already gone: its row is cleared of the number
    assert [k["recording_id"] for k in erased["kept"]] == [floored.id]
    assert erased["notes"]

    cli.ok("release", held.id)
    bundle = tmp_path / "export.zip"
    out = cli.ok("export", "--caller", OTHER, "--out", str(bundle))
    assert "exported 2 recording(s)" in out
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
    assert {f"{held.id}/audio.wav", f"{fresh.id}/manifest.json", "public_key.pem", "ledger.jsonl"} <= names
    assert cli("verify", "--bundle", str(bundle)).returncode == 0
    assert cli.refused("export", "--out", str(tmp_path / "none.zip")).startswith("helpline: --all:")

    with sqlite3.connect(db) as conn:
        actions = [a for (a,) in conn.execute("SELECT action FROM audit_log ORDER BY id")]
        callers = {rid: c for rid, c in conn.execute("SELECT id, caller FROM recordings")}
    assert actions == ["hold", "retention_sweep", "erase", "release", "export"]
    assert callers[expired.id] is None and callers[floored.id] == ERASED
