"""Where recording keeps its files, and how the service, the library and the CLI open them alike.

``<data_dir>/spool`` holds live segments, ``<data_dir>/keys`` the private signing key and the key
encryption key (0600, never in storage), and storage (``<data_dir>/recordings`` unless configured) the
sealed recordings, the ledger and the public key a verifier needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpline.recording.keys import Kek, SigningKey
from helpline.recording.ledger import Ledger
from helpline.recording.library import RecordingLibrary
from helpline.recording.policy import RecordingSettings
from helpline.recording.storage import LocalStorage
from helpline.store import Store


@dataclass(frozen=True, slots=True)
class RecordingLayout:
    storage_root: Path
    spool: Path
    keys: Path

    @classmethod
    def of(cls, data_dir: Path, settings: RecordingSettings) -> RecordingLayout:
        return cls(settings.storage_dir or data_dir / "recordings", data_dir / "spool", data_dir / "keys")

    @property
    def signing_key(self) -> Path:
        return self.keys / "recording-signing.pem"

    @property
    def kek_file(self) -> Path:
        return self.keys / "recording-kek.bin"

    @property
    def public_key(self) -> Path:
        return self.storage_root / "keys" / "recording-signing.pub"

    @property
    def ledger(self) -> Path:
        return self.storage_root / "ledger.jsonl"


def open_kek(layout: RecordingLayout, settings: RecordingSettings) -> Kek | None:
    """The key encryption key: created when encryption is on; loaded whenever it exists, so recordings
    encrypted before encryption was switched off still play. Blocking (file I/O)."""
    if settings.encrypt:
        return Kek.load_or_create(layout.kek_file)
    return Kek.load(layout.kek_file) if layout.kek_file.exists() else None


def open_library(store: Store, layout: RecordingLayout, settings: RecordingSettings) -> RecordingLibrary:
    """The library over local storage with the process's keys. Blocking (key files): call in a thread."""
    signing = SigningKey.load_or_create(layout.signing_key)
    layout.public_key.parent.mkdir(parents=True, exist_ok=True)
    signing.export_public(layout.public_key)
    return RecordingLibrary(store, LocalStorage(layout.storage_root), layout.public_key,
                            open_kek(layout, settings), Ledger(layout.ledger, signing))
