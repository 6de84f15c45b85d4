"""AgentEdge: the agent-facing SIP listener (registrar, qualify, dialer) as the rest of Helpline sees it.

A second listener next to the trunk edge, on its own port (5070 by default, UDP and TCP). It knows
nothing of queues: it keeps bindings, reports them through ``on_bindings``, places calls to them
with :meth:`AgentEdge.dial`, and reports every failed authentication or malformed message through
``on_security``. Screening happens for every request at one point (:meth:`AgentEdge._on_request`),
the edge guard (bans, rate limits, caps) first; digest outcomes feed its failure windows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from functools import partial
from typing import Any

from aiosipua.message import SipMessage, SipRequest, SipResponse

from ..guard import EdgeGuard
from ..transport import (
    EdgeTransport,
    _cseq_method,
    _top_branch,
    bind_listeners,
    salvage_request,
)
from ..transport_tls import bind_tls_listener
from ..validation import max_forwards_exhausted, received_size, validate_request
from .auth import AgentDigest, AuthVerdict
from .binding import Binding
from .invite_client import InviteClient
from .leg import ALLOW, AgentLeg
from .qualify import Qualifier
from .registrar import Registrar
from .settings import AgentCredentials, AgentEdgeSettings
from .wire import AgentWire

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
OnBindings = Callable[[str, tuple[Binding, ...]], None]
OnSecurity = Callable[[str, dict[str, Any]], None]
_NEEDS_DIALOG = {"BYE", "ACK", "INFO", "UPDATE", "REFER", "NOTIFY", "PRACK", "CANCEL"}
_KNOWN_UNSUPPORTED = {"SUBSCRIBE", "PUBLISH", "MESSAGE"}


def _source(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


class AgentEdge:
    """The agent listener: REGISTER with digest, OPTIONS qualify, INVITEs to agents and their dialogs.

    ``credentials(extension)`` is a synchronous lookup (a cache the upper layer keeps fresh).
    ``on_bindings(extension, bindings)`` runs after any change of that agent's bindings.
    ``on_security(type, data)`` receives ``security.agent_auth_failed``, ``security.malformed`` and
    ``security.agent_foreign_in_dialog`` events. Handler errors are logged, never raised.
    ``guard`` (shared with the trunk bridge; None: no guard) screens every request first and hears
    every digest outcome: it bans cracking sources and locks attacked users.
    """

    def __init__(
        self,
        settings: AgentEdgeSettings,
        *,
        credentials: Callable[[str], AgentCredentials | None],
        on_bindings: OnBindings,
        on_security: OnSecurity,
        guard: EdgeGuard | None = None,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self._credentials = credentials
        self._on_bindings = on_bindings
        self._on_security = on_security
        self._auth = AgentDigest(settings.realm, settings.nonce_lifetime_s, settings.digest_algorithms)
        self._registrar = Registrar(settings, self._bindings_changed, self._watch, self._unwatch)
        self._qualifier = Qualifier(settings, self._registrar, self._wires_get)
        self._wires: dict[str, AgentWire] = {}
        self._legs: dict[str, AgentLeg] = {}
        self._invites: dict[str, InviteClient] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = False
        self.local_addresses: dict[str, Addr] = {}

    # --- lifecycle ---

    async def start(self) -> None:
        """Bind the configured transports on one port (an ephemeral one when ``port`` is 0)."""
        settings = self.settings

        async def start(name: str, transport: EdgeTransport) -> None:
            wire = AgentWire(transport, settings.timer_t1, settings.user_agent)
            transport.on_message = partial(self._on_message, wire)
            await transport.start()
            self._wires[name] = wire
            host, port = transport.local_addr
            wire.advertised = (settings.advertised_host or host, port)

        try:
            self.local_addresses = await bind_listeners(
                settings.host,
                settings.port,
                settings.transports,
                self,
                settings.timer_t1,
                start,
                guard=self.guard,
                listener="agents",
            )
            tls = await bind_tls_listener(
                settings, self, start, guard=self.guard, listener="agents", on_security=self._security
            )
            if tls is not None:
                self.local_addresses["tls"] = tls
        except BaseException:
            await self.stop()
            raise
        self._running = True
        if self.settings.advertised_host is None and self.settings.host in ("0.0.0.0", "::"):
            logger.warning("advertised_host is not set: Contact headers will carry a wildcard address")
        logger.info("agent SIP listener up", extra={"addresses": repr(self.local_addresses)})

    async def stop(self) -> None:
        """BYE every confirmed call, CANCEL ringing ones, stop timers, close the listeners."""
        self._running = False
        legs = list(self._legs.values())
        for leg in legs:
            leg.shutdown()
        for _ in range(3):  # let each BYE's/CANCEL's first transmission leave before the sockets close
            await asyncio.sleep(0)
        for leg in legs:
            leg.close()
        for client in list(self._invites.values()):
            client.close()
        await self._qualifier.close()
        self._registrar.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for wire in self._wires.values():
            wire.close()
            await wire.transport.stop()
        self._wires.clear()
        self._legs.clear()

    # --- public API ---

    def bindings(self, extension: str) -> tuple[Binding, ...]:
        """The agent's current bindings, oldest first."""
        return self._registrar.bindings(extension)

    def restore(self, bindings: Iterable[Binding]) -> int:
        """Bindings saved before a restart, put back until their phones refresh them; how many were.

        Call after :meth:`start`. Each starts unreachable and is qualified at once (see
        ``Registrar.restore``); one for a transport that is not running is skipped.
        """
        restored = 0
        for binding in bindings:
            if binding.transport in self._wires and self._registrar.restore(binding):
                restored += 1
        if restored:
            logger.info("restored %d registrations from before the restart", restored)
        return restored

    def live_dialogs(self) -> set[str]:
        """SIP Call-IDs of confirmed agent dialogs."""
        return {call_id for call_id, leg in self._legs.items() if leg.confirmed}

    def dial(
        self,
        binding: Binding,
        *,
        caller: str,
        caller_name: str | None,
        sdp_offer: bytes,
        headers: Mapping[str, str],
        ring_timeout: float,
    ) -> AgentLeg:
        """Send an INVITE to ``binding`` and return its leg; await ``leg.outcome()`` for the result.

        Raises:
            ValueError: The binding's transport is not served here, the edge is not running, or a
                header name/value would break the message (line breaks, a colon in the name).
        """
        wire = self._wires.get(binding.transport)
        if wire is None or not self._running:
            raise ValueError(f"no running {binding.transport!r} listener for {binding.extension}")
        leg = AgentLeg(
            self,
            wire,
            binding,
            caller=caller,
            caller_name=caller_name,
            sdp_offer=sdp_offer,
            headers=headers,
            ring_timeout=ring_timeout,
        )
        self._legs[leg.sip_call_id] = leg
        leg.start()
        return leg

    # --- bookkeeping used by legs ---

    def track_invite(self, client: InviteClient) -> None:
        self._invites[client.branch] = client

    def forget_invite(self, client: InviteClient) -> None:
        if self._invites.get(client.branch) is client:
            del self._invites[client.branch]

    def forget_leg(self, leg: AgentLeg) -> None:
        if self._legs.get(leg.sip_call_id) is leg:
            del self._legs[leg.sip_call_id]

    def keep_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` to its end even after its leg is gone (a BYE's retransmissions)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- registrar/qualify wiring ---

    def _wires_get(self, name: str) -> AgentWire | None:
        return self._wires.get(name)

    def _bindings_changed(self, extension: str, bindings: tuple[Binding, ...]) -> None:
        try:
            self._on_bindings(extension, bindings)
        except Exception:
            logger.exception("on_bindings handler failed for %s", extension)

    def _watch(self, binding: Binding) -> None:
        self._qualifier.watch(binding)

    def _unwatch(self, binding: Binding) -> None:
        self._qualifier.unwatch(binding)

    def _security(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self._on_security(kind, data)
        except Exception:
            logger.exception("on_security handler failed for %s", kind)

    def _lookup(self, extension: str) -> AgentCredentials | None:
        try:
            return self._credentials(extension)
        except Exception:
            logger.exception("credentials lookup failed for %r", extension)
            return None

    # --- dispatch ---

    def on_unparseable(self, transport: EdgeTransport, data: bytes, addr: Addr, reason: str) -> None:
        """TransportHooks: bytes that are no SIP message (reported; UDP garbage gets no answer).

        On a stream the peer is answered 400 on its connection before the transport closes it (the
        framing is lost), addressed to the request when its headers can still be read.
        """
        self._security(
            "security.malformed",
            {"source": _source(addr), "transport": transport.name, "header": "message", "reason": reason},
        )
        wire = self._wires.get(transport.name)
        if wire is None or not transport.reliable or data.lstrip().upper().startswith(b"ACK "):
            return
        warning = ("Warning", '399 - "{}"'.format(reason.replace('"', "'")))
        salvaged = salvage_request(data, addr)
        if salvaged is not None and salvaged.headers.get("via"):
            response = wire.response(salvaged, 400, "Bad Request", (warning,))
        else:
            response = SipResponse(status_code=400, reason_phrase="Bad Request")
            response.headers.set_single(*warning)
        try:
            wire.send(response, addr)
        except (OSError, RuntimeError) as exc:
            logger.info("could not answer unparseable bytes from %s: %s", _source(addr), exc)

    def _on_message(self, wire: AgentWire, message: SipMessage, addr: Addr) -> None:
        try:
            if isinstance(message, SipResponse):
                self._on_response(wire, message)
            elif isinstance(message, SipRequest):
                self._on_request(wire, message, addr)
        except Exception:
            logger.exception(
                "error handling SIP message from %s:%s", *addr, extra={"sip_call_id": message.call_id}
            )

    def _on_response(self, wire: AgentWire, response: SipResponse) -> None:
        branch = _top_branch(response)
        if branch is not None and _cseq_method(response) == "INVITE":
            client = self._invites.get(branch)
            if client is not None:
                client.receive(response)
                return
        elif wire.requests.on_response(response):
            return
        logger.debug("response %s matches no request of ours", response.status_code)

    def _on_request(self, wire: AgentWire, request: SipRequest, addr: Addr) -> None:
        method = request.method.upper()
        if self.guard is not None:
            verdict = self.guard.screen("agents", wire.name, request, addr)
            if verdict.action != "pass":
                if verdict.action == "reject" and method != "ACK":
                    wire.reply(request, verdict.code, verdict.reason, verdict.headers)
                elif verdict.remembered:
                    wire.transport.replies.drop(request)
                return
        problem = validate_request(request, stream=wire.reliable)
        if problem is not None:
            self._security(
                "security.malformed",
                self._event(request, addr, wire, header=problem.header, reason=problem.reason),
            )
            if method != "ACK" and request.headers.get("via"):
                headers = (*problem.headers, ("Warning", problem.warning))
                wire.reply(request, problem.code, problem.reason_phrase, headers)
            return
        if method != "ACK" and max_forwards_exhausted(request):
            wire.reply(request, 483, "Too Many Hops")
            return
        to_addr = request.to_addr
        in_dialog = to_addr is not None and bool(to_addr.tag)
        if in_dialog or method in _NEEDS_DIALOG:
            self._in_dialog(wire, request, addr)
        elif method == "REGISTER":
            self._register(wire, request, addr)
        elif method == "OPTIONS":
            self._options(wire, request, addr)
        elif method == "INVITE":
            self._agent_invite(wire, request, addr)
        elif method in _KNOWN_UNSUPPORTED:
            wire.reply(request, 405, "Method Not Allowed", (("Allow", ALLOW),))
        else:
            wire.reply(request, 501, "Not Implemented", (("Allow", ALLOW),))

    def _options(self, wire: AgentWire, request: SipRequest, addr: Addr) -> None:
        """200 to OPTIONS (a phone's keepalive); over UDP never bigger than the request (A1: no amplifier).

        A reflected OPTIONS with a spoofed source must not make us a traffic amplifier: the
        capabilities are left out when they would make the answer bigger, and a request too small
        for even the bare answer is not answered (a real phone's carries Contact, Max-Forwards...);
        it is counted in the guard's drops, not reported one by one.
        """
        full = (("Allow", ALLOW), ("Accept", "application/sdp"))
        if wire.reliable:  # a connection cannot be opened from a spoofed address: nothing to amplify
            wire.reply(request, 200, "OK", full)
            return
        budget = received_size(request)
        for headers in (full, ()):
            response = wire.response(request, 200, "OK", headers)
            if len(bytes(response)) <= budget:
                wire.send_reply(response)
                return
        logger.debug("OPTIONS of %d bytes from %s:%s unanswered: smaller than its answer", budget, *addr)
        if self.guard is not None:
            self.guard.dropped[("agents", "amplification")] += 1

    def _in_dialog(self, wire: AgentWire, request: SipRequest, addr: Addr) -> None:
        method = request.method.upper()
        leg = self._legs.get(request.call_id or "")
        if leg is not None and not self._from_peer(leg, wire, addr):
            self._security(
                "security.agent_foreign_in_dialog",
                self._event(request, addr, wire, reason="in-dialog request from another address"),
            )
            leg = None
        if leg is None:
            if method != "ACK":
                wire.reply(request, 481, "Call/Transaction Does Not Exist")
            return
        leg.handle_request(request, addr)

    @staticmethod
    def _from_peer(leg: AgentLeg, wire: AgentWire, addr: Addr) -> bool:
        """Whether an in-dialog request comes from the agent the dialog is with.

        UDP: the exact address the agent registered from (its one socket, NAT-fixed). TCP: the same
        IP (a phone may open a new connection for a request).
        """
        source = leg.binding.source
        return source[0] == addr[0] if wire.reliable else source == addr

    # --- authenticated requests ---

    def _authenticate(self, wire: AgentWire, request: SipRequest, addr: Addr) -> str | None:
        """The extension that proved itself, or None after answering with a challenge."""
        verdict = self._auth.verify(request, addr[0], self._lookup)
        if verdict.kind == "ok" and verdict.extension is not None:
            if self.guard is None:
                return verdict.extension
            if not self.guard.user_locked(verdict.extension):
                self.guard.auth_succeeded(addr, verdict.extension)
                return verdict.extension
            # locked: the right password gets exactly what a wrong one gets (no oracle), and counts
            # like one, or the source's ban arriving one attempt late would tell the password apart
            verdict = AuthVerdict("failed", username=verdict.username, reason="user locked")
        self._challenge(wire, request, addr, verdict)
        return None

    def _auth_failed(
        self, wire: AgentWire, request: SipRequest, addr: Addr, user: str | None, reason: str
    ) -> None:
        """One ``security.agent_auth_failed`` event per failure; the guard also counts it (bans, locks)."""
        data = self._event(request, addr, wire, extension=user, reason=reason)
        if self.guard is None:
            self._security("security.agent_auth_failed", data)
        else:
            self.guard.auth_failed(
                "agents", wire.name, addr, user, reason, event="security.agent_auth_failed", detail=data
            )

    def _challenge(self, wire: AgentWire, request: SipRequest, addr: Addr, verdict: AuthVerdict) -> None:
        """401 with a fresh challenge; the same answer whatever the failure (no user oracle)."""
        if verdict.kind == "failed":
            self._auth_failed(wire, request, addr, verdict.username, verdict.reason)
        headers = [
            ("WWW-Authenticate", value)
            for value in self._auth.challenges(addr[0], stale=verdict.kind == "stale")
        ]
        wire.reply(request, 401, "Unauthorized", headers)

    def _register(self, wire: AgentWire, request: SipRequest, addr: Addr) -> None:
        extension = self._authenticate(wire, request, addr)
        if extension is None:
            return
        to_addr = request.to_addr
        aor_user = to_addr.uri.user if to_addr is not None else None
        if aor_user != extension:
            self._auth_failed(wire, request, addr, extension, f"registers another AOR {aor_user!r}")
            wire.reply(request, 403, "Forbidden")
            return
        reply = self._registrar.register(extension, request, addr, wire.name)
        wire.reply(request, reply.code, reply.reason, reply.headers)

    def _agent_invite(self, wire: AgentWire, request: SipRequest, addr: Addr) -> None:
        extension = self._authenticate(wire, request, addr)
        if extension is None:
            return
        # Outbound calling is not built; the toll-fraud policy still decides first, so what a stolen
        # credential tried (premium ranges, a burst) is reported with the reason. A refusal by policy
        # is a plain 403: the reason goes to the event, not to the phone.
        verdict = self.guard.outbound.check_agent_dial(extension, request.uri) if self.guard else None
        if verdict is not None and not verdict.allowed:
            logger.warning("agent %s may not call %s: %s", extension, verdict.number, verdict.reason)
            self._security("security.fraud_refused", self._event(
                request, addr, wire, kind="agent_call", agent=extension, destination=verdict.number,
                rule=verdict.rule, reason=verdict.reason,
            ))
            wire.reply(request, 403, "Forbidden")
            return
        logger.info("outbound call attempt from agent %s refused (not enabled)", extension)
        wire.reply(request, 403, "Outbound calls not enabled")

    @staticmethod
    def _event(request: SipRequest, addr: Addr, wire: AgentWire, **more: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": _source(addr),
            "transport": wire.name,
            "method": request.method,
            "sip_call_id": request.call_id,
        }
        data.update(more)
        return data
