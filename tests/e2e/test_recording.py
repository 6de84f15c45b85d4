"""Call recording end to end over the wire: consent, stereo, sensitive pauses, declines, crash recovery,
tampering, and a reviewer in a real browser.

One ``helpline serve`` for the module (ports 5500/5510/8150) with baresip and pjsua2 agents; the crash
test runs its own server (5520/5530/8151) because it kills it. Callers: SIPp streaming a 440 Hz tone
(``rtp_stream``), pjsua2 pressing keys, and our RTP probe phone (tones, in-band and RFC 4733 digits).
Audio is checked by tone detection on the stored file as the API serves it; nothing is taken on trust
from the server's own events.

The lines used (see ``tests/wire_flows``): +18005550109 asks for consent with keys (caller's rule:
consent), +18005550110 records the IVR with a sensitive card entry, +18005550111 records the IVR while
the caller waits, +18005550112 plays a notice then queues; the three last are notify-only lines, and
callers come from Texas (+1214...), a one-party state, as does the site.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import wave
import zipfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from helpline.recording.audio import find_dtmf
from helpline.recording.keys import load_public_key
from helpline.recording.verify import verify_bundle
from helpline.voice.tones import dominant_tone
from tests.e2e.queue_support import QueueFloor, api_client, make_agent, presence, state_is, wait_agent
from tests.e2e.server import REPO, RunningServer, start_server
from tests.sbc_bridge.agents.baresip_agent import BaresipAgent
from tests.support.pjsua_caller import run_pjsua_call
from tests.support.rtp_probe import RtpProbe, sine_pcm16
from tests.support.sip_uac import SipUac
from tests.support.sipp import require_binary, run_sipp

FLOOR = QueueFloor(sip_port=5500, agent_port=5510, http_port=8150)
CRASH = QueueFloor(sip_port=5520, agent_port=5530, http_port=8151)
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
ASK, PAYMENT, WAITING, NOTICE_QUEUE = "+18005550109", "+18005550110", "+18005550111", "+18005550112"
TEXAN = "+12145550123"
CALLER_HZ, AGENT_HZ = 440.0, 1000.0
PROBE_HZ = 697.0
PROBE_PCM = sine_pcm16([PROBE_HZ], 1.0)
HOLD_HZ = 440.0  # the queue's hold tone (the caller's SIPp tone elsewhere; never in the same call)
TONES = (CALLER_HZ, AGENT_HZ, PROBE_HZ, 523.0, 587.0)
CONFIG = """
[recording]
site = "US-TX"
segment_seconds = 1.0
encrypt = true
[recording.dids."+18005550109"]
mode = "consent"
include_ivr = true
[recording.dids."+18005550110"]
mode = "notify"
include_ivr = true
[recording.dids."+18005550111"]
mode = "notify"
include_ivr = true
[recording.dids."+18005550112"]
mode = "notify"
[queues.support]
ring_timeout_s = 6
wrapup_s = 1
[queues.billing]
ring_timeout_s = 6
wrapup_s = 1
"""
ENV = {"HELPLINE_AGENTS__MIN_EXPIRES": "10", "HELPLINE_AGENTS__DIGEST_ALGORITHMS": '["MD5"]'}
# The crash server keeps plain WAVs, so the tamper test can flip a byte of audio; the module's server
# encrypts at rest, so every download and play there is decrypted on the way out.
CRASH_ENV = {**ENV, "HELPLINE_RECORDING__ENCRYPT": "false"}
DTMF_FREQS = {"1": (697.0, 1209.0), "4": (770.0, 1209.0), "5": (770.0, 1336.0)}

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_binary("sipp")
    require_binary("baresip")
    yield from FLOOR.serve(tmp_path_factory.mktemp("recording"), CONFIG, ENV)


@pytest.fixture
async def api(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_client(server):
        yield client


# ---- helpers ------------------------------------------------------------------------------------------
async def recordings_of(api: httpx.AsyncClient, call_id: str, *, timeout: float = 20.0,
                        statuses: tuple[str, ...] = ("stored", "recovered")) -> list[dict[str, Any]]:
    """The call's recordings once sealed (the API's search by call id)."""
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = await api.get("/api/recordings", params={"call_id": call_id})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        if items and all(i["status"] in statuses for i in items):
            return items
        await asyncio.sleep(0.3)
    raise AssertionError(f"recording of {call_id} not sealed in {timeout} s: {items}")


async def download(api: httpx.AsyncClient, recording_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored recording as the API hands it out: (left, right) int16 channels at 8 kHz."""
    r = await api.get(f"/api/recordings/{recording_id}/download")
    assert r.status_code == 200, r.text
    with wave.open(io.BytesIO(r.content)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    return frames[:, 0].copy(), frames[:, 1].copy()


def tone_share(channel: np.ndarray, hz: float, *, window_s: float = 0.2, start_s: float = 0.0,
               end_s: float | None = None) -> float:
    """Share of the windows in [start, end) whose dominant tone (of TONES) is ``hz``."""
    step = int(window_s * 8000)
    first, last = int(start_s * 8000), len(channel) if end_s is None else int(end_s * 8000)
    hits = total = 0
    for at in range(first, last - step + 1, step):
        total += 1
        if dominant_tone(channel[at:at + step].tobytes(), 8000, TONES) == hz:
            hits += 1
    return hits / total if total else 0.0


async def call_detail(server: RunningServer, call_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = await asyncio.to_thread(server.get, f"/api/calls/{call_id}")
    return detail


async def wait_call_of(server: RunningServer, *, caller: str, since: datetime, timeout: float = 20.0
                       ) -> dict[str, Any]:
    """The newest ended call from ``caller`` that started after ``since``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = await asyncio.to_thread(server.calls, caller=caller)
        for call in calls:
            started = datetime.fromisoformat(call["started_at"].replace("Z", "+00:00"))
            if started >= since and call["ended_at"]:
                return dict(call)
        await asyncio.sleep(0.3)
    raise AssertionError(f"no ended call from {caller} since {since}")


def event_types(detail: dict[str, Any]) -> list[str]:
    return [e["type"] for e in detail.get("events", [])]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def dtmf_pcm(digit: str, seconds: float = 0.12) -> bytes:
    low, high = DTMF_FREQS[digit]
    return sine_pcm16([low, high], seconds)


# ---- stereo -------------------------------------------------------------------------------------------
async def test_a_recorded_call_has_the_caller_left_and_the_agent_right(
    server: RunningServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """SIPp streams 440 Hz, a baresip agent sends 1000 Hz: the stored file has 440 Hz on the left
    and 1000 Hz on the right, aligned, for as long as the two talked."""
    extension, password = await make_agent(api, "5101")
    tone = tmp_path / "tone440.wav"
    await asyncio.to_thread(subprocess.run, ["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", str(tone),
                                             "synth", "30", "sine", str(CALLER_HZ)], check=True, timeout=30)
    # SIPp reads rtp_stream files and pause lengths when it loads the scenario, before keys exist
    scenario = tmp_path / "caller.xml"
    scenario.write_text((SCENARIOS / "recorded_caller_tone.xml").read_text()
                        .replace("[tone_file]", str(tone)).replace("[talk_ms]", "7000"))
    async with BaresipAgent(registrar=("127.0.0.1", FLOOR.agent_port), extension=extension,
                            password=password, tone_hz=int(AGENT_HZ), workdir=tmp_path / "baresip"):
        await wait_agent(api, extension, reachable=True)
        await presence(api, extension, "ready")
        since = datetime.now(UTC)
        result = await run_sipp(
            scenario, ("127.0.0.1", FLOOR.sip_port), service=NOTICE_QUEUE,
            keys={"caller": TEXAN}, timeout_s=30, wait_s=45,
        )
        assert result.returncode == 0, result.explain()
    call = await wait_call_of(server, caller=TEXAN, since=since)
    detail = await call_detail(server, call["id"])
    types = event_types(detail)
    assert "recording.consent" in types and "recording.started" in types and "queue.connected" in types
    (rec,) = await recordings_of(api, call["id"])
    assert rec["channels"][0]["role"] == "caller" and rec["channels"][1]["role"] == "agent"
    assert rec["agent"] == extension and rec["consent_outcome"] == "granted"
    assert rec["encrypted"] is True  # at rest; the download below is decrypted by the server
    stored = next(server.data_dir.glob(f"recordings/*/*/*/{rec['id']}"))
    assert sorted(p.name for p in stored.iterdir() if p.name.startswith(("audio", "key"))) == [
        "audio.wav.enc", "key.wrapped"]
    left, right = await download(api, rec["id"])
    seconds = len(left) / 8000
    connected = next(e for e in detail["events"] if e["type"] == "queue.connected")["at"]
    talked = (datetime.fromisoformat(call["ended_at"].replace("Z", "+00:00"))
              - datetime.fromisoformat(connected.replace("Z", "+00:00"))).total_seconds()
    assert abs(seconds - talked) < 0.8, (seconds, talked)  # recording starts when the agent answers
    assert seconds > 3.0
    # Skip the first half second (jitter buffers priming, baresip's tone ramp) and the last one.
    assert tone_share(left, CALLER_HZ, start_s=0.5, end_s=seconds - 0.5) > 0.9
    assert tone_share(right, AGENT_HZ, start_s=0.5, end_s=seconds - 0.5) > 0.9
    assert tone_share(left, AGENT_HZ) < 0.05 and tone_share(right, CALLER_HZ) < 0.05  # no cross-talk
    integrity = (await api.get(f"/api/recordings/{rec['id']}/integrity")).json()
    assert integrity["status"] == "verified", integrity
    metrics = (await api.get("/metrics")).text
    sealed = re.search(r'^helpline_recording_events_total\{event="stored",outcome="none"\} (\S+)$',
                       metrics, re.M)
    assert sealed and float(sealed.group(1)) >= 1, metrics
    seconds_total = re.search(r"^helpline_recorded_seconds_total (\S+)$", metrics, re.M)
    assert seconds_total and float(seconds_total.group(1)) >= seconds - 0.1
    assert re.search(r"^helpline_recording_writer_backlog 0\.0$", metrics, re.M), metrics


# ---- consent by key -----------------------------------------------------------------------------------
async def _answer_consent(server: RunningServer, key: str) -> dict[str, Any]:
    """A pjsua2 caller on the consent line keys ``key`` (RFC 2833) and stays until the server hangs up
    (the support queue has nobody, so the flow says goodbye); returns the call's CDR."""
    since = datetime.now(UTC)
    result = await asyncio.to_thread(run_pjsua_call, f"sip:{ASK}@127.0.0.1:{FLOOR.sip_port}", [
        {"op": "wait_answer", "timeout": 5},
        {"op": "sleep", "ms": 700},
        {"op": "dtmf", "digits": key, "method": "rfc2833"},
        {"op": "wait_remote_hangup", "timeout": 10},
    ], timeout=30)
    assert not result["errors"], result
    calls = await asyncio.to_thread(server.calls)
    return next(c for c in calls if datetime.fromisoformat(c["started_at"].replace("Z", "+00:00")) >= since)


# ---- decline ------------------------------------------------------------------------------------------
async def test_a_declined_consent_leaves_nothing_under_the_data_dir(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """A pjsua2 caller presses 2 at the consent prompt: no file, segment, row or job exists for the
    call anywhere under the data dir; the decision itself is stored as evidence."""
    before = files_under(server.data_dir)
    call = await _answer_consent(server, "2")
    detail = await call_detail(server, call["id"])
    consent = [e for e in detail["events"] if e["type"] == "recording.consent"]
    assert [c["data"]["outcome"] for c in consent] == ["denied"], consent
    assert "recording.started" not in event_types(detail)
    await asyncio.sleep(1.5)  # anything a late writer would have made has had time to appear
    new = {p for p in files_under(server.data_dir) - before
           if "prompt-cache" not in p.parts and not p.name.startswith("helpline.db")}
    assert new == set(), new
    r = await api.get("/api/recordings", params={"call_id": call["id"]})
    assert r.json()["items"] == []
    spool = server.data_dir / "spool"
    assert not spool.exists() or not any(spool.iterdir())


async def test_a_caller_who_presses_1_is_recorded_and_the_evidence_names_the_prompt_and_the_key(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """A pjsua2 caller on the consent line presses 1 (RFC 2833): the decision is stored as evidence
    (method dtmf, key 1, the policy and its version, the prompt's id, language and audio hash, UTC
    times in order), the recording starts only after it and carries the evidence's hash."""
    call = await _answer_consent(server, "1")
    (rec,) = await recordings_of(api, call["id"])
    view = (await api.get(f"/api/recordings/{rec['id']}")).json()
    (evidence,) = view["consent"]
    assert (evidence["outcome"], evidence["method"], evidence["response"]) == ("granted", "dtmf", "1")
    assert evidence["mode"] == "consent" and evidence["policy_id"] == "did:+18005550109"
    assert len(evidence["policy_version"]) == 12 and evidence["jurisdiction"]["caller"]
    assert evidence["prompt_id"] and evidence["language"] == "en"
    assert re.fullmatch(r"[0-9a-f]{64}", evidence["prompt_sha256"] or ""), evidence
    moments = [datetime.fromisoformat(evidence[k].replace("Z", "+00:00"))
               for k in ("prompt_started_at", "prompt_ended_at", "responded_at", "decided_at")]
    assert moments == sorted(moments), evidence
    started = datetime.fromisoformat(rec["started_at"].replace("Z", "+00:00"))
    assert started >= moments[-1]  # nothing of the caller before the grant
    assert rec["consent_ids"][0]["sha256"] == evidence["record_sha256"]
    assert (await api.get(f"/api/recordings/{rec['id']}/integrity")).json()["status"] == "verified"
    _left, right = await download(api, rec["id"])
    assert tone_share(right, 587.0, start_s=0.1, end_s=1.4) > 0.8  # the IVR after the grant is recorded
    assert tone_share(right, 523.0) == 0.0  # the consent prompt itself came before: not recorded


# ---- sensitive node -----------------------------------------------------------------------------------
async def test_keys_in_a_sensitive_node_reach_no_file_and_no_log(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """The probe caller keys a card number (RFC 4733 events and in-band tones together, as many phones
    do) in a sensitive node while the IVR is recorded, then keys once more outside it: a Goertzel
    scan of both stored channels finds no DTMF, the paused span is marked, the caller's voice is
    there outside it, and no log line or event holds the digits."""
    card = "411111"
    since = datetime.now(UTC)
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await FLOOR.call_in(uac, probe, PAYMENT, caller=TEXAN)
        await asyncio.sleep(1.5)  # the notice (200 ms), recording starts, the card prompt
        await probe.stop_audio()
        for digit in card:
            await asyncio.gather(probe.send_dtmf(digit, duration_ms=120), probe.send_pcm(dtmf_pcm(digit)))
            await probe.send_silence(0.1)
        probe.start_audio(PROBE_PCM)
        await asyncio.sleep(2.0)
        await probe.stop_audio()
        await probe.send_pcm(dtmf_pcm("5"))  # outside the sensitive node: scrubbed all the same
        probe.start_audio(PROBE_PCM)
        await asyncio.sleep(2.5)
        assert await call.bye() == 200
    ended = await wait_call_of(server, caller=TEXAN, since=since)
    detail = await call_detail(server, ended["id"])
    paused = [e for e in detail["events"] if e["type"] == "recording.paused"]
    assert [p["data"]["reason"] for p in paused] == ["sensitive"], paused
    (rec,) = await recordings_of(api, ended["id"])
    spans = [o for o in rec["overlays"] if o.get("kind") == "pause"]
    assert spans and spans[0]["reason"] == "sensitive", rec["overlays"]
    left, right = await download(api, rec["id"])
    assert find_dtmf(left.tobytes()) == [] and find_dtmf(right.tobytes()) == []
    seconds = len(left) / 8000
    assert tone_share(left, PROBE_HZ, start_s=seconds - 2.3, end_s=seconds - 0.3) > 0.7  # voice is kept
    pause_end = spans[0]["end"] * 0.02
    assert tone_share(left, PROBE_HZ, start_s=spans[0]["start"] * 0.02, end_s=pause_end) == 0.0
    log_text = server.log_path.read_text()
    assert card not in log_text and card not in json.dumps(detail)
    digits = [e["data"]["digit"] for e in detail["events"] if e["type"] == "dtmf.received"]
    assert digits and set(digits) == {"*"}, digits


# ---- crash recovery -----------------------------------------------------------------------------------
async def test_kill_9_during_20_recordings_then_restart_recovers_every_one(tmp_path: Path) -> None:
    """20 recorded calls, the server is SIGKILLed, started again: recovery seals every recording, each
    file plays and lost at most 2 s against the time it ran."""
    require_binary("sipp")
    srv = start_server(tmp_path, sip_port=CRASH.sip_port, http_port=CRASH.http_port, extra=CONFIG,
                       agent_port=CRASH.agent_port, env=CRASH_ENV)
    uac = await SipUac.open()
    probes = [await RtpProbe.open() for _ in range(20)]
    try:
        callers = [f"+1214555{1000 + n:04d}" for n in range(20)]
        calls = await asyncio.gather(*(
            uac.invite(f"sip:{WAITING}@127.0.0.1:{CRASH.sip_port}", _offer(p), caller=c)
            for p, c in zip(probes, callers, strict=True)
        ))
        for probe, call in zip(probes, calls, strict=True):
            assert call.status == 200 and call.media is not None
            probe.use_answer(call.media)
            probe.start_audio(PROBE_PCM)
        async with httpx.AsyncClient(base_url=srv.api, headers=srv.headers, timeout=5) as api:
            deadline = time.monotonic() + 20
            live: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                live = (await api.get("/api/recordings", params={"status": "recording", "limit": 50})
                        ).json()["items"]
                if len(live) == 20:
                    break
                await asyncio.sleep(0.3)
            assert len(live) == 20, live
        await asyncio.sleep(4.0)
        srv.proc.send_signal(signal.SIGKILL)
        killed_at = datetime.now(UTC)
        srv.proc.wait(timeout=10)
    finally:
        for probe in probes:
            probe.close()
        uac.close()
    srv2 = start_server(tmp_path, sip_port=CRASH.sip_port, http_port=CRASH.http_port, extra=CONFIG,
                        agent_port=CRASH.agent_port, env=CRASH_ENV)
    try:
        async with httpx.AsyncClient(base_url=srv2.api, headers=srv2.headers, timeout=10) as api:
            found = await api.get("/api/recordings", params={"status": "recovered", "limit": 50})
            rows = found.json()["items"]
            assert len(rows) == 20, [r["status"] for r in rows]
            for row in rows:
                cdr = (await api.get(f"/api/calls/{row['call_id']}")).json()
                assert cdr["disposition"] == "failed" and cdr["end_reason"].startswith("interrupted"), cdr
                answered = datetime.fromisoformat(cdr["answered_at"].replace("Z", "+00:00"))
                started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
                assert answered <= started < answered + timedelta(seconds=3)  # after the notice
                ran = (killed_at - started).total_seconds()
                left, _right = await download(api, row["id"])
                kept = len(left) / 8000
                assert ran - 2.0 <= kept <= ran + 0.5, (row["id"], ran, kept)
                assert tone_share(left, PROBE_HZ, start_s=0.5, end_s=kept - 0.5) > 0.8
                integrity = (await api.get(f"/api/recordings/{row['id']}/integrity")).json()
                assert integrity["status"] == "verified", integrity
        assert not any((srv2.data_dir / "spool").iterdir())
        verify = _verify_cli(tmp_path / "helpline.toml")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        _tamper_and_verify(tmp_path / "helpline.toml", srv2.data_dir / "recordings", rows)
    finally:
        assert srv2.stop() == 0


def _offer(probe: RtpProbe) -> str:
    from tests.support.rtp_probe import make_sdp_offer

    return make_sdp_offer(probe.local_port)


def _verify_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helpline", "recordings", "verify", "--all", "--config", str(cfg), *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _recording_dir(root: Path, recording_id: str) -> Path:
    (found,) = [p for p in root.glob(f"*/*/*/{recording_id}") if p.is_dir()]
    return found


def _tamper_and_verify(cfg: Path, root: Path, rows: list[dict[str, Any]]) -> None:
    """Flip one byte of one recording, delete a second, edit a third's manifest: ``verify`` names each."""
    flipped, deleted, edited = rows[0]["id"], rows[1]["id"], rows[2]["id"]
    audio = _recording_dir(root, flipped) / "audio.wav"
    os.chmod(audio, 0o640)
    data = bytearray(audio.read_bytes())
    data[44 + 640 * 60 + 3] ^= 0x01  # a sample in the second segment
    audio.write_bytes(bytes(data))
    import shutil

    shutil.rmtree(_recording_dir(root, deleted))
    manifest = _recording_dir(root, edited) / "manifest.json"
    os.chmod(manifest, 0o640)
    doc = json.loads(manifest.read_text())
    doc["call_id"] = "0" * 32
    manifest.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    result = _verify_cli(cfg)
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert re.search(rf"{flipped}.*segment", report), report
    assert re.search(rf"{deleted}.*(missing)", report), report
    assert re.search(rf"{edited}.*(signature|manifest)", report), report
    for row in rows[3:]:
        assert not re.search(rf"FAIL\s+{row['id']}", report), report


# ---- people and the reviewer ----------------------------------------------------------------------
def _cli(server: RunningServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cfg = server.data_dir.parent / "helpline.toml"
    return subprocess.run(
        [sys.executable, "-m", "helpline", *args, "--config", str(cfg)], input=stdin, capture_output=True,
        text=True, cwd=REPO, timeout=60,
    )


async def _user(server: RunningServer, name: str, role: str, password: str, *extra: str) -> None:
    result = await asyncio.to_thread(_cli, server, "user", "add", name, "--role", role, "--password-stdin",
                                     *extra, stdin=password + "\n")
    assert result.returncode == 0, result.stderr


async def _record_ivr_call(server: RunningServer, api: httpx.AsyncClient, caller: str, seconds: float
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A probe caller on the recorded waiting line for ``seconds``; returns (CDR, recording)."""
    since = datetime.now(UTC)
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await FLOOR.call_in(uac, probe, WAITING, caller=caller)
        await asyncio.sleep(seconds)
        assert await call.bye() == 200
    ended = await wait_call_of(server, caller=caller, since=since)
    (rec,) = await recordings_of(api, ended["id"])
    return ended, rec


async def test_an_agent_may_not_list_or_play_and_a_reviewer_plays_in_chromium_with_the_play_audited(
    server: RunningServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Real users made with the CLI: an agent gets 403 on the list and on play (each refusal audited);
    a compliance reviewer signs in in headless Chromium, finds the call by its caller, sees the
    integrity badge, plays it, and the audit log holds exactly one play of it with its time range."""
    from playwright.async_api import expect

    from tests.support.browser import WAIT_MS, chromium, sign_in

    caller = "+12145550777"
    _call, rec = await _record_ivr_call(server, api, caller, 4.0)
    await _user(server, "alice", "agent", "alice-password-1")
    await _user(server, "carol", "compliance", "carol-password-1")
    async with httpx.AsyncClient(base_url=server.api, timeout=5) as http:
        signed = await http.post("/api/session", json={"username": "alice", "password": "alice-password-1",
                                                       "kind": "api"})
        assert signed.status_code == 200, signed.text
        agent = {"Authorization": f"Bearer {signed.json()['token']}"}
        assert (await http.get("/api/recordings", headers=agent)).status_code == 403
        played = await http.post(f"/api/recordings/{rec['id']}/play", json={"start": 0, "end": 2},
                                 headers=agent)
        assert played.status_code == 403
        assert (await http.get(f"/api/recordings/{rec['id']}/download", headers=agent)).status_code == 403

    async with chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(WAIT_MS)
        await sign_in(page, server.api, "carol", "carol-password-1")
        await page.fill("input[name=caller]", caller)
        await page.click("#search")
        rows = page.locator("#results tbody tr")
        await expect(rows).to_have_count(1)
        await rows.first.locator("a.open").click()
        await page.wait_for_url(f"**/ui/recordings/{rec['id']}")
        await expect(page.locator("#integrity")).to_have_attribute("data-status", "verified")
        await expect(page.locator("#waveform")).to_have_attribute("data-drawn", "true")
        await page.click("#play")
        await page.wait_for_function("() => document.getElementById('audio').currentTime > 1",
                                     timeout=WAIT_MS)
        await page.click("#play")
        await page.wait_for_function("() => document.getElementById('audio').paused", timeout=WAIT_MS)

        # the search result, exported from the page: a bundle that verifies offline
        await page.goto(server.api + "/ui/recordings.html")
        await page.fill("input[name=caller]", caller)
        async with page.expect_download() as download_info:
            await page.click("#export")
        bundle = tmp_path / "export.zip"
        await (await download_info.value).save_as(bundle)
    public_key = load_public_key(server.data_dir / "recordings" / "keys" / "recording-signing.pub")
    report = await asyncio.to_thread(verify_bundle, bundle, public_key)
    assert report.ok, report.to_dict()
    with zipfile.ZipFile(bundle) as zf:
        assert f"{rec['id']}/audio.wav" in zf.namelist()

    audit = (await api.get("/api/audit", params={"target_id": rec["id"]})).json()["items"]
    plays = [a for a in audit if a["action"] == "play" and a["outcome"] == "ok"]
    assert len(plays) == 1, audit
    assert plays[0]["actor"] == "carol" and plays[0]["detail"]["start"] == 0
    assert plays[0]["detail"]["end"] == pytest.approx(rec["duration_s"], abs=0.05)
    refused = (await api.get("/api/audit", params={"actor": "alice"})).json()["items"]
    denied = [a for a in refused if a["outcome"] == "denied"]
    assert len(denied) == 3, refused  # the list, the play and the download
    exports = (await api.get("/api/audit", params={"actor": "carol", "action": "export"})).json()["items"]
    assert len(exports) == 1 and exports[0]["detail"]["search"] == {"caller": caller}, exports


# ---- withdrawal ---------------------------------------------------------------------------------------
async def test_a_caller_who_withdraws_consent_mid_call_is_not_recorded_afterwards(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """On the recorded waiting line the caller keys *7 after 3 s, then keeps talking: nothing after the
    withdrawal is stored (the policy records nothing once consent is gone), the decision is evidence,
    and the recording up to it is kept and verifies."""
    caller = "+12145550888"
    since = datetime.now(UTC)
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await FLOOR.call_in(uac, probe, WAITING, caller=caller)
        await asyncio.sleep(3.0)
        await probe.send_dtmf("*", duration_ms=100)
        await probe.send_dtmf("7", duration_ms=100)
        await asyncio.sleep(3.0)  # still sending the tone: it must not be stored
        assert await call.bye() == 200
    ended = await wait_call_of(server, caller=caller, since=since)
    detail = await call_detail(server, ended["id"])
    withdrawn = [e for e in detail["events"] if e["type"] == "recording.withdrawn"]
    assert len(withdrawn) == 1, event_types(detail)
    (rec,) = await recordings_of(api, ended["id"])
    left, right = await download(api, rec["id"])
    cut = withdrawn[0]["data"]["frame"] * 0.02
    seconds = len(left) / 8000
    assert 2.0 < cut < seconds, (cut, seconds)
    assert tone_share(left, PROBE_HZ, start_s=0.5, end_s=cut - 0.3) > 0.8  # before: the caller is there
    after = slice(int((cut + 0.1) * 8000), None)
    assert not left[after].any() and not right[after].any()  # after: nothing but zeros
    outcomes = [c["outcome"] for c in (await api.get(f"/api/recordings/{rec['id']}")).json()["consent"]]
    assert outcomes == ["granted", "withdrawn"], outcomes


# ---- hold and transfer --------------------------------------------------------------------------------
def _marks(rec: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [o for o in rec["overlays"] if o.get("kind") == kind and "frame" in o]


async def test_hold_and_a_transfer_to_a_second_agent_stay_in_one_recording(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """pjsua2 agent A answers (echoing the caller), holds, resumes and transfers the caller to the
    billing queue, where agent B answers: one recording covers all of it, with marks for both agents,
    the hold and the transfer, and the caller's echo on the agent channel from each agent in turn."""
    first_ext, first_pw = await make_agent(api, "5201")
    second_ext, second_pw = await make_agent(api, "5202", queues=("billing",))
    caller = "+12145550999"
    since = datetime.now(UTC)
    first = await FLOOR.staffed_pjsua(api, first_ext, first_pw, echo=True)
    second = await FLOOR.staffed_pjsua(api, second_ext, second_pw, echo=True)
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, NOTICE_QUEUE, caller=caller)
            probe.start_audio(PROBE_PCM)
            await first.wait_event(state_is("CONFIRMED"), 10)
            await asyncio.sleep(2.0)
            first.command("hold")
            await wait_agent(api, first_ext, activity="held")
            await asyncio.sleep(2.0)
            first.command("unhold")
            await wait_agent(api, first_ext, activity="connected")
            await asyncio.sleep(1.5)
            first.command("transfer", target=f"sip:queue-billing@127.0.0.1:{FLOOR.agent_port}")
            await second.wait_event(state_is("CONFIRMED"), 15)
            await asyncio.sleep(2.5)
            assert await call.bye() == 200
    finally:
        await first.stop()
        await second.stop()
    ended = await wait_call_of(server, caller=caller, since=since)
    (rec,) = await recordings_of(api, ended["id"])
    assert [a["agent"] for a in rec["agents"]] == [first_ext, second_ext], rec["agents"]
    agents = [m["data"].get("extension") for m in _marks(rec, "agent")]
    assert agents[-1] == second_ext, rec["overlays"]
    holds = [m["data"]["held"] for m in _marks(rec, "hold")]
    assert holds == [True, False], rec["overlays"]
    (transfer,) = _marks(rec, "transfer")
    assert transfer["data"]["queue"] == "billing"
    left, right = await download(api, rec["id"])
    held_at, resumed_at = (m["frame"] * 0.02 for m in _marks(rec, "hold"))
    second_at = _marks(rec, "agent")[-1]["frame"] * 0.02
    seconds = len(left) / 8000
    assert tone_share(left, PROBE_HZ, start_s=0.5, end_s=seconds - 0.3) > 0.85  # the caller throughout
    assert tone_share(right, PROBE_HZ, start_s=0.5, end_s=held_at - 0.2) > 0.7  # agent A's echo
    # on hold the caller hears the hold tone (400 ms in every 4 s), never the agent
    assert tone_share(right, HOLD_HZ, start_s=held_at + 0.1, end_s=resumed_at - 0.1) > 0
    assert tone_share(right, PROBE_HZ, start_s=held_at + 0.3, end_s=resumed_at - 0.1) == 0
    assert tone_share(right, PROBE_HZ, start_s=second_at + 0.6, end_s=seconds - 0.3) > 0.7  # agent B's echo


# ---- proof of recording -------------------------------------------------------------------------------
async def test_reconcile_passes_a_full_recording_and_flags_a_silent_caller(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """``helpline recordings reconcile`` over two calls on the recorded waiting line: one caller talks
    and passes; one stays silent (the probe sends no audio), and reconcile flags that recording as
    one-sided on the caller's channel, exiting 1 so a cron job alerts."""
    since = datetime.now(UTC)
    await _record_ivr_call(server, api, "+12145550444", 3.0)
    quiet_since = datetime.now(UTC)
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await FLOOR.call_in(uac, probe, WAITING, caller="+12145550445")
        await probe.stop_audio()  # a caller whose microphone is dead
        await asyncio.sleep(3.5)
        assert await call.bye() == 200
    quiet = await wait_call_of(server, caller="+12145550445", since=quiet_since)
    (quiet_rec,) = await recordings_of(api, quiet["id"])
    result = await asyncio.to_thread(_cli, server, "recordings", "reconcile", "--since", since.isoformat(),
                                     "--settle", "0", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1, report
    assert report["in_scope"] == 2 and report["ok"] == 1, report
    (finding,) = report["findings"]
    assert (finding["code"], finding["role"]) == ("one_sided", "caller")
    assert finding["recording_id"] == quiet_rec["id"]
