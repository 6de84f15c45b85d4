"""A real softphone (pjsua2) acting as a contact-center agent, for tests of the agent listener.

pjsua2 keeps one global Endpoint per process and runs its own threads, so the agent lives in a
subprocess. It registers, reports what happens as JSON lines on stdout and takes commands as JSON
lines on stdin. From an async test::

    async with PjsuaAgent(registrar=edge.local_addresses["udp"], extension="1001", password="pw",
                          incoming="answer") as agent:
        await agent.wait_event(lambda e: e["event"] == "reg" and e["code"] == 200, 10)
        ... AgentEdge.dial(...) ...
        await agent.wait_event(lambda e: e["event"] == "call_state" and e["state"] == "CONFIRMED", 10)
        agent.command("hold")

``incoming``: ``answer`` (180 then 200 after ``answer_delay_ms``), ``ring`` (180 only), or
``reject:<code>`` (that final answer). Commands: ``hangup``, ``hold``, ``unhold``, ``answer``,
``unregister``, ``dtmf_info`` (``digits``), ``transfer`` (``target``: a SIP URI; a blind transfer by
REFER), ``quit``. :meth:`PjsuaAgent.kill` ends the process the hard way (no un-REGISTER, no BYE): a
device that vanished.

Events (each a dict with ``event`` and ``t``): ``ready`` (local_port), ``reg`` (code, active,
reason), ``incoming`` (call_id, from, to, pai, headers: the X-Helpline-* ones, remote_sdp), ``call_state``
(state, code), ``media`` (dir), ``tsx`` (method, role, state, status), ``xfer_status`` (code, final:
the NOTIFYs about our REFER), ``dtmf`` (digit, method), ``error`` (text).
``log_file`` holds pjsua's own level-5 log (every message sent and received).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.peer_process import stop_peer
from tests.support.pjsua_common import prop, retry_busy, start_endpoint

REPO_ROOT = Path(__file__).resolve().parents[3]
PJSUA_CALL_UNHOLD = 1

Event = dict[str, Any]


class PjsuaAgent:
    """Async handle on one pjsua2 agent subprocess."""

    def __init__(
        self,
        *,
        registrar: tuple[str, int],
        extension: str,
        password: str,
        transport: str = "udp",
        incoming: str = "answer",
        answer_delay_ms: int = 0,
        expires: int = 300,
        echo: bool = False,
        log_file: str | os.PathLike[str] | None = None,
        bind: str = "127.0.0.1",
    ) -> None:
        self.args = {
            "registrar": list(registrar),
            "extension": extension,
            "password": password,
            "transport": transport,
            "incoming": incoming,
            "answer_delay_ms": answer_delay_ms,
            "expires": expires,
            "echo": echo,
            "bind": bind,  # the phone's own address (the attack tests put it beside the attackers')
        }
        self.log_file = Path(
            log_file
            or Path(os.environ.get("TMPDIR", "/tmp")) / f"pjsua-agent-{os.getpid()}-{time.monotonic_ns()}.log"
        )
        self.args["log_file"] = str(self.log_file)
        self.events: list[Event] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.local_port: int | None = None

    async def __aenter__(self) -> PjsuaAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 10.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.sbc_bridge.agents.pjsua_agent",
            "--json-args",
            json.dumps(self.args),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        ready = await self.wait_event(lambda e: e["event"] == "ready", timeout)
        self.local_port = int(ready["local_port"])

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").strip()
            if not text.startswith("{"):
                continue
            async with self._changed:
                self.events.append(json.loads(text))
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"event": "exit", "t": 0})
            self._changed.notify_all()

    async def wait_event(self, predicate: Callable[[Event], bool], timeout: float) -> Event:
        """The first event (past or future) matching ``predicate``; TimeoutError names the log."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    for event in self.events:
                        if predicate(event):
                            return event
                    if any(e["event"] == "exit" for e in self.events):
                        raise AssertionError(f"pjsua agent exited; events: {self.events}")
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"no matching pjsua event within {timeout}s; events: {self.events}; log: {self.log_file}"
            ) from None

    def matching(self, predicate: Callable[[Event], bool]) -> list[Event]:
        return [e for e in self.events if predicate(e)]

    def command(self, op: str, **params: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **params}) + "\n").encode())

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: the phone drops off the network without un-registering or hanging up."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        """Ask the agent to quit, then kill it if it does not within a few seconds."""
        await stop_peer(self.proc, self._reader, lambda: self.command("quit"))


# -- the subprocess side ------------------------------------------------------------------------------


class _Agent:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.calls: dict[int, Any] = {}
        self.keep: list[Any] = []
        self.pj: Any = None
        self.account: Any = None
        self.due: list[tuple[float, Callable[[], Any]]] = []

    def emit(self, event: str, **data: Any) -> None:
        with self.lock:
            print(
                json.dumps({"event": event, "t": round(time.monotonic() - self.started, 3), **data}),
                flush=True,
            )

    def run(self) -> None:
        import pjsua2 as pj

        self.pj = pj
        transport = self.args["transport"]
        ep, tid, local_port = start_endpoint(
            pj, log_file=self.args["log_file"], console_level=0, transport=transport, bind=self.args["bind"]
        )
        self.keep.append(ep)

        host, port = self.args["registrar"]
        suffix = ";transport=tcp" if transport == "tcp" else ""
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{self.args['extension']}@{host}"
        acfg.regConfig.registrarUri = f"sip:{host}:{port}{suffix}"
        acfg.regConfig.timeoutSec = int(self.args["expires"])
        acfg.regConfig.retryIntervalSec = 0
        # The pybind11 wrapper keeps the GIL while in pjsua: registering from Python deadlocks when
        # the 401 comes back before the call returns (pjsua's worker holds the account lock and waits
        # for the GIL to run onRegState; we hold the GIL and wait for that lock). So the account is
        # created without registering, and registration is started through ctypes, which releases
        # the GIL for the duration of the C call.
        acfg.regConfig.registerOnAdd = False
        acfg.sipConfig.transportId = tid
        acfg.sipConfig.authCreds.append(
            pj.AuthCredInfo("digest", "*", self.args["extension"], 0, self.args["password"])
        )
        account = _make_account_class(pj, self)()
        self.account = account
        self.keep.append(account)
        account.create(acfg)
        self.emit("ready", local_port=local_port)
        self.set_registration(True)
        while True:
            self.run_due()
            readable, _, _ = select.select([sys.stdin], [], [], 0.05)
            if not readable:
                continue
            line = sys.stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                command = json.loads(line)
            except ValueError:
                self.emit("error", text=f"bad command {line!r}")
                continue
            if command.get("op") == "quit":
                break
            try:
                self.do(command)
            except Exception as exc:
                self.emit("error", text=f"{command.get('op')}: {type(exc).__name__}: {exc}")

    def do(self, command: dict[str, Any]) -> None:
        pj = self.pj
        op = command["op"]
        if op == "unregister":
            self.set_registration(False)
            return
        call = next(iter(self.calls.values()), None) if self.calls else None
        if call is None:
            self.emit("error", text=f"{op}: no call")
            return
        if op == "hangup":
            retry_busy(lambda: call.hangup(pj.CallOpParam(True)))
        elif op == "answer":
            prm = pj.CallOpParam(True)
            prm.statusCode = self.pj.StatusCode(200)
            retry_busy(lambda: call.answer(prm))
        elif op == "hold":
            retry_busy(lambda: call.setHold(pj.CallOpParam(True)))
        elif op == "unhold":
            prm = pj.CallOpParam(True)
            prm.opt.flag = PJSUA_CALL_UNHOLD
            retry_busy(lambda: call.reinvite(prm))
        elif op == "dtmf_info":
            prm = pj.CallSendDtmfParam()
            prm.method = pj.DtmfMethod.SIP_INFO
            prm.digits = str(command["digits"])
            prm.duration = 160
            retry_busy(lambda: call.sendDtmf(prm))
        elif op == "transfer":
            retry_busy(lambda: call.xfer(str(command["target"]), pj.CallOpParam(True)))
        else:
            self.emit("error", text=f"unknown op {op!r}")

    def set_registration(self, renew: bool) -> None:
        lib = ctypes.CDLL(_libpjsua_path())
        lib.pjsua_acc_set_registration.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pjsua_acc_set_registration.restype = ctypes.c_int
        status = lib.pjsua_acc_set_registration(int(prop(self.account.id)), int(renew))
        if status != 0:
            self.emit("error", text=f"pjsua_acc_set_registration failed: {status}")

    def incoming(self, call: Any, rx_msg: str) -> None:
        pj = self.pj
        info = prop(call.info)
        self.calls[info.id] = call
        headers = dict(re.findall(r"^(X-Helpline-[^:]+):\s*(.*?)\r?$", rx_msg, re.M | re.I))
        pai = re.search(r"^P-Asserted-Identity:\s*(.*?)\r?$", rx_msg, re.M | re.I)
        body = rx_msg.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in rx_msg else ""
        self.emit(
            "incoming",
            call_id=info.callIdString,
            remote=info.remoteUri,
            local=info.localUri,
            pai=pai.group(1) if pai else None,
            headers=headers,
            remote_sdp=body,
        )
        behaviour = self.args["incoming"]
        prm = pj.CallOpParam(True)
        if behaviour.startswith("reject:"):
            prm.statusCode = self.pj.StatusCode(int(behaviour.split(":", 1)[1]))
            call.answer(prm)
            return
        prm.statusCode = self.pj.StatusCode(180)
        call.answer(prm)
        if behaviour == "answer":
            delay = int(self.args.get("answer_delay_ms", 0))
            if delay:
                with self.lock:
                    self.due.append((time.monotonic() + delay / 1000, lambda: self._answer(call)))
            else:
                ok = pj.CallOpParam(True)
                ok.statusCode = self.pj.StatusCode(200)
                call.answer(ok)

    def _answer(self, call: Any) -> None:
        ok = self.pj.CallOpParam(True)
        ok.statusCode = self.pj.StatusCode(200)
        retry_busy(lambda: call.answer(ok))

    def run_due(self) -> None:
        """Run scheduled actions on the main thread (the one pjlib knows)."""
        now = time.monotonic()
        with self.lock:
            ready = [action for at, action in self.due if at <= now]
            self.due = [(at, action) for at, action in self.due if at > now]
        for action in ready:
            try:
                action()
            except Exception as exc:
                self.emit("error", text=f"scheduled action: {type(exc).__name__}: {exc}")

    def shutdown(self) -> None:
        endpoint = self.keep[0]
        self.calls.clear()
        while len(self.keep) > 1:
            self.keep.pop()
        with contextlib.suppress(Exception):
            endpoint.libDestroy()


def _libpjsua_path() -> str:
    """The libpjsua the pjsua2 module already loaded (bundled next to it by the wheel)."""
    import pjsua2

    libs = Path(pjsua2.__file__).parent / "pjsua2_pybind11.libs"
    found = sorted(libs.glob("libpjsua-*.so*"))
    if not found:
        raise RuntimeError(f"no libpjsua in {libs}")
    return str(found[0])




def _make_account_class(pj: Any, owner: _Agent) -> Any:
    class _Call(pj.Call):  # type: ignore[misc]
        def onCallState(self, prm: Any) -> None:
            info = prop(self.info)
            owner.emit("call_state", state=info.state.name, code=int(info.lastStatusCode))

        def onCallMediaState(self, prm: Any) -> None:
            try:
                for index, media in enumerate(prop(self.info).media):
                    owner.emit("media", status=media.status.name, dir=int(media.dir))
                    if owner.args.get("echo") and media.status.name in ("ACTIVE", "PJSUA_CALL_MEDIA_ACTIVE"):
                        # Loop the caller's audio straight back (pjsua's --auto-loop): a phone with
                        # no sound card that still proves both directions of the media path.
                        audio = self.getAudioMedia(index)
                        audio.startTransmit(audio)
                        owner.emit("echo", index=index)
            except Exception as exc:
                owner.emit("error", text=f"media: {exc}")

        def onCallTransferStatus(self, prm: Any) -> None:
            owner.emit("xfer_status", code=int(prm.statusCode), final=bool(prm.finalNotify))

        def onDtmfDigit(self, prm: Any) -> None:
            owner.emit("dtmf", digit=str(prm.digit), method=str(getattr(prm.method, "name", prm.method)))

        def onCallTsxState(self, prm: Any) -> None:
            try:
                tsx = prm.e.body.tsxState.tsx
                owner.emit(
                    "tsx",
                    method=tsx.method,
                    role=tsx.role.name,
                    state=tsx.state.name,
                    status=int(tsx.statusCode),
                )
            except Exception as exc:
                owner.emit("error", text=f"tsx: {exc}")

    class _Account(pj.Account):  # type: ignore[misc]
        def onRegState(self, prm: Any) -> None:
            code = int(prm.code)
            owner.emit(
                "reg", code=code, active=code // 100 == 2 and int(prm.expiration) > 0, reason=str(prm.reason)
            )

        def onIncomingCall(self, prm: Any) -> None:
            call = _Call(self, prm.callId)
            try:
                owner.incoming(call, prm.rdata.wholeMsg)
            except Exception as exc:
                owner.emit("error", text=f"incoming: {type(exc).__name__}: {exc}")

    return _Account


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json-args", required=True)
    ns = parser.parse_args()
    agent = _Agent(json.loads(ns.json_args))
    code = 0
    try:
        agent.run()
    except Exception as exc:
        agent.emit("error", text=f"{type(exc).__name__}: {exc}")
        code = 1
    signal.signal(signal.SIGALRM, lambda *_: os._exit(code))
    signal.alarm(3)
    agent.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(_main())
