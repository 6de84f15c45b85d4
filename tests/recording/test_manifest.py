"""The manifest: canonical bytes, the segment chain, signatures, and locating changes in the audio.

The sample recordings here are built with the standard ``wave`` module and numpy, hashed with hashlib
directly (not with the code under test); They come from ``sealing_support``.
"""

from __future__ import annotations

import hashlib
import json
import struct
import wave
from datetime import datetime
from pathlib import Path

import pytest

from helpline.recording.keys import SigningKey
from helpline.recording.manifest import (
    canonical,
    check_audio,
    check_manifest,
    consent_digest,
    segment_chain,
    sign_manifest,
)
from tests.recording.sealing_support import (
    CONSENT_RECORD,
    FRAME_BYTES,
    SEGMENTS,
    Sample,
    flip_byte,
    sample_manifest,
    sample_recording,
)


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return SigningKey.load_or_create(tmp_path / "keys" / "signing.pem")


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    return sample_recording(tmp_path / "audio.wav")


def test_canonical_form_is_sorted_compact_utf8() -> None:
    assert canonical({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical({"x": float("nan")})


def test_segment_chain_follows_the_contract() -> None:
    hashes = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    c0 = hashlib.sha256(b"helpline-rec-v1" + bytes.fromhex(hashes[0])).digest()
    c1 = hashlib.sha256(c0 + bytes.fromhex(hashes[1]) + (1).to_bytes(8, "big")).digest()
    c2 = hashlib.sha256(c1 + bytes.fromhex(hashes[2]) + (2).to_bytes(8, "big")).digest()
    assert segment_chain(hashes) == [c0.hex(), c1.hex(), c2.hex()]
    assert segment_chain([]) == []


def test_manifest_holds_the_contract_fields(sample: Sample) -> None:
    manifest = sample_manifest(sample)
    assert manifest["v"] == 1
    assert manifest["duration_frames"] == sum(SEGMENTS)
    assert manifest["format"] == {"container": "wav", "encoding": "pcm_s16le", "rate": 8000, "channels": 2}
    assert manifest["created_at"] == "2024-05-01T12:05:00Z"
    segs = manifest["segments"]
    assert isinstance(segs, list)
    assert [s["index"] for s in segs] == list(range(len(SEGMENTS)))
    assert manifest["chain_head"] == segs[-1]["chain"]
    assert manifest["consent"] == [{"id": "c0ffee", "sha256": consent_digest(CONSENT_RECORD)}]
    assert manifest["encryption"] is None
    assert manifest["recovered"] is False


def test_build_manifest_refuses_inconsistent_input(sample: Sample) -> None:
    with pytest.raises(ValueError, match="duration_frames"):
        sample_manifest(sample, duration_frames=1)
    with pytest.raises(ValueError, match="segment 1"):
        sample_manifest(sample, segments=[(50, "a" * 64), (0, "b" * 64)])
    with pytest.raises(ValueError, match="naive"):
        sample_manifest(sample, created_at=datetime(2024, 5, 1))


def test_signed_manifest_and_audio_check_clean(sample: Sample, key: SigningKey) -> None:
    data, sig = sign_manifest(sample_manifest(sample), key)
    assert data == canonical(json.loads(data))
    assert check_manifest(data, sig, key.public_key) == []
    assert check_audio(json.loads(data), sample.wav) == []


def test_edited_manifest_field_fails_the_signature(sample: Sample, key: SigningKey) -> None:
    data, sig = sign_manifest(sample_manifest(sample), key)
    manifest = json.loads(data)
    manifest["call_id"] = "call-2"
    problems = check_manifest(canonical(manifest), sig, key.public_key)
    assert [p.code for p in problems] == ["manifest-signature"]
    assert problems[0].recording_id == "rec-1"


def test_another_key_fails_the_signature(sample: Sample, key: SigningKey, tmp_path: Path) -> None:
    other = SigningKey.load_or_create(tmp_path / "other.pem")
    data, sig = sign_manifest(sample_manifest(sample), other)
    assert [p.code for p in check_manifest(data, sig, key.public_key)] == ["manifest-signature"]
    assert [p.code for p in check_manifest(data, "not base64!", key.public_key)] == ["manifest-signature"]


def test_signed_but_broken_chain_is_inconsistent(sample: Sample, key: SigningKey) -> None:
    manifest = sample_manifest(sample)
    segs = manifest["segments"]
    assert isinstance(segs, list)
    segs[2]["sha256"] = "0" * 64  # the chain no longer follows from segment 2 on
    data, sig = sign_manifest(manifest, key)
    problems = check_manifest(data, sig, key.public_key)
    assert {p.code for p in problems} == {"manifest-inconsistent"}
    assert any(p.segment == 2 for p in problems)


def test_flipped_byte_names_its_segment(sample: Sample) -> None:
    manifest = sample_manifest(sample)
    flip_byte(sample.wav, sample.data_offset + 2 * 50 * FRAME_BYTES + 333)
    problems = check_audio(manifest, sample.wav)
    assert len(problems) == 1
    assert problems[0].code == "segment-changed"
    assert problems[0].segment == 2
    assert "2.00-3.00 s" in problems[0].message


def test_changed_last_segment_is_found(sample: Sample) -> None:
    manifest = sample_manifest(sample)
    flip_byte(sample.wav, sample.wav.stat().st_size - 1)
    assert [(p.code, p.segment) for p in check_audio(manifest, sample.wav)] == [("segment-changed", 4)]


def _rewrite_data(sample: Sample, pcm: bytes) -> None:
    with wave.open(str(sample.wav), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)


def _pcm(sample: Sample) -> bytes:
    return sample.wav.read_bytes()[sample.data_offset :]


def test_truncation_inside_a_segment(sample: Sample) -> None:
    manifest = sample_manifest(sample)
    _rewrite_data(sample, _pcm(sample)[: (3 * 50 + 10) * FRAME_BYTES])
    problems = check_audio(manifest, sample.wav)
    assert [(p.code, p.segment) for p in problems] == [("audio-truncated", 3)]


def test_truncation_at_a_segment_boundary(sample: Sample) -> None:
    manifest = sample_manifest(sample)
    _rewrite_data(sample, _pcm(sample)[: 2 * 50 * FRAME_BYTES])
    problems = check_audio(manifest, sample.wav)
    assert [(p.code, p.segment) for p in problems] == [("audio-truncated", 2)]
    assert f"{sum(SEGMENTS) - 100} frames are missing" in problems[0].message


def test_file_cut_off_without_fixing_the_header(sample: Sample) -> None:
    manifest = sample_manifest(sample)
    with open(sample.wav, "r+b") as fh:
        fh.truncate(sample.data_offset + 4 * 50 * FRAME_BYTES + 7)
    assert [(p.code, p.segment) for p in check_audio(manifest, sample.wav)] == [("audio-truncated", 4)]


def test_extension_is_reported(sample: Sample) -> None:
    manifest = sample_manifest(sample)
    _rewrite_data(sample, _pcm(sample) + bytes(25 * FRAME_BYTES))
    problems = check_audio(manifest, sample.wav)
    assert [p.code for p in problems] == ["audio-extended"]
    assert "0.50 s" in problems[0].message


def test_wrong_wav_format_is_reported(sample: Sample) -> None:
    manifest = sample_manifest(sample)
    with wave.open(str(sample.wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(sum(SEGMENTS) * FRAME_BYTES))
    assert [p.code for p in check_audio(manifest, sample.wav)] == ["audio-format"]
    sample.wav.write_bytes(b"RIFX" + struct.pack("<I", 4) + b"junk")
    assert [p.code for p in check_audio(manifest, sample.wav)] == ["audio-malformed"]


def test_whole_audio_hash_mismatch_with_intact_segments(sample: Sample) -> None:
    manifest = sample_manifest(sample, audio_sha256="f" * 64)
    assert [p.code for p in check_audio(manifest, sample.wav)] == ["audio-hash"]
