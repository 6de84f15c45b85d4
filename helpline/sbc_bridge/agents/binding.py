"""A registered contact of an agent, as the rest of Helpline sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Binding:
    """One Contact an agent registered, with where it really came from.

    ``contact`` is the URI the agent advertised; ``source`` is the address its REGISTER came from
    (over ``transport``). Requests to the agent go to ``source``: behind NAT the advertised contact
    is often unreachable, the flow the REGISTER used is not. ``expires_at`` and ``registered_at``
    are ``time.time()`` values; ``registered_at`` is the first registration of this contact (a
    refresh keeps it), which is what "oldest" means when ``max_contacts`` forces a replacement.
    ``reachable``/``rtt_ms`` come from OPTIONS qualify.
    """

    extension: str
    contact: str
    source: tuple[str, int]
    transport: str
    expires_at: float
    registered_at: float
    user_agent: str | None
    reachable: bool
    rtt_ms: float | None
