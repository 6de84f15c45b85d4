"""EdgeGuard: the one object both SIP listeners ask before they spend anything on a peer.

One per process, shared by the trunk listener and the agent listener, so a source banned on one is
banned on both. It answers four questions at four points (see docs/sip-edge-design.md):

1. ``admit_bytes``: may these bytes be parsed at all? (a ban or an oversize datagram: no)
2. ``screen``: what happens to this parsed request before any lookup? (pass, drop, reject)
3. ``auth_failed`` / ``user_locked``: digest outcomes, which ban sources and lock users
4. ``admit_connection`` and friends: TCP/TLS connections that have not yet said anything valid

It reports through one callback, never raises into a transport, and never reports per packet: every
repeated report goes through an :class:`~.windows.EventGate`. Trusted trunk sources (``trusted``,
set by the trunk bridge) and ``trusted_networks`` are never limited per source and never banned.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiosipua.message import SipRequest

from .auth_failures import AuthFailures
from .bans import Ban, BanChange, BanEntry, BanTable
from .buckets import RateLimiter
from .fraud import OutboundPolicy
from .screen import Excess, request_excess, scanner_match
from .settings import SecuritySettings
from .tcp_limits import PendingConnections
from .windows import EventGate, ThresholdWindow

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
Listener = Literal["trunk", "agents"]
OnEvent = Callable[[str, dict[str, Any]], None]

_RATE_LIMITED = "rate limited"
_UNBOUNDED = 1 << 62
_SWEEP_INTERVAL_S = 1.0
_REPORT_INTERVAL_S = 1.0
_BANNED_TRAFFIC_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the listener does with a screened request.

    ``drop``: nothing at all. ``reject``: answer ``code`` ``reason`` with ``headers`` (503 with
    Retry-After over capacity, 513 over a size cap, 488 for too many media lines).
    """

    action: Literal["pass", "drop", "reject"]
    code: int = 0
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def remembered(self) -> bool:
        """Whether the request's retransmissions deserve this verdict without another look.

        A rate-limit drop is not remembered: the bucket refills, so a retransmission may be served,
        and remembering every dropped request of a distributed flood would cost memory per packet.
        """
        return self.reason != _RATE_LIMITED


PASS = Verdict("pass")
_RATE_DROP = Verdict("drop", reason=_RATE_LIMITED)


def _where(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


class EdgeGuard:
    """Bans, rate limits, caps, failure windows and connection limits for the SIP edge.

    ``on_event(type, data)`` receives every ``security.*`` event the guard raises. ``clock`` is a
    monotonic clock for rates and windows; ``wall`` the epoch clock bans are stamped with (they
    outlive the process). ``blocked_countries`` goes to the outbound fraud policy. Set
    ``on_ban_change`` to persist bans; :meth:`restore` puts persisted ones back.
    """

    def __init__(
        self,
        settings: SecuritySettings,
        *,
        on_event: OnEvent,
        trusted: Callable[[str], bool] = lambda ip: False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        blocked_countries: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self._on_event = on_event
        self._trusted = trusted
        self._clock = clock
        self._wall = wall
        self._enabled = settings.enabled
        caps = settings.caps
        self._udp_cap = caps.udp_message_bytes if self._enabled else _UNBOUNDED
        self._stream_cap = caps.stream_message_bytes if self._enabled else _UNBOUNDED
        capacity = settings.max_tracked_sources
        self.on_ban_change: Callable[[BanChange], None] | None = None
        self.bans = BanTable(settings.max_bans, wall=wall, on_change=self._ban_changed)
        self._entries: dict[str, BanEntry] = self.bans.entries
        self.outbound = OutboundPolicy(settings.outbound, blocked_countries, clock=clock)
        self._limiter = RateLimiter(settings.rates, capacity, clock())
        self._failures = AuthFailures(settings)
        self._floods = ThresholdWindow(settings.flood_ban_excess, settings.flood_window_s, capacity)
        self._pending = PendingConnections(settings.tcp.unauthenticated_per_source)
        self._reports = EventGate(_REPORT_INTERVAL_S, capacity)
        self._trust: dict[str, tuple[bool, bool]] = {}
        self._next_sweep = 0.0
        self._retry_after = (("Retry-After", str(settings.retry_after_s)),)
        self.dropped: Counter[tuple[str, str]] = Counter()
        """Messages and connections refused, by (listener, reason), for the metrics."""

    # --- trust ---

    @property
    def trusted(self) -> Callable[[str], bool]:
        """Whether an IP is a trusted trunk source (set by the trunk bridge from its trunks)."""
        return self._trusted

    @trusted.setter
    def trusted(self, value: Callable[[str], bool]) -> None:
        self._trusted = value
        self._trust.clear()

    def _trust_of(self, ip: str) -> tuple[bool, bool]:
        """(a trunk source, exempt from per-source limits and bans), cached per IP."""
        known = self._trust.get(ip)
        if known is not None:
            return known
        try:
            trunk = bool(self._trusted(ip))
        except Exception:
            logger.exception("trusted-source check failed for %s; treating it as untrusted", ip)
            trunk = False
        exempt = trunk
        if not exempt and self.settings.networks:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                address = None
            exempt = address is not None and any(address in net for net in self.settings.networks)
        if len(self._trust) >= self.settings.max_tracked_sources:
            self._trust.clear()
        self._trust[ip] = (trunk, exempt)
        return trunk, exempt

    # --- 1. before parsing ---

    def admit_bytes(self, listener: Listener, transport: str, addr: Addr, size: int) -> bool:
        """Whether bytes from ``addr`` may be parsed; False means drop them without a word.

        The common case is one dict lookup and one compare.
        """
        entry = self._entries.get(addr[0])
        if entry is None:
            if size <= (self._udp_cap if transport == "udp" else self._stream_cap):
                return True
            return self._oversize(listener, transport, addr, size)
        return self._banned_traffic(entry, listener, transport, addr, size)

    def _banned_traffic(
        self, entry: BanEntry, listener: Listener, transport: str, addr: Addr, size: int
    ) -> bool:
        ban = entry.ban
        if ban.kind == "source" and self._source_ban(ban.key) is not None:
            entry.seen += 1
            self.dropped[(listener, "banned")] += 1
            now = self._clock()
            if now >= entry.report_at:
                entry.report_at = now + _BANNED_TRAFFIC_INTERVAL_S
                self._emit(
                    "security.banned_traffic",
                    {
                        "source": _where(addr),
                        "key": ban.key,
                        "listener": listener,
                        "transport": transport,
                        "reason": ban.reason,
                        "dropped": entry.seen,
                    },
                )
            return False
        if size <= (self._udp_cap if transport == "udp" else self._stream_cap):
            return True
        return self._oversize(listener, transport, addr, size)

    def _oversize(self, listener: Listener, transport: str, addr: Addr, size: int) -> bool:
        self.dropped[(listener, "oversize")] += 1
        if transport == "udp":
            self.oversize(listener, transport, addr, "udp_message_bytes", size, self._udp_cap)
        else:
            self.oversize(listener, transport, addr, "stream_message_bytes", size, self._stream_cap)
        return False

    def oversize(
        self, listener: Listener, transport: str, addr: Addr, cap: str, size: int, limit: int
    ) -> None:
        """Report a cap breach (``cap`` names it: a :class:`CapSettings` field, or ``header_lines``
        for a stream head the parser would refuse); at most once a second per source."""
        self._report(
            "security.oversize", addr[0], self._clock(), addr, listener, transport, None,
            cap=cap, size=size, limit=limit,
        )  # fmt: skip

    def unparseable(self, listener: Listener, transport: str, addr: Addr) -> bool:
        """Bytes from ``addr`` did not parse: count them like a flood; whether to report them now.

        Trusted sources are always reported (their operator needs every one). Others at most once a
        second per source, and a stream of garbage is banned like a stream of requests.
        """
        if not self._enabled:
            return True
        ip = addr[0]
        _, exempt = self._trust_of(ip)
        if exempt:
            return True
        now = self._clock()
        if self._floods.hit(ip, now):
            self._ban_source(ip, "flood", listener, transport)
        return self._reports.due(("unparseable", ip), now) is not None

    # --- 2. after parsing ---

    def screen(self, listener: Listener, transport: str, request: SipRequest, addr: Addr) -> Verdict:
        """Scanner User-Agent, size caps, then rate limits; before any user, dialog or number lookup.

        On the trunk listener a source that is not a trunk never gets an answer from here (A1: no
        response to non-ACL sources): what would be a reject is a drop.
        """
        if not self._enabled:
            return PASS
        ip = addr[0]
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_INTERVAL_S
            self.bans.sweep()
        trunk, exempt = self._trust_of(ip)
        method = request.method.upper()
        if not exempt:
            needle = scanner_match(request.headers.get_first("user-agent"), self.settings.scanner_needles)
            if needle is not None:
                self._report("security.scanner", ip, now, addr, listener, transport, method, signature=needle)
                self.dropped[(listener, "scanner")] += 1
                return Verdict("drop", reason=f"scanner {needle}")
        excess = request_excess(request, self.settings.caps)
        if excess is not None:
            self.dropped[(listener, "oversize")] += 1
            return self._over_cap(excess, trunk, listener, transport, method, addr, now)
        if exempt:
            if method == "INVITE" and not self._limiter.allow_global("trusted", method, now):
                self._report(
                    "security.rate_limited", ip, now, addr, listener, transport, method,
                    reason="over the global INVITE budget", action="503",
                )  # fmt: skip
                self.dropped[(listener, "over_capacity")] += 1
                return Verdict("reject", 503, "Service Unavailable", self._retry_after)
            return PASS
        if not self._limiter.allow_source(ip, method, now):
            self.dropped[(listener, "rate_limited")] += 1
            if self._floods.hit(ip, now):
                self._ban_source(ip, "flood", listener, transport)
            else:
                self._report(
                    "security.rate_limited", ip, now, addr, listener, transport, method,
                    reason="over the per-source rate", action="drop",
                )  # fmt: skip
            return _RATE_DROP
        if not self._limiter.allow_global("untrusted", method, now):
            self.dropped[(listener, "over_capacity")] += 1
            held = self._reports.due(("flood", listener, method), now)
            if held is not None:
                self._emit(
                    "security.flood_dropped",
                    {
                        "listener": listener,
                        "transport": transport,
                        "method": method,
                        "reason": "over the global budget",
                        "dropped": held + 1,
                    },
                )
            return _RATE_DROP
        return PASS

    def _over_cap(
        self,
        excess: Excess,
        trunk: bool,
        listener: Listener,
        transport: str,
        method: str,
        addr: Addr,
        now: float,
    ) -> Verdict:
        self._report(
            "security.oversize", addr[0], now, addr, listener, transport, method,
            cap=excess.what, size=excess.size, limit=excess.limit,
        )  # fmt: skip
        silent = (
            method == "ACK"
            or (listener == "trunk" and not trunk)
            or (excess.what == "via_headers" and transport == "udp")  # the answer would copy every Via
        )
        if silent:
            return Verdict("drop", reason=excess.detail)
        return Verdict("reject", excess.code, excess.phrase)

    # --- 3. digest outcomes ---

    def auth_failed(
        self,
        listener: Listener,
        transport: str,
        addr: Addr,
        user: str | None,
        reason: str,
        *,
        event: str = "security.auth_failure",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """A digest answer failed: report it; ban the source / lock the user on their thresholds.

        The edges pass their own event name and details (method, Call-ID...), so each failure is
        one event, not one from the edge and another from here.
        """
        data: dict[str, Any] = {
            "source": _where(addr),
            "listener": listener,
            "transport": transport,
            "user": user,
            "reason": reason,
        }
        data.update(detail or {})
        self._emit(event, data)
        if not self._enabled:
            return
        ip = addr[0]
        _, exempt = self._trust_of(ip)
        outcome = self._failures.record(None if exempt else ip, user, self._clock())
        if outcome.ban_source:
            self._ban_source(ip, "auth_failures", listener, transport)
        if outcome.lock_user and user and not self.user_locked(user):
            self._failures.by_user.forget(user)
            self.bans.ban(user, "user", "user_auth_failures", self.settings.lock_s)

    def auth_succeeded(self, addr: Addr, user: str) -> None:
        """A digest answer proved ``user``. Resets nothing: the windows slide on their own, so a
        cracker holding one valid password cannot clear its record with it."""
        logger.debug("%s authenticated from %s", user, _where(addr))

    def user_locked(self, user: str) -> bool:
        """Whether ``user`` is locked; its right password must then get the plain 401 (no oracle)."""
        entry = self._entries.get(user)
        return entry is not None and entry.ban.kind == "user" and self.bans.check(user) is not None

    # --- 4. TCP/TLS connections ---

    def admit_connection(self, listener: Listener, transport: str, addr: Addr) -> bool:
        """Whether to keep a new connection; False: close it at once (banned, or too many idle).

        Every admitted connection must later get :meth:`connection_closed`.
        """
        if not self._enabled:
            return True
        ip = addr[0]
        now = self._clock()
        if self._source_ban(ip) is not None:
            self.dropped[(listener, "tcp_refused")] += 1
            self._report("security.tcp_refused", ip, now, addr, listener, transport, None, reason="banned")
            return False
        _, exempt = self._trust_of(ip)
        if not self._pending.admit(ip, limited=not exempt):
            self.dropped[(listener, "tcp_refused")] += 1
            self._report(
                "security.tcp_refused", ip, now, addr, listener, transport, None,
                reason=f"{self._pending.per_source} connections without a valid message",
            )  # fmt: skip
            return False
        return True

    def connection_validated(self, listener: Listener, addr: Addr) -> None:
        """The connection's first valid SIP message arrived: it no longer counts as idle."""
        if self._enabled:
            self._pending.settle(addr[0])

    def connection_closed(self, listener: Listener, addr: Addr, validated: bool) -> None:
        """An admitted connection ended (``validated``: whether it had sent a valid message)."""
        if self._enabled and not validated:
            self._pending.settle(addr[0])

    def pending_connections(self, ip: str) -> int:
        """How many connections from ``ip`` have not sent a valid message yet."""
        return self._pending.pending(ip)

    # --- bans from outside ---

    def restore(self, bans: Iterable[Ban]) -> None:
        """Put back bans kept by the store (not reported again); trusted sources are skipped."""
        if not self._enabled:
            return
        kept = []
        for ban in bans:
            if ban.kind == "source" and self._trust_of(ban.key)[1]:
                logger.warning("not restoring the ban on trusted source %s", ban.key)
                continue
            kept.append(ban)
        restored = self.bans.restore(kept)
        if restored:
            logger.info("restored %d bans", restored)

    def _source_ban(self, ip: str) -> Ban | None:
        """The active ban on source ``ip``. A ban on a source that is trusted by now (restored
        before the trunks were known, or a trunk added since) is lifted instead: never banned."""
        entry = self._entries.get(ip)
        if entry is None or entry.ban.kind != "source":
            return None
        if self._trust_of(ip)[1]:
            logger.warning("lifting the ban on %s: it is a trusted source", ip)
            self.bans.lift(ip, "trusted")
            return None
        return self.bans.check(ip)

    def _ban_source(self, ip: str, reason: str, listener: Listener, transport: str) -> None:
        if self._trust_of(ip)[1]:
            return
        self._floods.forget(ip)
        self._failures.by_source.forget(ip)
        self.bans.ban(ip, "source", reason, self.settings.ban_s)
        logger.warning("banned %s for %s (%s on %s/%s)", ip, self.settings.ban_s, reason, listener, transport)

    def _ban_changed(self, change: BanChange) -> None:
        ban = change.ban
        if change.action == "banned":
            kind = "security.banned" if ban.kind == "source" else "security.user_locked"
            data: dict[str, Any] = {
                "key": ban.key,
                "kind": ban.kind,
                "reason": ban.reason,
                "until": ban.until.isoformat() if ban.until else None,
            }
            if ban.kind == "source":
                data["source"] = ban.key
            else:
                data["user"] = ban.key
                logger.warning("user %s locked until %s (%s)", ban.key, data["until"], ban.reason)
            self._emit(kind, data)
        else:
            if ban.kind == "source":
                self._floods.forget(ban.key)
                self._failures.by_source.forget(ban.key)
            else:
                self._failures.by_user.forget(ban.key)
            self._emit(
                "security.unbanned",
                {"key": ban.key, "kind": ban.kind, "reason": ban.reason, "by": change.by or change.action},
            )
        if self.on_ban_change is not None:
            try:
                self.on_ban_change(change)
            except Exception:
                logger.exception("on_ban_change failed for %s %s", change.action, ban.key)

    # --- reporting ---

    def _report(
        self,
        kind: str,
        ip: str,
        now: float,
        addr: Addr,
        listener: Listener,
        transport: str,
        method: str | None,
        **more: Any,
    ) -> None:
        """Emit ``kind`` for ``ip`` at most once a second, carrying how many were held back."""
        held = self._reports.due((kind, ip), now)
        if held is None:
            return
        data: dict[str, Any] = {"source": _where(addr), "listener": listener, "transport": transport}
        if method is not None:
            data["method"] = method
        data.update(more)
        data["held_back"] = held
        self._emit(kind, data)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        try:
            self._on_event(kind, data)
        except Exception:
            logger.exception("security event handler failed for %s", kind)
