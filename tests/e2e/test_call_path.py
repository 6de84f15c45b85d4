"""The call path over the wire: SIPp and pjsua2 call ``helpline serve``; the API shows the result."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import RunningServer
from tests.support.pjsua_caller import run_pjsua_call
from tests.support.rtp_probe import RtpProbe, make_sdp_offer
from tests.support.sip_uac import SipUac
from tests.support.sipp import run_sipp

DTMF_DID = "+18005550101"


def _events(call: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [e for e in call["events"] if e["type"] == type_]


def _milestones(call: dict[str, Any]) -> list[str]:
    return [e["data"]["name"] for e in _events(call, "ivr.milestone")]


async def _dtmf_call(server: RunningServer, scenarios: Path, digit: str, transport: str) -> dict[str, Any]:
    result = await run_sipp(
        scenarios / "uac_dtmf_rfc4733.xml", ("127.0.0.1", server.sip_port), transport=transport,
        local_ip="127.0.0.1", service=DTMF_DID, extra=["-set", "digit", digit], timeout_s=30, wait_s=45,
    )
    assert result.returncode == 0, result.explain()
    call_id = _sip_call_id(result)
    return await asyncio.to_thread(server.wait_call, sip_call_id=call_id) if call_id else {}


async def _pjsua_call(
    server: RunningServer, did: str, steps: list[dict[str, Any]], transport: str = "udp"
) -> dict[str, Any]:
    """Place a scripted pjsua2 call; returns the stored call (CDR and events) once it has ended."""
    result = await asyncio.to_thread(
        run_pjsua_call, f"sip:{did}@127.0.0.1:{server.sip_port}", steps, 45.0, transport=transport
    )
    assert not result["errors"], result
    assert result["hangup_by"] == "remote", result
    call: dict[str, Any] = await asyncio.to_thread(server.wait_call, sip_call_id=result["call_id"])
    return call


def _sip_call_id(result: Any) -> str:
    for line in result.messages.splitlines():
        if line.lower().startswith("call-id:"):
            return str(line.split(":", 1)[1].strip())
    raise AssertionError("no Call-ID in the SIPp message trace")


async def test_rfc4733_digit_over_udp_takes_the_branch(server: RunningServer, scenarios: Path) -> None:
    call = await _dtmf_call(server, scenarios, "1", "u1")
    assert call["disposition"] == "completed"
    assert call["transport"] == "udp"
    assert call["flow_id"] == "dtmf_branch"
    assert call["caller"] == "+15551230001"
    assert call["did"] == DTMF_DID
    digits = _events(call, "dtmf.received")
    assert [(d["data"]["digit"], d["data"]["source"]) for d in digits] == [("1", "rtp")]
    assert _milestones(call) == ["branch_1"]
    assert call["end_reason"] and "flow" in call["end_reason"]


async def test_rfc4733_digit_over_tcp_takes_the_branch(server: RunningServer, scenarios: Path) -> None:
    call = await _dtmf_call(server, scenarios, "2", "t1")
    assert call["transport"] == "tcp"
    assert _milestones(call) == ["branch_2"]


async def test_sip_info_digit_takes_the_branch(server: RunningServer, scenarios: Path) -> None:
    result = await run_sipp(
        scenarios / "uac_info_dtmf.xml", ("127.0.0.1", server.sip_port), local_ip="127.0.0.1",
        service=DTMF_DID, extra=["-set", "digit", "2"], timeout_s=30, wait_s=45,
    )
    assert result.returncode == 0, result.explain()
    call = await asyncio.to_thread(server.wait_call, sip_call_id=_sip_call_id(result))
    digits = [(d["data"]["digit"], d["data"]["source"]) for d in _events(call, "dtmf.received")]
    assert digits == [("2", "info")]
    assert _milestones(call) == ["branch_2"]


async def test_pjsua2_caller_enters_a_pin(server: RunningServer) -> None:
    steps = [
        {"op": "wait_answer", "timeout": 10},
        {"op": "sleep", "ms": 900},
        {"op": "dtmf", "digits": "3"},
        {"op": "sleep", "ms": 900},
        {"op": "dtmf", "digits": "4321"},  # max_length 4 completes the collect without '#'

        {"op": "wait_remote_hangup", "timeout": 20},
    ]
    call = await _pjsua_call(server, DTMF_DID, steps)
    assert "".join(d["data"]["digit"] for d in _events(call, "dtmf.received")) == "34321"
    assert _milestones(call) == ["pin_ok"]
    inputs = [e["data"] for e in _events(call, "ivr.input")]
    assert any(i.get("value") == "4321" for i in inputs), inputs


async def test_pjsua2_repeated_digits_are_not_merged(server: RunningServer) -> None:
    steps = [
        {"op": "wait_answer", "timeout": 10},
        {"op": "sleep", "ms": 700},
        {"op": "dtmf", "digits": "1122#"},
        {"op": "wait_remote_hangup", "timeout": 20},
    ]
    call = await _pjsua_call(server, "+18005550103", steps)
    assert "".join(d["data"]["digit"] for d in _events(call, "dtmf.received")) == "1122#"
    assert _milestones(call) == ["got_1122"]


async def test_pjsua2_caller_over_tcp_with_info_digits(server: RunningServer) -> None:
    steps = [
        {"op": "wait_answer", "timeout": 10},
        {"op": "sleep", "ms": 900},
        {"op": "dtmf", "digits": "1", "method": "sipinfo"},
        {"op": "wait_remote_hangup", "timeout": 20},
    ]
    call = await _pjsua_call(server, DTMF_DID, steps, transport="tcp")
    assert call["transport"] == "tcp"
    digits = [(d["data"]["digit"], d["data"]["source"]) for d in _events(call, "dtmf.received")]
    assert digits == [("1", "info")]
    assert _milestones(call) == ["branch_1"]


async def test_caller_bye_mid_prompt_ends_the_call(server: RunningServer, scenarios: Path) -> None:
    result = await run_sipp(
        scenarios / "uac_bye_mid_prompt.xml", ("127.0.0.1", server.sip_port), local_ip="127.0.0.1",
        service="+18005550102", timeout_s=20, wait_s=30,
    )
    assert result.returncode == 0, result.explain()
    call = await asyncio.to_thread(server.wait_call, sip_call_id=_sip_call_id(result))
    assert call["disposition"] == "completed"
    ended = _events(call, "call.ended")[0]["data"]
    assert ended["by"] == "remote_bye"
    # the 20 s prompt was cut: the call lasted about the 1 s the caller waited
    assert not _events(call, "ivr.prompt_played") or call["events"][-1]["type"] == "call.ended"
    assert not _milestones(call)


async def test_reinvite_hold_and_back(server: RunningServer, scenarios: Path) -> None:
    result = await run_sipp(
        scenarios / "uac_reinvite_hold.xml", ("127.0.0.1", server.sip_port), local_ip="127.0.0.1",
        service="+18005550102", timeout_s=20, wait_s=30,
    )
    assert result.returncode == 0, result.explain()
    call = await asyncio.to_thread(server.wait_call, sip_call_id=_sip_call_id(result))
    reinvites = [e["data"] for e in _events(call, "sip.reinvite")]
    assert [(r["accepted"], r["direction"]) for r in reinvites] == [(True, "recvonly"), (True, "sendrecv")]


async def test_unknown_did_gets_404_and_is_stored(server: RunningServer, scenarios: Path) -> None:
    result = await run_sipp(
        scenarios / "uac_expect_404.xml", ("127.0.0.1", server.sip_port), local_ip="127.0.0.1",
        service="+18005559999", timeout_s=10, wait_s=20,
    )
    assert result.returncode == 0, result.explain()
    call = await asyncio.to_thread(server.wait_call, sip_call_id=_sip_call_id(result))
    assert call["disposition"] == "refused"
    assert call["sip_code"] == 404
    events = await asyncio.to_thread(server.get, "/api/security-events", type="security.unknown_did")
    assert any(e["data"].get("sip_call_id") == call["sip_call_id"] for e in events["items"])


async def test_barge_in_digit_is_used_once(server: RunningServer) -> None:
    """'3' cuts the menu prompt; it must not also become the PIN's first digit."""
    steps = [
        {"op": "wait_answer", "timeout": 10},
        {"op": "sleep", "ms": 450},  # greeting 400 ms (no barge-in), menu prompt 400 ms (barge-in)
        {"op": "dtmf", "digits": "3"},
        {"op": "sleep", "ms": 1200},
        {"op": "dtmf", "digits": "4321"},
        {"op": "wait_remote_hangup", "timeout": 20},
    ]
    call = await _pjsua_call(server, DTMF_DID, steps)
    menu_prompt = [e for e in _events(call, "ivr.prompt_played") if e["node_id"] == "main_menu"]
    digit_3 = next(e for e in _events(call, "dtmf.received") if e["data"]["digit"] == "3")
    assert menu_prompt and menu_prompt[0]["at"] >= digit_3["at"], "the digit did not arrive during the prompt"
    assert _milestones(call) == ["pin_ok"], [e["data"] for e in _events(call, "ivr.input")]


async def test_sensitive_pin_never_reaches_the_event_log_or_the_logs(server: RunningServer) -> None:
    steps = [
        {"op": "wait_answer", "timeout": 10},
        {"op": "sleep", "ms": 600},
        {"op": "dtmf", "digits": "4321"},
        {"op": "wait_remote_hangup", "timeout": 20},
    ]
    call = await _pjsua_call(server, "+18005550104", steps)
    assert _milestones(call) == ["pin_ok"]
    digits = _events(call, "dtmf.received")
    assert len(digits) == 4 and all(d["data"]["digit"] == "*" and d["data"]["masked"] for d in digits)
    stored = json.dumps(call["events"])
    assert "4321" not in stored
    assert not any(d in stored for d in ('"4"', '"3"', '"2"', '"1"')), stored
    assert "4321" not in server.log_path.read_text()


@pytest.mark.parametrize(("sipfrag", "milestones", "ended_by"), [
    (200, [], "flow"),
    (486, ["transfer_busy"], "flow"),
    (None, ["transfer_failed"], "flow"),
])
async def test_blind_transfer_through_the_trunk(
    server: RunningServer, sipfrag: int | None, milestones: list[str], ended_by: str
) -> None:
    """REFER to the trunk: a 200 sipfrag hands the caller over; busy and refusal take the flow's outcomes."""
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await uac.invite(
            f"sip:+18005550105@127.0.0.1:{server.sip_port}", make_sdp_offer(probe.local_port),
            refer_status=sipfrag,
        )
        assert call.status == 200
        refer_to = await call.wait_refer(10)
        assert refer_to is not None and "+15551239999" in refer_to
        assert await call.wait_remote_bye(10), "Helpline keeps no leg after the transfer ends"
    detail = await asyncio.to_thread(server.wait_call, sip_call_id=call.call_id)
    assert _milestones(detail) == milestones
    transfers = [e["data"] for e in _events(detail, "ivr.transfer")]
    assert transfers and transfers[0]["result"] == {200: "connected", 486: "busy", None: "failed"}[sipfrag]
    assert _events(detail, "call.ended")[0]["data"]["by"] == ended_by
    assert detail["disposition"] == ("transferred" if sipfrag == 200 else "completed")


def test_the_data_folder_and_the_database_are_private_to_the_service(server: RunningServer) -> None:
    """The data folder holds the database, keys and recordings: nobody else on the host may read it."""
    assert server.data_dir.stat().st_mode & 0o777 == 0o700
    database = server.data_dir / "helpline.sqlite3"
    assert database.stat().st_mode & 0o777 == 0o600
    assert (server.data_dir / "tls" / "edge.key").stat().st_mode & 0o777 == 0o600
