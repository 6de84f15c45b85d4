"""Connections that have not yet sent a valid SIP message, counted per source (A13).

An idle TCP or TLS connection costs us a socket, buffers and a task; ~60 of them took pjproject down
(AST-2016-005). A source may hold ``unauthenticated_per_source`` such connections at once; the rest
are refused at accept. A connection leaves the count when its first valid message arrives or when it
closes; the transport closes the ones that stay silent past ``first_message_timeout_s``.
"""

from __future__ import annotations


class PendingConnections:
    """Per-source counters of not-yet-validated connections.

    A key lives only while it has pending connections, so the table is bounded by the open sockets
    (themselves bounded by this cap and the first-message timeout).
    """

    def __init__(self, per_source: int) -> None:
        self.per_source = per_source
        self._pending: dict[str, int] = {}

    def admit(self, ip: str, *, limited: bool) -> bool:
        """Count a new connection from ``ip``; False (not counted) when a limited source is full."""
        count = self._pending.get(ip, 0)
        if limited and count >= self.per_source:
            return False
        self._pending[ip] = count + 1
        return True

    def settle(self, ip: str) -> None:
        """One of ``ip``'s pending connections validated or closed."""
        count = self._pending.get(ip, 0) - 1
        if count > 0:
            self._pending[ip] = count
        else:
            self._pending.pop(ip, None)

    def pending(self, ip: str) -> int:
        return self._pending.get(ip, 0)

    def __len__(self) -> int:
        return len(self._pending)
