"""TrunkBridge: the SIP trunk edge as the rest of Helpline sees it.

Binds UDP and TCP on one port, screens every request (source ACL, validation, Max-Forwards, digest,
numbers, policy) and hands each admitted call to ``on_call`` as an :class:`InboundCall`. Refusals and
malformed traffic are reported through ``on_security`` (and ``on_refused`` for calls), never raised.
Screening happens in one place per request, the edge guard (bans, rate limits, caps) first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiosipua.message import SipRequest, SipResponse

from .call import InboundCall, RefusedCall
from .config import EdgePolicy, SipSettings, TrunkConfig
from .digest import DigestGuard
from .guard import EdgeGuard
from .identity import CallIdentity, read_identity
from .policy import decide_call, match_trunk
from .transport import EdgeTcpTransport, EdgeTransport, bind_listeners, salvage_request
from .transport_tls import bind_tls_listener
from .uas import EdgeUas
from .validation import Problem

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
OnCall = Callable[[InboundCall], Awaitable[None]]
OnSecurity = Callable[[str, dict[str, Any]], None]
OnRefused = Callable[[RefusedCall], None]


def _source(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


class TrunkBridge:
    """The trunk-facing SIP edge.

    ``on_call`` runs as its own task per admitted call (errors are logged with the SIP Call-ID and an
    unanswered call is then refused with 500). ``on_security(type, data)`` receives every refusal and
    every malformed message; ``on_refused`` receives each refused INVITE for the CDR store.
    ``guard`` (shared with the agent listener; None: no guard) screens every request first; the
    bridge tells it which sources are trunks, which it then never limits per source nor bans.
    """

    def __init__(
        self,
        settings: SipSettings,
        trunks: Sequence[TrunkConfig],
        policy: EdgePolicy,
        on_call: OnCall,
        on_security: OnSecurity,
        on_refused: OnRefused | None = None,
        guard: EdgeGuard | None = None,
    ) -> None:
        self.settings = settings
        self.trunks = tuple(trunks)
        self.guard = guard
        if guard is not None:
            guard.trusted = self.is_trunk_source
        self.policy = policy
        self._on_call = on_call
        self._on_security = on_security
        self._on_refused = on_refused
        self._digest = DigestGuard()
        self._uas: dict[str, EdgeUas] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.local_addresses: dict[str, Addr] = {}

    async def start(self) -> None:
        """Bind the configured transports on one port (an ephemeral one when ``port`` is 0)."""
        settings = self.settings

        async def start(name: str, transport: EdgeTransport) -> None:
            uas = EdgeUas(transport, settings, self)
            await uas.start()
            self._uas[name] = uas
            host, port = transport.local_addr
            uas.advertised_addr = (settings.advertised_host or host, port)

        try:
            self.local_addresses = await bind_listeners(
                settings.host,
                settings.port,
                settings.transports,
                self,
                settings.timer_t1,
                start,
                guard=self.guard,
                listener="trunk",
            )
            tls = await bind_tls_listener(
                settings, self, start, trunks=self.trunks, guard=self.guard, on_security=self._security
            )
            if tls is not None:
                self.local_addresses["tls"] = tls
        except BaseException:
            await self.stop()
            raise
        if self.settings.advertised_host is None and self.settings.host in ("0.0.0.0", "::"):
            logger.warning("advertised_host is not set: Contact headers will carry a wildcard address")
        logger.info("SIP trunk edge listening", extra={"addresses": repr(self.local_addresses)})

    async def stop(self) -> None:
        """End every call as politely as its state allows, then close the listeners."""
        legs = [leg for uas in self._uas.values() for leg in uas.legs()]
        for leg in legs:
            leg.shutdown()
        for _ in range(3):  # let each BYE's first transmission leave before the sockets close
            await asyncio.sleep(0)
        for leg in legs:
            leg.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for uas in self._uas.values():
            await uas.stop()
        self._uas.clear()

    # --- reporting ---

    def _security(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self._on_security(kind, data)
        except Exception:
            logger.exception("on_security handler failed for %s", kind)

    def _refused(self, info: RefusedCall) -> None:
        logger.info(
            "call refused: %s %s", info.sip_code, info.reason, extra={"sip_call_id": info.sip_call_id}
        )
        if self._on_refused is None:
            return
        try:
            self._on_refused(info)
        except Exception:
            logger.exception("on_refused handler failed", extra={"sip_call_id": info.sip_call_id})

    @staticmethod
    def _event(request: SipRequest | None, addr: Addr, transport: str, **more: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"source": _source(addr), "transport": transport}
        if request is not None:
            data["method"] = request.method
            data["sip_call_id"] = request.call_id
        data.update(more)
        return data

    # --- EdgeHooks ---

    def trunk_for(self, addr: Addr) -> TrunkConfig | None:
        return match_trunk(addr[0], self.trunks)

    def is_trunk_source(self, ip: str) -> bool:
        """Whether ``ip`` belongs to a configured trunk (the guard's notion of trusted)."""
        return match_trunk(ip, self.trunks) is not None

    def stranger(self, uas: EdgeUas, request: SipRequest, addr: Addr) -> None:
        reject = self.settings.non_trunk_policy == "reject" and request.method.upper() != "ACK"
        self._security(
            "security.non_trunk_source",
            self._event(
                request, addr, uas.name, reason="source is not a trunk", action="403" if reject else "drop"
            ),
        )
        if request.method.upper() == "INVITE":
            self._refused(
                RefusedCall(
                    request.call_id or "",
                    None,
                    None,
                    None,
                    addr,
                    uas.name,
                    403 if reject else None,
                    "source is not a trunk",
                )
            )
        if reject:
            uas.send_error(request, 403, "Forbidden")
        else:
            uas.edge_transport.replies.drop(request)

    def malformed(self, uas: EdgeUas, request: SipRequest, addr: Addr, problem: Problem) -> None:
        code = problem.code
        self._security(
            "security.malformed",
            self._event(request, addr, uas.name, header=problem.header, reason=problem.reason),
        )
        if request.method.upper() == "INVITE":
            self._refused(
                RefusedCall(
                    request.call_id or "",
                    self._trunk_name(addr),
                    None,
                    None,
                    addr,
                    uas.name,
                    code,
                    problem.reason,
                )
            )
        if request.method.upper() != "ACK":
            uas.send_error_to(
                request, addr, code, problem.reason_phrase, problem.reason, headers=dict(problem.headers)
            )

    def too_many_hops(self, uas: EdgeUas, request: SipRequest, addr: Addr, trunk: TrunkConfig) -> None:
        self._security(
            "security.max_forwards",
            self._event(request, addr, uas.name, header="Max-Forwards", reason="Max-Forwards is 0"),
        )
        if request.method.upper() == "INVITE":
            self._refused(
                RefusedCall(
                    request.call_id or "", trunk.name, None, None, addr, uas.name, 483, "too many hops"
                )
            )
        uas.send_error(request, 483, "Too Many Hops")

    def foreign_in_dialog(self, uas: EdgeUas, request: SipRequest, addr: Addr, trunk: TrunkConfig) -> None:
        """A request for a call another trunk placed: reported, and answered as if no such call."""
        self._security(
            "security.foreign_in_dialog",
            self._event(request, addr, uas.name, trunk=trunk.name, reason="request for another trunk's call"),
        )
        if request.method.upper() != "ACK":
            uas.send_error(request, 481, "Call/Transaction Does Not Exist")

    def on_unparseable(self, transport: EdgeTransport, data: bytes, addr: Addr, reason: str) -> None:
        uas = self._uas.get(transport.name)
        if self.trunk_for(addr) is None:
            self._security(
                "security.non_trunk_source",
                self._event(
                    None, addr, transport.name, reason=f"source is not a trunk ({reason})", action="drop"
                ),
            )
            return
        salvaged = salvage_request(data, addr)
        self._security(
            "security.malformed",
            self._event(
                salvaged,
                addr,
                transport.name,
                header="start-line" if "line" in reason else "message",
                reason=reason,
            ),
        )
        if uas is None or data.lstrip().upper().startswith(b"ACK "):
            return
        if salvaged is not None:
            if isinstance(transport, EdgeTcpTransport):
                transport.note_request(salvaged, addr)
            uas.send_error_to(salvaged, addr, 400, "Bad Request", reason)
        elif transport.reliable:
            response = SipResponse(status_code=400, reason_phrase="Bad Request")
            response.headers.set_single("Warning", '399 - "{}"'.format(reason.replace('"', "'")))
            transport.send(response, addr)

    def _trunk_name(self, addr: Addr) -> str | None:
        trunk = self.trunk_for(addr)
        return trunk.name if trunk else None

    def new_invite(self, uas: EdgeUas, request: SipRequest, addr: Addr, trunk: TrunkConfig) -> None:
        if trunk.credentials is not None and not self._authenticated(uas, request, addr, trunk):
            return
        identity = read_identity(request, trunk)
        if identity.stripped:
            self._security(
                "security.identity_stripped",
                self._event(request, addr, uas.name, trunk=trunk.name, stripped=list(identity.stripped)),
            )
        decision = decide_call(trunk, identity.caller, identity.did, self.policy)
        if not decision.accepted:
            self._refuse(
                uas,
                request,
                addr,
                trunk,
                identity,
                decision.sip_code,
                decision.reason,
                decision.security_type,
            )
            return
        leg = uas.create_call(request, addr)
        if leg is None:
            return
        assert decision.flow_id is not None
        call = InboundCall(
            sip_call_id=leg.sip_call_id,
            trunk=trunk.name,
            caller=identity.caller_display,
            caller_name=identity.caller_name,
            did=identity.did or identity.did_raw,
            flow_id=decision.flow_id,
            pai=identity.pai,
            verstat=identity.verstat,
            source=addr,
            transport=uas.name,
            sdp_offer=leg.offer,
            leg=leg,
        )
        leg.public = call
        task = asyncio.get_running_loop().create_task(self._run_on_call(call, leg.unanswered))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_on_call(self, call: InboundCall, unanswered: Callable[[], bool]) -> None:
        try:
            await self._on_call(call)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("on_call handler failed", extra={"sip_call_id": call.sip_call_id})
            if unanswered():
                call.reject(500, "Server Internal Error")

    def _authenticated(self, uas: EdgeUas, request: SipRequest, addr: Addr, trunk: TrunkConfig) -> bool:
        assert trunk.credentials is not None
        verdict = self._digest.verify(request, trunk.credentials)
        if verdict.ok:
            return True
        if verdict.challenge_again:
            stale = verdict.reason == "stale nonce"
            uas.send_error(
                request,
                401,
                "Unauthorized",
                headers={"WWW-Authenticate": self._digest.challenge(trunk.credentials.realm, stale=stale)},
            )
            return False
        data = self._event(
            request, addr, uas.name, header="Authorization", reason=verdict.reason, trunk=trunk.name
        )
        if self.guard is None:
            self._security("security.auth_failed", data)
        else:  # one event, counted by the guard; a trunk's own account is never locked: no user given
            self.guard.auth_failed(
                "trunk", uas.name, addr, None, verdict.reason, event="security.auth_failed", detail=data
            )
        self._refused(
            RefusedCall(request.call_id or "", trunk.name, None, None, addr, uas.name, 403, verdict.reason)
        )
        uas.send_error(request, 403, "Forbidden")
        return False

    def _refuse(
        self,
        uas: EdgeUas,
        request: SipRequest,
        addr: Addr,
        trunk: TrunkConfig,
        identity: CallIdentity,
        code: int,
        reason: str,
        security_type: str | None,
    ) -> None:
        caller = identity.caller_display
        did = identity.did or identity.did_raw
        if security_type is not None:
            self._security(
                security_type,
                self._event(request, addr, uas.name, trunk=trunk.name, caller=caller, did=did, reason=reason),
            )
        self._refused(
            RefusedCall(request.call_id or "", trunk.name, caller, did, addr, uas.name, code, reason)
        )
        uas.send_error(request, code, "Forbidden" if code == 403 else "Not Found" if code == 404 else reason)
