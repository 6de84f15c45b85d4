"""The bindings of registered agents and the REGISTER rules that change them (RFC 3261 §10.3).

Pure bookkeeping plus expiry timers: authentication happens before a request gets here, and the
caller turns the returned :class:`RegisterReply` into a response on the wire.

- Expiry comes from the contact's ``expires`` parameter, else the Expires header, else
  ``default_expires``; above ``max_expires`` it is clamped, below ``min_expires`` the whole request
  fails with 423 and ``Min-Expires`` (no binding changes).
- ``expires=0`` removes that contact; ``Contact: *`` with ``Expires: 0`` removes them all.
- A refresh with the same Call-ID must carry a higher CSeq (an out-of-order REGISTER changes nothing).
- At most ``max_contacts`` per agent: the oldest registered contacts are replaced.
- The source address and transport are stored with the Contact (NAT fix).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from aiosipua.headers import parse_address, stringify_uri
from aiosipua.message import SipRequest

from .binding import Binding
from .settings import AgentEdgeSettings

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
OnBindings = Callable[[str, tuple[Binding, ...]], None]


@dataclass(frozen=True, slots=True)
class RegisterReply:
    """What to answer a REGISTER with."""

    code: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class _Entry:
    binding: Binding
    call_id: str
    cseq: int
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class _BadRequest(ValueError):
    pass


class Registrar:
    """Bindings per extension, kept until they expire or are removed.

    ``on_change(extension, bindings)`` runs after every change of an extension's bindings (register,
    refresh, removal, expiry, reachability); ``on_added``/``on_removed`` tell qualify which contacts
    to watch. Callback errors are logged, never raised into the SIP stack.
    """

    def __init__(
        self,
        settings: AgentEdgeSettings,
        on_change: OnBindings,
        on_added: Callable[[Binding], None],
        on_removed: Callable[[Binding], None],
    ) -> None:
        self.settings = settings
        self._on_change = on_change
        self._on_added = on_added
        self._on_removed = on_removed
        self._entries: dict[str, dict[str, _Entry]] = {}

    # --- views ---

    def bindings(self, extension: str) -> tuple[Binding, ...]:
        entries = self._entries.get(extension, {})
        return tuple(sorted((e.binding for e in entries.values()), key=lambda b: b.registered_at))

    def get(self, extension: str, contact: str) -> Binding | None:
        entry = self._entries.get(extension, {}).get(contact)
        return entry.binding if entry is not None else None

    def all_bindings(self) -> list[Binding]:
        return [e.binding for entries in self._entries.values() for e in entries.values()]

    # --- REGISTER ---

    def register(self, extension: str, request: SipRequest, source: Addr, transport: str) -> RegisterReply:
        """Apply an authenticated REGISTER for ``extension``."""
        try:
            changes = self._read_contacts(request)
        except _BadRequest as exc:
            return RegisterReply(400, "Bad Request", (("Warning", f'399 - "{exc}"'),))
        if changes is None:
            removed = list(self._entries.get(extension, {}).values())
            for entry in removed:
                self._drop(extension, entry)
            if removed:
                self._notify(extension)
            return self._ok(extension)
        too_brief = [e for _, e in changes if 0 < e < self.settings.min_expires]
        if too_brief:
            return RegisterReply(
                423, "Interval Too Brief", (("Min-Expires", str(self.settings.min_expires)),)
            )
        call_id = request.call_id or ""
        cseq = request.cseq.seq if request.cseq is not None else 0
        entries = self._entries.get(extension, {})
        for contact, _ in changes:
            old = entries.get(contact)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                logger.info("out-of-order REGISTER for %s (CSeq %s <= %s)", extension, cseq, old.cseq)
                return RegisterReply(500, "Server Internal Error", (("Retry-After", "1"),))
        user_agent = request.headers.get_first("user-agent")
        changed = False
        now = time.time()
        for contact, expires in changes:
            old = self._entries.get(extension, {}).get(contact)
            if expires == 0:
                if old is not None:
                    self._drop(extension, old)
                    changed = True
                continue
            expires = min(expires, self.settings.max_expires)
            if old is not None:
                old.binding = replace(
                    old.binding,
                    source=source,
                    transport=transport,
                    expires_at=now + expires,
                    user_agent=user_agent,
                )
                old.call_id, old.cseq = call_id, cseq
                self._arm(extension, old, expires)
            else:
                binding = Binding(
                    extension=extension,
                    contact=contact,
                    source=source,
                    transport=transport,
                    expires_at=now + expires,
                    registered_at=now,
                    user_agent=user_agent,
                    reachable=True,
                    rtt_ms=None,
                )
                entry = _Entry(binding, call_id, cseq)
                self._entries.setdefault(extension, {})[contact] = entry
                self._arm(extension, entry, expires)
                self._evict_oldest(extension, keep=contact)
                self._added(binding)
            changed = True
        if changed:
            self._notify(extension)
        return self._ok(extension)

    def _read_contacts(self, request: SipRequest) -> list[tuple[str, int]] | None:
        """(contact URI, requested expiry) pairs in request order; None for ``Contact: *`` (remove all)."""
        raw_contacts = [c.strip() for c in request.headers.get("contact") if c.strip()]
        header_expires = self._expires_value(request.headers.get_first("expires"), "Expires header")
        if "*" in raw_contacts:
            if len(raw_contacts) != 1 or header_expires != 0:
                raise _BadRequest("Contact * needs Expires: 0 and no other contact")
            return None
        changes: list[tuple[str, int]] = []
        for raw in raw_contacts:
            address = parse_address(raw)
            if not address.uri.host or address.uri.scheme.lower() not in ("sip", "sips"):
                raise _BadRequest(f"unusable Contact {raw[:80]!r}")
            if "<" not in raw:  # addr-spec form: its ;params belong to the header (RFC 3261 §20.10)
                address.params, address.uri.params = address.uri.params, {}
            param = address.params.get("expires")
            expires = self._expires_value(param, "Contact expires")
            if expires is None:
                expires = header_expires if header_expires is not None else self.settings.default_expires
            changes.append((stringify_uri(address.uri), expires))
        return changes

    @staticmethod
    def _expires_value(text: str | None, where: str) -> int | None:
        if text is None:
            return None
        text = text.strip()
        if not text.isdigit():
            raise _BadRequest(f"bad {where} {text[:20]!r}")
        return min(int(text), 2**31 - 1)

    def _ok(self, extension: str) -> RegisterReply:
        now = time.time()
        headers = tuple(
            ("Contact", f"<{b.contact}>;expires={max(0, round(b.expires_at - now))}")
            for b in self.bindings(extension)
        )
        return RegisterReply(200, "OK", headers)

    # --- changes ---

    def restore(self, binding: Binding) -> bool:
        """Put back a binding saved before a restart; False when it has expired or is already known.

        It starts unreachable: only an answer to the qualify OPTIONS (sent at once) proves the phone
        is still there, so no call is offered to a device that went away while we were down. The
        phone's next REGISTER refreshes it like any other binding.
        """
        remaining = binding.expires_at - time.time()
        if remaining <= 0 or self.get(binding.extension, binding.contact) is not None:
            return False
        entry = _Entry(replace(binding, reachable=False, rtt_ms=None), call_id="", cseq=0)
        self._entries.setdefault(binding.extension, {})[binding.contact] = entry
        self._arm(binding.extension, entry, max(1, round(remaining)))
        self._evict_oldest(binding.extension, keep=binding.contact)
        self._added(entry.binding)
        self._notify(binding.extension)
        return True

    def set_reachability(self, extension: str, contact: str, reachable: bool, rtt_ms: float | None) -> None:
        """Record a qualify result; tells ``on_change`` when reachability (or the first RTT) changed."""
        entry = self._entries.get(extension, {}).get(contact)
        if entry is None:
            return
        old = entry.binding
        entry.binding = replace(old, reachable=reachable, rtt_ms=rtt_ms if rtt_ms is not None else old.rtt_ms)
        if old.reachable != reachable or (old.rtt_ms is None and rtt_ms is not None):
            self._notify(extension)

    def _arm(self, extension: str, entry: _Entry, expires: int) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        entry.timer = asyncio.get_running_loop().call_later(
            expires, self._expire, extension, entry.binding.contact
        )

    def _expire(self, extension: str, contact: str) -> None:
        entry = self._entries.get(extension, {}).get(contact)
        if entry is None:
            return
        logger.info("binding of %s expired: %s", extension, contact)
        self._drop(extension, entry)
        self._notify(extension)

    def _evict_oldest(self, extension: str, keep: str) -> None:
        entries = self._entries.get(extension, {})
        while len(entries) > self.settings.max_contacts:
            oldest = min((e for c, e in entries.items() if c != keep), key=lambda e: e.binding.registered_at)
            logger.info("max_contacts reached for %s: replacing %s", extension, oldest.binding.contact)
            self._drop(extension, oldest)

    def _drop(self, extension: str, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entries = self._entries.get(extension)
        if entries is None or entries.get(entry.binding.contact) is not entry:
            return
        del entries[entry.binding.contact]
        if not entries:
            del self._entries[extension]
        try:
            self._on_removed(entry.binding)
        except Exception:
            logger.exception("on_removed handler failed for %s", extension)

    def _added(self, binding: Binding) -> None:
        try:
            self._on_added(binding)
        except Exception:
            logger.exception("on_added handler failed for %s", binding.extension)

    def _notify(self, extension: str) -> None:
        try:
            self._on_change(extension, self.bindings(extension))
        except Exception:
            logger.exception("on_bindings handler failed for %s", extension)

    def close(self) -> None:
        """Cancel every expiry timer (the edge is stopping); bindings are not reported as removed."""
        for entries in self._entries.values():
            for entry in entries.values():
                if entry.timer is not None:
                    entry.timer.cancel()
                    entry.timer = None
        self._entries.clear()
