"""Export bundles: recordings packed with everything needed to verify them away from the service.

Layout of the zip::

    <recording_id>/audio.wav        plaintext WAV (decrypted on the way in when stored encrypted)
    <recording_id>/metadata.json    search metadata as exported (not signed)
    <recording_id>/manifest.json    the signed manifest, byte for byte as stored
    <recording_id>/manifest.sig     its Ed25519 signature (base64)
    <recording_id>/consent.json     the consent evidence records the manifest references by hash
    public_key.pem                  the signing public key
    ledger.jsonl                    the ledger at export time (shows each recording was sealed)
    README.txt                      how to check all of this offline

Audio is streamed into the zip a block at a time and stored uncompressed (PCM barely compresses, and
a stored member lets the verifier locate a flipped byte to its segment).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpline.recording.crypto import DecryptingReader
from helpline.recording.ledger import copy_ledger
from helpline.recording.verify import (
    AUDIO,
    BUNDLE_LEDGER,
    BUNDLE_PUBLIC_KEY,
    CONSENT,
    MANIFEST,
    SIGNATURE,
)

_BLOCK = 1024 * 1024
_ZIP64_AT = 2**31  # members beyond this need zip64 headers up front when streamed

README = """\
Helpline recording export
=========================

Each folder is one recording: audio.wav, the signed manifest (manifest.json + manifest.sig),
the consent evidence (consent.json) and the search metadata (metadata.json, not signed).
public_key.pem is the key that signed the manifests and ledger.jsonl; compare its fingerprint
with the one your operator publishes before relying on it.

Verify everything with Helpline (no service, database or network needed):

    helpline recordings verify --bundle THIS.zip --public-key OPERATOR_KEY.pem

Exit status 0 means every check passed; 1 lists each problem (which recording, which segment).

Verify by hand (what the tool does):

1. Signature: manifest.sig is the base64 Ed25519 signature of the exact bytes of manifest.json.
       base64 -d manifest.sig > manifest.sig.bin
       openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in manifest.json -sigfile manifest.sig.bin
2. Audio: take the bytes of the WAV "data" chunk (8 kHz, 16-bit little-endian, 2 channels interleaved;
   channel 0 = caller, channel 1 = what the caller heard). A manifest frame is 20 ms = 640 bytes.
   Cut the data into the manifest's segments (segments[i].frames x 640 bytes, in order);
   segments[i].sha256 is the SHA-256 of segment i, and audio_sha256 that of the whole data chunk.
3. Chain: c0 = SHA-256("helpline-rec-v1" + h0), ci = SHA-256(c(i-1) + hi + i as 8-byte big-endian),
   over raw 32-byte digests; segments[i].chain = ci (hex) and chain_head = the last one.
4. Consent: each manifest consent entry is the SHA-256 of the canonical JSON (sorted keys, no spaces,
   UTF-8) of the record with that id in consent.json, leaving out its own "record_sha256" field.
5. Ledger: one JSON entry per line; hash = SHA-256(prev as raw bytes + canonical JSON of the entry
   without "hash" and "sig"); prev = the previous line's hash (64 zeros for the first); sig = base64
   Ed25519 signature of the raw hash. Each recording must have a "sealed" entry whose manifest_sha256
   is the SHA-256 of its manifest.json.
"""


@dataclass(frozen=True, slots=True)
class BundleItem:
    """One recording to export. ``directory`` holds its stored ``manifest.json`` and ``manifest.sig``;
    ``audio`` is the plaintext WAV path or a ``DecryptingReader`` over the stored ciphertext."""

    recording_id: str
    directory: Path
    audio: Path | DecryptingReader
    metadata: Mapping[str, Any]
    consent: Sequence[Mapping[str, Any]]


def _add_bytes(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    zf.writestr(
        zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED
    )


def _add_audio(zf: zipfile.ZipFile, name: str, audio: Path | DecryptingReader) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    if isinstance(audio, Path):
        size = audio.stat().st_size
        with open(audio, "rb") as src, zf.open(info, "w", force_zip64=size >= _ZIP64_AT) as dst:
            shutil.copyfileobj(src, dst, _BLOCK)
        return
    with zf.open(info, "w", force_zip64=audio.size >= _ZIP64_AT) as dst:
        for block in audio.iter_plaintext():
            dst.write(block)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def write_bundle(
    out_zip: Path, recordings: Iterable[BundleItem], public_key_pem: bytes, ledger_path: Path
) -> Path:
    """Write the bundle to ``out_zip`` (through a temp file and a rename: never half a bundle under that
    name). Blocking; run it in a thread from the event loop."""
    tmp = out_zip.with_name(f".{out_zip.name}.{secrets.token_hex(6)}.tmp")
    seen: set[str] = set()
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for item in recordings:
                rid = item.recording_id
                if rid in seen or "/" in rid or not rid:
                    raise ValueError(
                        f"recording id {rid!r} is empty, has a slash or appears twice in the bundle"
                    )
                seen.add(rid)
                _add_audio(zf, f"{rid}/{AUDIO}", item.audio)
                _add_bytes(zf, f"{rid}/{MANIFEST}", (item.directory / MANIFEST).read_bytes())
                _add_bytes(zf, f"{rid}/{SIGNATURE}", (item.directory / SIGNATURE).read_bytes())
                _add_bytes(zf, f"{rid}/metadata.json", _json(dict(item.metadata)))
                _add_bytes(zf, f"{rid}/{CONSENT}", _json([dict(c) for c in item.consent]))
            _add_bytes(zf, BUNDLE_PUBLIC_KEY, public_key_pem)
            info = zipfile.ZipInfo(BUNDLE_LEDGER, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as dst:
                if ledger_path.exists():
                    copy_ledger(ledger_path, dst)
            _add_bytes(zf, "README.txt", README.encode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_zip)
    finally:
        tmp.unlink(missing_ok=True)
    return out_zip
