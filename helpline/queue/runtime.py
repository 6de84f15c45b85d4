"""The queue runtime: the one owner of the routing engine, with SIP, media, clock and events around it.

The engine decides; this module does. It feeds the engine every trigger (a caller joins or leaves, an
agent registers, changes presence, answers, misses, hangs up, the clock moves), executes the offers
the engine returns (an INVITE to the agent's registered devices, then an RTP bridge to the caller), and
publishes every engine event on the bus exactly once, so the store, the metrics and the live views see
the same history.

Everything runs on the event loop; the engine is only ever touched from here, so there are no locks.
A caller's wait is the coroutine :meth:`QueueRuntime.wait` run by the caller's flow: it holds the
caller (hold audio, announcements, the exit key) and returns the ``enqueue`` outcome when the caller's
business with the queue is over — after the conversation with the agent, not at the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from helpline.events import DomainEvent, EventBus
from helpline.ivr.channel import EnqueueSpec
from helpline.logs import current_call_id
from helpline.queue.config import QueueConfig
from helpline.queue.engine import EngineEvent, Offer, RoutingEngine
from helpline.queue.profile import AgentProfile
from helpline.sbc_bridge import CallEnd
from helpline.sbc_bridge.agents import AgentCredentials, AgentEdge, AgentLeg, Binding, DialOutcome
from helpline.sbc_bridge.guard.fraud import OutboundPolicy
from helpline.voice import MediaBridge, NoCommonCodec, PromptCache, RtpSession, SdpError, SdpSession
from helpline.voice.engine import MediaEngine, MediaPortsExhausted
from helpline.voice.prompt_spec import PromptSpec

log = logging.getLogger(__name__)

DEFAULT_HOLD = (PromptSpec(tone_hz=(440.0,), duration_ms=400, label="hold-tone"),
                PromptSpec(duration_ms=3600, label="hold-gap"))
TICK_S = 0.5
_CLOCK_KEYS = ("presence_since", "activity_since", "until", "idle_since", "last_offer_at", "step_entered_at")
RECONCILE_S = 5.0
RELOAD_S = 5.0
# the sipfrag status told to the agent for each outcome of a transfer through the trunk
_TRANSFER_STATUS = {"connected": 200, "busy": 486, "no_answer": 480, "failed": 480}


class StoredAgentLike(Protocol):
    """What the runtime reads of a stored agent (``helpline.store`` provides it)."""

    @property
    def extension(self) -> str: ...
    @property
    def realm(self) -> str: ...
    @property
    def ha1_md5(self) -> str: ...
    @property
    def ha1_sha256(self) -> str: ...
    @property
    def updated_at(self) -> datetime: ...
    def profile(self) -> AgentProfile: ...


class AgentChangesLike(Protocol):
    @property
    def changed(self) -> Sequence[StoredAgentLike]: ...
    @property
    def removed(self) -> frozenset[str]: ...
    @property
    def as_of(self) -> datetime: ...


class AgentSource(Protocol):
    """The agents table, as the runtime needs it."""

    async def list(self) -> Sequence[StoredAgentLike]: ...
    async def get(self, extension: str) -> StoredAgentLike | None: ...
    async def changed_since(self, since: datetime | None, known: Iterable[str] = ()) -> AgentChangesLike: ...
    async def latest_events(self, type: str) -> Mapping[str, AgentEventLike]: ...


class AgentEventLike(Protocol):
    @property
    def data(self) -> Mapping[str, Any]: ...


class QueueCaller(Protocol):
    """The caller's side of a queue wait (the live call's channel implements it)."""

    call_id: str
    caller: str
    did: str

    @property
    def rtp(self) -> RtpSession: ...
    @property
    def caller_name(self) -> str | None: ...
    @property
    def verstat(self) -> str | None: ...
    async def next_digit(self, timeout: float) -> str | None: ...
    async def transfer(self, target: str, timeout: float) -> str: ...

    on_info_digit: Callable[[str], None] | None


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """Where agent-leg RTP binds and what it offers."""

    advertised_host: str
    codecs: tuple[str, ...]


@dataclass(eq=False)
class _Waiter:
    """One caller in a queue: what the runtime needs while the flow's wait coroutine runs."""

    call_id: str
    queue: str
    caller: QueueCaller
    spec: EnqueueSpec
    joined_at: float
    virtual_start: float  # the age the engine orders this caller by (kept across a transfer)
    offer_task: asyncio.Task[None] | None = None
    holding: asyncio.Task[None] | None = None  # hold audio and announcements
    connected: asyncio.Future[_Conversation] = field(default_factory=lambda: _future())
    left: asyncio.Future[str] = field(default_factory=lambda: _future())


@dataclass(eq=False)
class _Conversation:
    """A caller bridged to an agent."""

    extension: str
    leg: AgentLeg
    agent_rtp: RtpSession
    agent_sdp: SdpSession
    bridge: MediaBridge
    done: asyncio.Future[str]
    hold_task: asyncio.Task[None] | None = None
    transfer_to: str | None = None
    agent_gone: bool = False  # the agent's leg ended (kept apart from ``done``, which a transfer may hold)


class QueueRuntime:
    """Runs the queues; implements the web layer's ``QueueView``."""

    def __init__(
        self,
        *,
        queues: Mapping[str, QueueConfig],
        agents: AgentSource,
        bus: EventBus,
        media: MediaEngine,
        prompts: PromptCache,
        media_policy: MediaPolicy,
        realm: str,
        clock: Callable[[], float] = time.monotonic,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self._queues = dict(queues)
        self._outbound = outbound  # toll-fraud policy for agents' transfers to numbers
        self._agents = agents
        self._bus = bus
        self._media = media
        self._prompts = prompts
        self._media_policy = media_policy
        self.realm = realm
        self._clock = clock
        self.engine = RoutingEngine(self._queues)
        self.edge: AgentEdge | None = None
        self._credentials: dict[str, AgentCredentials] = {}
        self._loaded: dict[str, datetime] = {}  # extension -> updated_at of the version loaded
        self._waiters: dict[str, _Waiter] = {}
        self._conversations: dict[str, _Conversation] = {}  # by caller call id
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._offer_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # ---- lifecycle --------------------------------------------------------------------------------
    def attach(self, edge: AgentEdge) -> None:
        """The agent edge is built with this runtime's callbacks, then handed back here."""
        self.edge = edge

    async def start(self) -> None:
        """Load every agent from the store and start the dispatcher, the reconciler and the reload poll."""
        changes = await self._agents.changed_since(None)
        for stored in changes.changed:
            self._load(stored)
        await self._restore()
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="queue-dispatch"),
            asyncio.create_task(self._reconcile_loop(), name="queue-reconcile"),
            asyncio.create_task(self._reload_loop(changes.as_of), name="queue-agent-reload"),
        ]
        log.info("queue runtime started", extra={"queues": sorted(self._queues),
                                                  "agents": len(self._credentials)})

    async def stop(self) -> None:
        self._stopping = True
        for task in [*self._tasks, *self._offer_tasks]:
            task.cancel()
        for task in [*self._tasks, *self._offer_tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conversation in list(self._conversations.values()):
            conversation.leg.hangup()

    # ---- agents and SIP ---------------------------------------------------------------------------
    def credentials(self, extension: str) -> AgentCredentials | None:
        """Digest HA1s for the registrar; disabled agents have none, so they cannot register."""
        return self._credentials.get(extension)

    async def _restore(self) -> None:
        """Bring back what a restart would otherwise lose: registrations and presence.

        Phones re-register only every few minutes, so without this every agent would be unreachable
        for that long after a restart. The last ``agent.registration`` event of each agent gives its
        bindings (the edge qualifies them before they take calls); the last ``agent.presence`` gives
        its presence (ready agents stay ready, a break stays a break).
        """
        registrations = await self._agents.latest_events("agent.registration")
        presences = await self._agents.latest_events("agent.presence")
        now = self._clock()
        if self.edge is not None:
            saved = [binding for ext, event in registrations.items() if ext in self._credentials
                     for binding in _bindings_from(ext, event.data)]
            self.edge.restore(saved)
        known = self.engine.agent_extensions()
        for extension, event in presences.items():
            presence, reason = event.data.get("presence"), event.data.get("reason")
            if extension in known and presence in ("ready", "not_ready"):
                self._apply(self.engine.set_presence(extension, presence, reason, now))

    def on_bindings(self, extension: str, bindings: tuple[Binding, ...]) -> None:
        """A registration, expiry or qualify result changed the agent's devices."""
        reachable = any(b.reachable for b in bindings)
        self._publish_one("agent.registration", None, {
            "extension": extension, "reachable": reachable,
            "contacts": [{"contact": b.contact, "source": f"{b.source[0]}:{b.source[1]}",
                          "transport": b.transport, "reachable": b.reachable, "rtt_ms": b.rtt_ms,
                          "expires_at": b.expires_at, "registered_at": b.registered_at,
                          "user_agent": b.user_agent}
                         for b in bindings],
        })
        if extension in self._credentials:
            self._apply(self.engine.set_reachable(extension, reachable, self._clock()))

    def on_security(self, type: str, data: dict[str, Any]) -> None:
        self._publish_one(type, None, data)
        log.warning("security event", extra={"event": type, **{f"sec_{k}": v for k, v in data.items()}})

    async def _reload_loop(self, since: datetime) -> None:
        """Pick up agents changed by another process (the CLI, another node) by polling the table."""
        while True:
            await asyncio.sleep(RELOAD_S)
            try:
                changes = await self._agents.changed_since(since, self.engine.agent_extensions())
            except Exception:
                log.exception("could not poll the agents table; trying again")
                continue
            since = changes.as_of
            for stored in changes.changed:
                if self._loaded.get(stored.extension) != stored.updated_at:
                    self._load(stored)
            for extension in changes.removed:
                self._unload(extension)

    def _unload(self, extension: str) -> None:
        self._credentials.pop(extension, None)
        self._loaded.pop(extension, None)
        self._apply(self.engine.remove_agent(extension, self._clock()))

    def _load(self, stored: StoredAgentLike) -> None:
        profile = stored.profile()
        self._loaded[profile.extension] = stored.updated_at
        if stored.realm != self.realm:
            log.warning("agent %s has a password for realm %r, not %r: it cannot register until the "
                        "password is set again", profile.extension, stored.realm, self.realm)
        if profile.enabled and stored.realm == self.realm:
            self._credentials[profile.extension] = AgentCredentials(
                profile.extension, stored.ha1_md5, stored.ha1_sha256)
        else:
            self._credentials.pop(profile.extension, None)
        self._apply(self.engine.upsert_agent(profile, self._clock()))
        if self.edge is not None:
            reachable = any(b.reachable for b in self.edge.bindings(profile.extension))
            self._apply(self.engine.set_reachable(profile.extension, reachable, self._clock()))

    # ---- QueueView (the web layer) -------------------------------------------------------------
    def agents(self) -> list[dict[str, Any]]:
        return [self._agent_view(ext) for ext in sorted(self.engine.agent_extensions())]

    def _wall(self, view: Mapping[str, Any]) -> dict[str, Any]:
        """The engine's clock readings in a view, as UTC wall times an API client can use."""
        offset = time.time() - self._clock()
        out = dict(view)
        for key in _CLOCK_KEYS:
            value = out.get(key)
            if isinstance(value, int | float):
                out[key] = datetime.fromtimestamp(value + offset, UTC).isoformat()
        if isinstance(out.get("waiting"), list):
            out["waiting"] = [self._wall(item) for item in out["waiting"]]
        return out

    def agent(self, extension: str) -> dict[str, Any] | None:
        if extension not in self.engine.agent_extensions():
            return None
        return self._agent_view(extension)

    def _agent_view(self, extension: str) -> dict[str, Any]:
        view = self._wall(self.engine.agent_view(extension, self._clock()))
        if self.edge is not None:
            view["devices"] = [
                {"contact": b.contact, "source": f"{b.source[0]}:{b.source[1]}", "transport": b.transport,
                 "reachable": b.reachable, "rtt_ms": b.rtt_ms,
                 "expires_in_s": round(b.expires_at - time.time())}
                for b in self.edge.bindings(extension)
            ]
        return view

    def queues(self) -> list[dict[str, Any]]:
        return [self._wall(view) for view in self.engine.queues(self._clock())]

    def queue(self, name: str) -> dict[str, Any] | None:
        return self._wall(self.engine.queue_view(name, self._clock())) if name in self._queues else None

    def queue_names(self) -> set[str]:
        return set(self._queues)

    def queue_config(self, name: str) -> QueueConfig | None:
        return self._queues.get(name)

    async def set_presence(self, extension: str, presence: str, reason: str | None) -> dict[str, Any]:
        if extension not in self.engine.agent_extensions():
            raise KeyError(extension)
        self._apply(self.engine.set_presence(extension, presence, reason, self._clock()))  # type: ignore[arg-type]
        return self._agent_view(extension)

    async def agents_changed(self, extension: str) -> None:
        stored = await self._agents.get(extension)
        if stored is None:
            self._unload(extension)
            return
        self._load(stored)

    # ---- events -----------------------------------------------------------------------------------
    def _publish_one(self, type: str, call_id: str | None, data: Mapping[str, Any]) -> None:
        self._bus.publish(DomainEvent.now(type, call_id, data))

    def _apply(self, events: Iterable[EngineEvent]) -> None:
        """Publish engine events; any state change may let an offer happen, so wake the dispatcher."""
        changed = False
        for event in events:
            changed = True
            self._publish_one(event.type, event.call_id, event.data)
            if event.type == "queue.left" and event.call_id is not None:
                waiter = self._waiters.get(event.call_id)
                reason = str(event.data.get("reason", ""))
                if waiter is not None and reason == "left_empty" and not waiter.left.done():
                    waiter.left.set_result("closed")
        if changed:
            self._kick.set()

    # ---- the caller's wait ----------------------------------------------------------------------
    async def wait(
        self, caller: QueueCaller, queue: str, spec: EnqueueSpec, *, virtual_start: float | None = None
    ) -> str:
        """Hold ``caller`` in ``queue`` until an agent has talked to them, or they leave.

        Returns ``answered`` (after the conversation), ``timeout``, ``full``, ``closed`` or ``left``.
        Cancellation (the caller hung up) is an abandon while waiting, or ends the agent's leg when
        connected; either way it propagates.
        """
        config = self._queues.get(queue)
        if config is None:
            log.error("flow enqueues to unknown queue %r", queue)
            self._publish_one("queue.refused", caller.call_id, {"queue": queue, "reason": "unknown queue"})
            return "closed"
        now = self._clock()
        result, events = self.engine.enqueue(
            caller.call_id, queue, priority=spec.priority, requirements=spec.requirement_text(),
            data=dict(spec.data), now=now, virtual_start=virtual_start,
        )
        self._apply(events)
        if result.outcome != "joined":
            return result.outcome
        waiter = _Waiter(caller.call_id, queue, caller, spec, now,
                         virtual_start=now if virtual_start is None else min(now, virtual_start))
        self._waiters[caller.call_id] = waiter
        holding = asyncio.create_task(self._hold(waiter, config), name=f"hold-{caller.call_id}")
        waiter.holding = holding
        try:
            outcome = await self._wait_for_agent(waiter, config)
            if outcome != "connected":
                return outcome
            conversation = waiter.connected.result()
            holding.cancel()
            return await self._converse(waiter, conversation)
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        finally:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
            self._waiters.pop(caller.call_id, None)

    async def _wait_for_agent(self, waiter: _Waiter, config: QueueConfig) -> str:
        """``connected``, or the outcome that ended the wait (the engine entry is gone either way)."""
        exit_key = config.exit_key
        digit_task: asyncio.Task[str | None] | None = None
        deadline = waiter.joined_at + waiter.spec.timeout
        try:
            while True:
                if exit_key is not None and digit_task is None:
                    digit_task = asyncio.create_task(waiter.caller.next_digit(waiter.spec.timeout))
                waits: set[asyncio.Future[Any]] = {waiter.connected, waiter.left}
                if digit_task is not None:
                    waits.add(digit_task)
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if waiter.connected in done:
                    return "connected"
                if waiter.left in done:
                    return waiter.left.result()
                if digit_task is not None and digit_task in done:
                    digit = digit_task.result()
                    digit_task = None
                    if digit == exit_key:
                        self._leave(waiter, "left")
                        return "left"
                if not done:
                    break
        finally:
            if digit_task is not None:
                digit_task.cancel()
        # Timed out: an offer that is ringing right now still wins if it is answered first.
        if waiter.connected.done():
            return "connected"
        self._leave(waiter, "timeout")
        return "timeout"

    def _leave(self, waiter: _Waiter, reason: str) -> None:
        task = waiter.offer_task
        if task is not None and not task.done():
            task.cancel()  # the offer task cancels the INVITE and reports "cancelled" to the engine
        self._apply(self.engine.leave(waiter.call_id, reason, self._clock()))  # type: ignore[arg-type]

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter.connected.done() and not waiter.connected.cancelled():
            conversation = waiter.connected.result()
            if not conversation.done.done():
                conversation.done.set_result("caller_hangup")
            return
        self._leave(waiter, "abandoned")

    async def _hold(self, waiter: _Waiter, config: QueueConfig) -> None:
        """Hold audio in a loop, with position and wait announcements between loops."""
        rtp = waiter.caller.rtp
        specs = _hold_specs(waiter, config)
        announce = config.announcements
        next_announcement = waiter.joined_at + announce.first_after_s
        last_position: int | None = None
        while True:
            for spec in specs:
                audio = await self._prompts.get(spec)
                await rtp.play(audio, barge_in=False)
            if (announce.position or announce.wait) and self._clock() >= next_announcement:
                next_announcement = self._clock() + announce.every_s
                text, last_position = self._announcement(waiter, config, last_position)
                if text:
                    audio = await self._prompts.get(PromptSpec(tts=text, label="queue-announcement"))
                    await rtp.play(audio, barge_in=False)

    def _announcement(self, waiter: _Waiter, config: QueueConfig, last: int | None) -> tuple[str, int | None]:
        now = self._clock()
        ewt = self.engine.ewt(waiter.call_id, now)
        if ewt is None:
            return "", last
        self._publish_one("queue.ewt", waiter.call_id, {"queue": waiter.queue, **ewt.to_dict(),
                                                        "waited_s": round(now - waiter.joined_at, 3)})
        parts: list[str] = []
        announce = config.announcements
        if announce.position and (last is None or ewt.position <= last):
            if ewt.position > announce.max_position:
                parts.append(f"There are more than {announce.max_position} callers ahead of you.")
            elif ewt.position <= 1:
                parts.append("You are next in line.")
            else:
                parts.append(f"You are caller number {ewt.position} in line.")
        if announce.wait and ewt.p50_s is not None:
            minutes = max(1, round(ewt.p50_s / 60))
            parts.append(f"Your estimated wait is about {minutes} minute{'s' if minutes != 1 else ''}.")
        return " ".join(parts), ewt.position

    # ---- dispatching offers ---------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        """Run the engine whenever something changed, and at its next timer (steps, wrap-up ends)."""
        while True:
            deadline = self.engine.next_deadline()
            wait = TICK_S if deadline is None else min(TICK_S, max(0.0, deadline - self._clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._kick.wait()
            self._kick.clear()
            try:
                now = self._clock()
                self._apply(self.engine.tick(now))
                for offer in self.engine.next_offers(now):
                    self._start_offer(offer)
            except Exception:
                log.exception("queue dispatch failed; continuing")
            # Events from this very pass set the kick again; one more pass then finds nothing new.
            # Yield in any case, so a busy engine can never starve the loop.
            await asyncio.sleep(0)

    def _start_offer(self, offer: Offer) -> None:
        waiter = self._waiters.get(offer.call_id)
        for event in offer.events:  # the agent's "offered" activity and the queue.offer with its trace
            self._publish_one(event.type, event.call_id, event.data)
        if waiter is None:
            log.error("offer %s for call %s, which is not waiting", offer.offer_id, offer.call_id)
            self._apply(self.engine.offer_result(offer.offer_id, "cancelled", self._clock()))
            return
        task = asyncio.create_task(self._run_offer(waiter, offer), name=f"offer-{offer.offer_id}")
        waiter.offer_task = task
        self._offer_tasks.add(task)
        task.add_done_callback(self._offer_tasks.discard)

    async def _run_offer(self, waiter: _Waiter, offer: Offer) -> None:
        token = current_call_id.set(waiter.call_id)
        try:
            await self._offer(waiter, offer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("offer %s to %s failed", offer.offer_id, offer.extension)
            self._apply(self.engine.offer_result(offer.offer_id, "unreachable", self._clock()))
        finally:
            current_call_id.reset(token)

    async def _offer(self, waiter: _Waiter, offer: Offer) -> None:
        edge = self.edge
        bindings = [b for b in edge.bindings(offer.extension) if b.reachable] if edge is not None else []
        if not bindings:
            self._miss(offer, "unreachable", "no reachable device")
            return
        try:
            agent_rtp = await self._media.open_session(f"{waiter.call_id}-agent")
        except MediaPortsExhausted:
            log.error("no RTP port for the agent leg")
            self._miss(offer, "unreachable", "media ports exhausted")
            return
        sdp = SdpSession()
        policy = self._media_policy
        offer_sdp = sdp.offer(policy.advertised_host, agent_rtp.local_port, policy.codecs)
        headers = self._offer_headers(waiter, offer)
        assert edge is not None
        legs = [edge.dial(b, caller=waiter.caller.caller, caller_name=waiter.caller.caller_name,
                          sdp_offer=offer_sdp, headers=headers, ring_timeout=offer.ring_timeout_s)
                for b in bindings]
        connected = False
        try:
            leg, outcome = await _first_answer(legs)
            if outcome.kind != "answered" or leg is None:
                self._miss(offer, outcome.kind, outcome.reason, outcome.sip_code)
                return
            try:
                negotiated = sdp.accept_answer(outcome.sdp_answer or b"", offered=self._media_policy.codecs)
            except (NoCommonCodec, SdpError) as exc:
                log.warning("agent %s answered with unusable SDP: %s", offer.extension, exc)
                leg.hangup()
                self._miss(offer, "rejected", f"bad SDP answer: {exc}")
                return
            if waiter.left.done() or waiter.connected.done():
                leg.hangup()
                self._apply(self.engine.offer_result(offer.offer_id, "cancelled", self._clock()))
                return
            agent_rtp.start(negotiated)
            caller_rtp = waiter.caller.rtp
            if waiter.holding is not None:
                waiter.holding.cancel()  # before the next hold prompt can start
            caller_rtp.stop_playback()  # an announcement never delays the answer
            bridge = MediaBridge(caller_rtp, agent_rtp)
            bridge.start()
            conversation = _Conversation(offer.extension, leg, agent_rtp, sdp, bridge,
                                         asyncio.get_running_loop().create_future())
            self._wire_agent_leg(waiter, conversation, self._queues[offer.queue])
            self._conversations[waiter.call_id] = conversation
            connected = True
            self._apply(self.engine.offer_result(offer.offer_id, "answered", self._clock()))
            waiter.connected.set_result(conversation)
        except asyncio.CancelledError:
            for leg in legs:
                leg.cancel()
            if self.engine.offer_pending(offer.offer_id):  # not when the caller's leaving closed it
                self._apply(self.engine.offer_result(offer.offer_id, "cancelled", self._clock()))
            raise
        finally:
            if not connected:
                agent_rtp.close()

    def _miss(self, offer: Offer, cause: str, reason: str, sip_code: int | None = None) -> None:
        kind = {"cancelled": "cancelled", "busy": "busy", "rejected": "rejected",
                "no_answer": "no_answer"}.get(cause, "unreachable")
        log.info("offer to %s missed: %s (%s)", offer.extension, kind, reason)
        self._apply(self.engine.offer_result(offer.offer_id, kind, self._clock()))  # type: ignore[arg-type]

    def _offer_headers(self, waiter: _Waiter, offer: Offer) -> dict[str, str]:
        headers = {
            "X-Helpline-Call-Id": waiter.call_id,
            "X-Helpline-Queue": offer.queue,
            "X-Helpline-Did": waiter.caller.did,
            "X-Helpline-Wait": f"{self._clock() - waiter.joined_at:.0f}",
        }
        if waiter.caller.verstat:
            headers["X-Helpline-Verstat"] = waiter.caller.verstat
        for key, value in waiter.spec.data.items():
            safe_key = "".join(ch for ch in key.title() if ch.isalnum() or ch == "-")[:32]
            safe_value = "".join(ch for ch in str(value) if ch.isprintable())[:256]
            if safe_key:
                headers[f"X-Helpline-Data-{safe_key}"] = safe_value
        return headers

    # ---- the conversation -------------------------------------------------------------------------
    def _wire_agent_leg(self, waiter: _Waiter, conversation: _Conversation, config: QueueConfig) -> None:
        leg = conversation.leg

        def ended(end: CallEnd) -> None:
            conversation.agent_gone = True
            if not conversation.done.done():
                conversation.done.set_result("agent_hangup")

        def reoffer(offer_sdp: bytes) -> bytes | None:
            try:
                negotiated = conversation.agent_sdp.answer(
                    offer_sdp, self._media_policy.advertised_host, conversation.agent_rtp.local_port,
                    self._media_policy.codecs)
            except (NoCommonCodec, SdpError) as exc:
                log.warning("agent re-INVITE refused: %s", exc)
                return None
            conversation.agent_rtp.update(negotiated)
            self._set_hold(waiter, conversation, config, negotiated.on_hold)
            return negotiated.answer_sdp

        def dtmf(digit: str, duration_ms: int) -> None:
            self._spawn_dtmf(waiter.caller.rtp, digit, duration_ms)

        def refer(target: str) -> bool:
            if conversation.transfer_to is not None:
                return False
            queue = _queue_target(target)
            number = _number_target(target)
            if queue not in self._queues and number is None:
                refusal: str | None = "neither a queue nor a number"
            elif queue in self._queues:
                refusal = self.engine.join_refusal(queue)  # closed, full, nobody staffing it
            else:
                refusal = self._fraud_refusal(waiter, conversation.extension, target, number)
            if refusal is not None:
                # refused with 403 before anything changes: the conversation simply goes on
                log.warning("agent %s asked to transfer to %r: %s", conversation.extension, target, refusal)
                self._publish_one("queue.transfer_refused", waiter.call_id, {
                    "extension": conversation.extension, "target": target, "reason": refusal})
                return False
            conversation.transfer_to = target
            if not conversation.done.done():
                conversation.done.set_result("transfer")
            return True

        def media_lost() -> None:
            # The agent's phone died without a BYE (crash, network gone): its RTP stops. Agent
            # dialogs have no session timer, so this is the signal; without it the agent would stay
            # "connected" to a silent call for as long as the caller waits.
            log.warning("no RTP from agent %s: ending the conversation", conversation.extension)
            self._publish_one("queue.agent_lost", waiter.call_id, {
                "extension": conversation.extension, "reason": "media timeout"})
            conversation.agent_gone = True
            if not conversation.done.done():
                conversation.done.set_result("agent_media_timeout")

        def caller_info_digit(digit: str) -> None:
            # the caller's RFC 4733 digits are relayed by the bridge; SIP INFO ones are re-sent here
            if conversation.bridge.running and not conversation.bridge.held:
                self._spawn_dtmf(conversation.agent_rtp, digit, 100)

        leg.on_ended = ended
        leg.on_reoffer = reoffer
        leg.on_dtmf = dtmf
        leg.on_refer = refer
        conversation.agent_rtp.on_timeout = media_lost
        waiter.caller.on_info_digit = caller_info_digit

    def _fraud_refusal(self, waiter: _Waiter, extension: str, target: str, number: str | None) -> str | None:
        """Why the outbound policy refuses an agent's transfer to a number (None: allowed).

        The number is checked as the trunk will dial it (``tel:``), whatever the Refer-To looked like.
        """
        if self._outbound is None or number is None:
            return None
        verdict = self._outbound.allow_transfer(f"tel:{number}")
        if verdict.allowed:
            return None
        self._publish_one("security.fraud_refused", waiter.call_id, {
            "kind": "agent_transfer", "agent": extension, "target": target, "destination": number,
            "rule": verdict.rule, "reason": verdict.reason})
        return verdict.reason

    def _spawn_dtmf(self, rtp: RtpSession, digit: str, duration_ms: int) -> None:
        """Send a digit as RFC 4733 on ``rtp`` (in the background; a leg without telephone-event
        or a closed one is logged and skipped)."""

        async def send() -> None:
            try:
                await rtp.send_dtmf(digit, max(40, duration_ms))
            except (RuntimeError, ValueError) as exc:
                log.info("digit not relayed: %s", exc)

        task = asyncio.get_running_loop().create_task(send())
        self._offer_tasks.add(task)
        task.add_done_callback(self._offer_tasks.discard)

    def _set_hold(
        self, waiter: _Waiter, conversation: _Conversation, config: QueueConfig, held: bool
    ) -> None:
        if held == (conversation.hold_task is not None):
            return
        conversation.bridge.hold(held)
        self._apply(self.engine.hold(conversation.extension, held, self._clock()))
        self._publish_one("queue.hold", waiter.call_id, {"extension": conversation.extension, "held": held})
        if held:
            conversation.hold_task = asyncio.create_task(self._hold_music(waiter, config))
        else:
            task, conversation.hold_task = conversation.hold_task, None
            if task is not None:
                task.cancel()
            waiter.caller.rtp.stop_playback()

    async def _hold_music(self, waiter: _Waiter, config: QueueConfig) -> None:
        specs = _hold_specs(waiter, config)
        while True:
            for spec in specs:
                await waiter.caller.rtp.play(await self._prompts.get(spec), barge_in=False)

    async def _converse(self, waiter: _Waiter, conversation: _Conversation) -> str:
        """Until either side hangs up (or the agent transfers); then wrap-up starts for the agent."""
        try:
            while True:
                how = await asyncio.shield(conversation.done)
                if how != "transfer" or conversation.transfer_to is None:
                    return "answered"
                outcome = await self._transfer(waiter, conversation, conversation.transfer_to)
                if outcome is not None:
                    return outcome
        finally:
            self._end_conversation(waiter, conversation)

    async def _transfer(self, waiter: _Waiter, conversation: _Conversation, target: str) -> str | None:
        """A blind transfer from the agent: to another queue (``sip:queue-NAME@...``) or a number.

        Returns the caller's outcome, or None when a transfer to a number failed and the caller and
        the agent are talking again (a blind transfer that fails leaves the call where it was).
        """
        conversation.bridge.stop()
        queue = _queue_target(target)
        self._publish_one("queue.transfer", waiter.call_id, {
            "extension": conversation.extension, "target": target, "queue": queue})
        if queue is not None and queue in self._queues:
            conversation.leg.notify_transfer(200)
            self._end_conversation(waiter, conversation)
            # The first queue's skill requirements were for the first agent; the new queue's own apply.
            spec = dataclasses.replace(waiter.spec, requirements=None, skills=())
            # the caller keeps their age: the new queue orders them by when they first joined
            return await self.wait(waiter.caller, queue, spec, virtual_start=waiter.virtual_start)
        number = _number_target(target)
        assert number is not None  # the REFER was refused otherwise
        conversation.leg.notify_transfer(100)
        result = await waiter.caller.transfer(number, timeout=30.0)
        conversation.leg.notify_transfer(_TRANSFER_STATUS.get(result, 480))
        self._publish_one("queue.transfer_result", waiter.call_id, {
            "extension": conversation.extension, "target": target, "result": result})
        if result == "connected" or conversation.agent_gone:
            return "answered"
        conversation.transfer_to = None
        conversation.done = asyncio.get_running_loop().create_future()
        conversation.bridge.start()
        return None

    def _end_conversation(self, waiter: _Waiter, conversation: _Conversation) -> None:
        if self._conversations.get(waiter.call_id) is not conversation:
            return
        del self._conversations[waiter.call_id]
        if conversation.hold_task is not None:
            conversation.hold_task.cancel()
        conversation.bridge.stop()
        conversation.leg.hangup()
        conversation.agent_rtp.close()
        conversation.leg.on_ended = None
        conversation.leg.on_reoffer = None
        conversation.leg.on_refer = None
        conversation.leg.on_dtmf = None
        waiter.caller.on_info_digit = None
        self._apply(self.engine.call_ended(conversation.extension, self._clock()))

    # ---- reconciliation ---------------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_S)
            try:
                self.reconcile()
            except Exception:
                log.exception("queue reconciliation failed; continuing")

    def reconcile(self) -> None:
        """Compare the engine's agent states with SIP truth and repair what disagrees."""
        dialogs = self.edge.live_dialogs() if self.edge is not None else set()
        live = {call_id for call_id, c in self._conversations.items() if c.leg.sip_call_id in dialogs}
        self._apply(self.engine.check_invariants(self._clock(), live_calls=live))


async def _first_answer(legs: Sequence[AgentLeg]) -> tuple[AgentLeg | None, DialOutcome]:
    """Ring every device of the agent; the first to answer wins and the others are cancelled."""
    pending = {asyncio.ensure_future(leg.outcome()): leg for leg in legs}
    last: DialOutcome | None = None
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                leg = pending.pop(future)
                outcome = future.result()
                if outcome.kind == "answered":
                    for other in pending.values():
                        other.cancel()
                    return leg, outcome
                last = outcome
    finally:
        for future in pending:
            future.cancel()
    assert last is not None
    return None, last


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def _hold_specs(waiter: _Waiter, config: QueueConfig) -> list[PromptSpec]:
    """The flow's hold prompts, else the queue's, else the built-in hold tone."""
    return list(waiter.spec.hold_prompts) or [_prompt(p) for p in config.hold_prompt] or list(DEFAULT_HOLD)


def _bindings_from(extension: str, data: Mapping[str, Any]) -> list[Binding]:
    """The bindings an ``agent.registration`` event recorded (ones from older events are skipped)."""
    out = []
    for contact in data.get("contacts") or ():
        try:
            host, _, port = str(contact["source"]).rpartition(":")
            out.append(Binding(
                extension=extension, contact=str(contact["contact"]), source=(host, int(port)),
                transport=str(contact["transport"]), expires_at=float(contact["expires_at"]),
                registered_at=float(contact["registered_at"]), user_agent=contact.get("user_agent"),
                reachable=False, rtt_ms=None,
            ))
        except (KeyError, TypeError, ValueError):
            log.info("skipping a saved registration of %s without its expiry", extension)
    return out


def _prompt(text: str) -> PromptSpec:
    if text.startswith("tts:"):
        return PromptSpec(tts=text[4:])
    return PromptSpec(file=Path(text))


def _queue_target(uri: str) -> str | None:
    user = _uri_user(uri)
    return user[len("queue-"):] if user is not None and user.startswith("queue-") else None


def _number_target(uri: str) -> str | None:
    user = _uri_user(uri)
    if user is None:
        return None
    digits = user.lstrip("+")
    return user if digits.isdigit() and 3 <= len(digits) <= 15 else None


def _uri_user(uri: str) -> str | None:
    text = uri.strip().strip("<>")
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            rest = text[len(scheme):]
            return rest.split("@", 1)[0].split(";", 1)[0] if rest else None
    return None

