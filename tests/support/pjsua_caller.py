"""A real SIP phone (pjsua2) placing one scripted call, for end-to-end tests.

pjsua2 keeps one global Endpoint per process and runs its own threads, so each call runs in a
subprocess and reports a JSON result on stdout. From pytest::

    result = await asyncio.to_thread(run_pjsua_call, "sip:+18005550100@127.0.0.1:5070", [
        {"op": "wait_answer", "timeout": 5},
        {"op": "dtmf", "digits": "11", "method": "rfc2833"},
        {"op": "dtmf", "digits": "2", "method": "sipinfo"},
        {"op": "hold"}, {"op": "unhold"},
        {"op": "sleep", "ms": 500},
        {"op": "hangup"},
    ], timeout=30)
    assert result["last_status"] == 200 and result["hangup_by"] == "local"

Steps (each a dict with "op"):
  wait_answer(timeout=10)          wait for CONFIRMED; error if the call ends first
  sleep(ms)
  dtmf(digits, method="rfc2833"|"sipinfo", duration_ms=160, gap_ms=200)
  hold(timeout=5) / unhold(timeout=5)   re-INVITE sendonly / sendrecv; waits for its final response
  hangup(code=None)                BYE (CANCEL or a final response when not yet answered)
  wait_remote_hangup(timeout=10)   wait until the far end ends the call

Result keys: states (list of {"state", "status", "t"}), statuses (every SIP response status seen on
client transactions, as {"method", "status"}), last_status, hangup_by ("local" | "remote" | None),
codec (from the SDP answer, e.g. "PCMU"), steps_done,
errors (strings; empty on success), call_id, log_file.

Must run where pjsua2 advertises 127.0.0.1 (inside scripts/in-netns).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.pjsua_common import prop, retry_busy, start_endpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
PJSUA_CALL_UNHOLD = 1  # pjsua_call_flag: not exported by the pybind11 wrapper


def run_pjsua_call(
    target: str,
    steps: Sequence[dict[str, Any]],
    timeout: float = 30.0,
    *,
    transport: str = "udp",
    caller: str = "+15551230001",
    log_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Place one scripted call in a pjsua2 subprocess and return its JSON result.

    Blocking (it waits for the subprocess): call it via asyncio.to_thread from async tests. The
    subprocess is killed after ``timeout`` seconds and the result then carries that error.
    """
    if log_file is None:
        log_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"pjsua-{os.getpid()}-{time.monotonic_ns()}.log"
    args = {
        "target": target,
        "steps": list(steps),
        "transport": transport,
        "caller": caller,
        "log_file": str(log_file),
        "deadline": timeout - 2.0,
    }
    cmd = [sys.executable, "-m", "tests.support.pjsua_caller", "--json-args", json.dumps(args)]
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return {
            "errors": [f"pjsua caller killed after {timeout}s"],
            "log_file": str(log_file),
            "stderr": (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else exc.stderr or "",
            "states": [],
            "statuses": [],
            "last_status": 0,
            "hangup_by": None,
        }
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {
            "errors": [f"pjsua caller exited {proc.returncode} without a result: {proc.stderr[-2000:]}"],
            "log_file": str(log_file),
            "states": [],
            "statuses": [],
            "last_status": 0,
            "hangup_by": None,
        }
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit_code"] = proc.returncode
    return result


# -- the subprocess side ------------------------------------------------------------------------------


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json-args", required=True, help="JSON: target, steps, transport, caller, log_file")
    ns = parser.parse_args(argv)
    args = json.loads(ns.json_args)
    scripted = _ScriptedCall(args)
    result = scripted.run()
    print(json.dumps(result), flush=True)
    code = 0 if not result["errors"] else 1
    # Close sockets properly (a TCP peer would otherwise see a reset), but never let a stuck
    # library shutdown or interpreter teardown with pjsua threads decide the exit. pjlib must be
    # shut down from the thread that created it, hence an alarm rather than a helper thread.
    signal.signal(signal.SIGALRM, lambda *_: os._exit(code))
    signal.alarm(3)
    scripted.shutdown()
    os._exit(code)


class _ScriptedCall:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.states: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.finals: list[tuple[str, int]] = []  # (method, status) of our client transactions
        self.errors: list[str] = []
        self.state = "NULL"
        self.last_status = 0
        self.codec: str | None = None
        self.local_hangup = False
        self.remote_bye = False
        self.call_id: str | None = None
        self.steps_done = 0
        self.media_active = False
        self._keep: list[Any] = []

    # callbacks (pjsua worker thread) ------------------------------------------------------------

    def on_state(self, state: str, status: int) -> None:
        with self.changed:
            self.state = state
            if status:
                self.last_status = status
            self.states.append(
                {"state": state, "status": status, "t": round(time.monotonic() - self.started, 3)}
            )
            self.changed.notify_all()

    def on_tsx(self, method: str, role: str, status: int, tsx_state: str, whole_msg: str | None) -> None:
        with self.changed:
            if role == "UAC" and status >= 100 and whole_msg is not None:
                self.statuses.append({"method": method, "status": status})
                if status >= 200:
                    self.finals.append((method, status))
                if method == "INVITE" and 200 <= status < 300 and whole_msg:
                    self.codec = _codec_from_sdp(whole_msg) or self.codec
            if role == "UAS" and method == "BYE":
                self.remote_bye = True
            self.changed.notify_all()

    # main thread ---------------------------------------------------------------------------------

    def on_media(self, active: bool) -> None:
        with self.changed:
            self.media_active = active
            self.changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float, what: str) -> bool:
        with self.changed:
            if self.changed.wait_for(predicate, timeout):
                return True
        self.errors.append(f"timeout after {timeout}s waiting for {what}")
        return False

    def run(self) -> dict[str, Any]:
        import pjsua2 as pj

        # Kept on self: pjsua objects must outlive the result being printed (their destructors
        # assert if they run after the library is gone); shutdown() releases them in order.
        transport = self.args.get("transport", "udp").lower()
        ep, _, _ = start_endpoint(pj, log_file=self.args["log_file"], console_level=1, transport=transport)
        self._keep.append(ep)

        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{self.args.get('caller', '+15551230001')}@127.0.0.1"
        account = pj.Account()
        account.create(acfg)
        call = _make_call_class(pj, self)(account)
        self._keep += [account, call]
        target = self.args["target"]
        if transport == "tcp" and "transport=" not in target:
            target += ";transport=tcp"
        try:
            call.makeCall(target, pj.CallOpParam(True))
            self.call_id = _info(call).callIdString
            for step in self.args["steps"]:
                if not self.do_step(pj, call, step):
                    break
                self.steps_done += 1
        except Exception as exc:  # pjsua raises its own Error type; report every one
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if self.state != "DISCONNECTED":
                try:
                    ep.hangupAllCalls()
                    self.wait_for(lambda: self.state == "DISCONNECTED", 3.0, "teardown")
                except Exception as exc:
                    self.errors.append(f"teardown: {exc}")
        with self.lock:
            return {
                "call_id": self.call_id,
                "states": self.states,
                "statuses": self.statuses,
                "last_status": self.last_status,
                "hangup_by": self._hangup_by(),
                "codec": self.codec,
                "steps_done": self.steps_done,
                "errors": self.errors,
                "log_file": self.args["log_file"],
            }

    def shutdown(self) -> None:
        """Destroy pjsua objects in dependency order: calls and accounts before the library."""
        endpoint = self._keep[0]
        while len(self._keep) > 1:
            self._keep.pop()  # the call first, then the account
        try:
            endpoint.libDestroy()
        except Exception as exc:
            print(f"pjsua libDestroy: {exc}", file=sys.stderr)

    def _hangup_by(self) -> str | None:
        if self.state != "DISCONNECTED":
            return None
        if self.remote_bye or not self.local_hangup:
            return "remote" if not self.local_hangup or self.remote_bye else "local"
        return "local"

    def do_step(self, pj: Any, call: Any, step: dict[str, Any]) -> bool:
        op = step["op"]
        if op == "wait_answer":
            ok = self.wait_for(
                lambda: self.state in ("CONFIRMED", "DISCONNECTED"), step.get("timeout", 10), "answer"
            )
            if ok and self.state != "CONFIRMED":
                self.errors.append(f"call ended before answer (status {self.last_status})")
                return False
            return ok
        if op == "sleep":
            time.sleep(step["ms"] / 1000)
            return True
        if op == "dtmf":
            return self._dtmf(pj, call, step)
        if op in ("hold", "unhold"):
            before = len(self.finals)
            prm = pj.CallOpParam(True)
            if op == "hold":
                retry_busy(lambda: call.setHold(prm))
            else:
                prm.opt.flag = PJSUA_CALL_UNHOLD
                retry_busy(lambda: call.reinvite(prm))
            if not self.wait_for(
                lambda: any(m == "INVITE" for m, _ in self.finals[before:]),
                step.get("timeout", 5),
                f"{op} re-INVITE response",
            ):
                return False
            status = next(s for m, s in self.finals[before:] if m == "INVITE")
            if not 200 <= status < 300:
                self.errors.append(f"{op} re-INVITE answered {status}")
                return False
            return True
        if op == "hangup":
            self.local_hangup = True
            prm = pj.CallOpParam(True)
            if step.get("code"):
                prm.statusCode = step["code"]
            call.hangup(prm)
            return self.wait_for(lambda: self.state == "DISCONNECTED", step.get("timeout", 8), "hangup")
        if op == "wait_remote_hangup":
            return self.wait_for(
                lambda: self.state == "DISCONNECTED", step.get("timeout", 10), "remote hangup"
            )
        self.errors.append(f"unknown step {op!r}")
        return False

    def _dtmf(self, pj: Any, call: Any, step: dict[str, Any]) -> bool:
        digits = str(step["digits"])
        method = step.get("method", "rfc2833")
        gap = step.get("gap_ms", 200) / 1000
        duration = int(step.get("duration_ms", 160))
        for digit in digits:
            if method == "rfc2833":
                if not self.wait_for(lambda: self.media_active, step.get("timeout", 5), "active media"):
                    return False
                retry_busy(lambda d=digit: call.dialDtmf(d))  # one event, own timestamp
                time.sleep(duration / 1000 + gap)
            elif method == "sipinfo":
                before = len(self.finals)
                prm = pj.CallSendDtmfParam()
                prm.method = pj.DtmfMethod.SIP_INFO
                prm.digits = digit
                prm.duration = duration
                retry_busy(lambda prm=prm: call.sendDtmf(prm))
                if not self.wait_for(
                    lambda before=before: any(m == "INFO" for m, _ in self.finals[before:]),
                    step.get("timeout", 5),
                    f"INFO {digit} response",
                ):
                    return False
                time.sleep(gap)
            else:
                self.errors.append(f"unknown DTMF method {method!r} (rfc2833 or sipinfo)")
                return False
        return True






def _info(call: Any) -> Any:
    return prop(call.info)


def _codec_from_sdp(whole_msg: str) -> str | None:
    m = re.search(r"^m=audio \d+ \S+ (\d+)", whole_msg, re.M)
    if not m:
        return None
    pt = m.group(1)
    rtpmap = re.search(rf"^a=rtpmap:{pt} ([^/\s]+)", whole_msg, re.M)
    if rtpmap:
        return rtpmap.group(1)
    return {"0": "PCMU", "8": "PCMA", "9": "G722", "18": "G729"}.get(pt, f"pt{pt}")


def _make_call_class(pj: Any, owner: _ScriptedCall) -> Any:
    """A pj.Call subclass bound to ``owner`` (pjsua2 is imported only in the subprocess)."""

    class _Call(pj.Call):  # type: ignore[misc]
        def onCallState(self, prm: Any) -> None:
            info = _info(self)
            owner.on_state(info.state.name, int(info.lastStatusCode))

        def onCallTsxState(self, prm: Any) -> None:
            try:
                tsx_event = prm.e.body.tsxState
                tsx = tsx_event.tsx
                whole = None
                if prm.e.body.tsxState.type == pj.EventId.RX_MSG:
                    whole = tsx_event.src.rdata.wholeMsg
                owner.on_tsx(tsx.method, tsx.role.name, int(tsx.statusCode), tsx.state.name, whole)
            except Exception as exc:
                owner.errors.append(f"onCallTsxState: {exc}")

        def onCallMediaState(self, prm: Any) -> None:
            try:
                media = _info(self).media
                owner.on_media(any(m.status == pj.CallMediaStatus.ACTIVE for m in media))
            except Exception as exc:
                owner.errors.append(f"onCallMediaState: {exc}")

    return _Call


if __name__ == "__main__":
    sys.exit(_main())
