"""Toll-fraud policy for calls and transfers that would leave Helpline (attacks A18, A19).

A stolen agent credential or a compromised phone is worth money only if it can reach numbers that
cost money: premium and satellite ranges, far-away countries, Caribbean "one ring" numbers that look
domestic. The policy answers one question before anything is dialled or referred: may this
destination be reached from here, now, by this agent? It is pure bookkeeping (no sockets, no store),
so the edge, the IVR's transfer and the queue's agent transfers all ask the same object and a refusal
reads the same everywhere.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..numbers import has_prefix, is_e164

FraudRule = Literal[
    "not_e164", "blocked_country", "high_cost", "not_allowed", "concurrency", "rate", "number_transfer"
]

# Destinations charged far above ordinary international rates, refused even when a shorter allow
# prefix covers them ("+8" does not open "+881"); an operator who really needs one lists it (or a
# longer prefix inside it) in ``allow_prefixes``. ITU global services, then NANP premium codes and
# the NANP countries outside the US and Canada, which are international calls behind a "+1".
HIGH_COST_PREFIXES: tuple[str, ...] = (
    "+800",
    "+808",
    "+870",
    "+878",
    "+881",
    "+882",
    "+883",
    "+888",
    "+979",
    "+991",
    "+1900",
    "+1976",
    "+1242",
    "+1246",
    "+1264",
    "+1268",
    "+1284",
    "+1345",
    "+1441",
    "+1473",
    "+1649",
    "+1658",
    "+1664",
    "+1721",
    "+1758",
    "+1767",
    "+1784",
    "+1809",
    "+1829",
    "+1849",
    "+1868",
    "+1869",
    "+1876",
)

_PREFIX = re.compile(r"^\+[1-9][0-9]{0,14}$")
_VISUAL_SEPARATORS = re.compile(r"[\s().\-/]")
_DIALLED_DIGITS = re.compile(r"^\+?[0-9]+$")

RATE_WINDOW_S = 60.0


def _check_prefixes(field: str, value: tuple[str, ...]) -> tuple[str, ...]:
    for prefix in value:
        if not _PREFIX.match(prefix):
            raise ValueError(f"{field} prefix {prefix!r} must look like '+1' or '+44'")
    return tuple(dict.fromkeys(value))


class OutboundSettings(BaseModel):
    """The ``[security.outbound]`` section: where calls placed or referred by Helpline may go.

    ``allow_prefixes`` is the destination allowlist (E.164 prefixes; default: the NANP, minus the
    high-cost ranges above unless listed). ``blocked_prefixes`` are refused even inside the
    allowlist; the edge's ``blocked_countries`` are added by :class:`OutboundPolicy`.
    ``agent_calls_per_minute`` and ``agent_concurrent`` bound what one agent credential can place
    (0 = none at all). ``refer_to_numbers`` lets transfers (IVR ``transfer`` node, agent REFER)
    reach phone numbers at all; off, only internal SIP targets (agents, queues) are allowed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_prefixes: tuple[str, ...] = ("+1",)
    blocked_prefixes: tuple[str, ...] = ()
    agent_calls_per_minute: int = Field(6, ge=0)
    agent_concurrent: int = Field(2, ge=0)
    refer_to_numbers: bool = False

    @field_validator("allow_prefixes")
    @classmethod
    def _allow_look_like_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_prefixes("allow_prefixes", value)

    @field_validator("blocked_prefixes")
    @classmethod
    def _blocked_look_like_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_prefixes("blocked_prefixes", value)


@dataclass(frozen=True, slots=True)
class FraudVerdict:
    """Allowed, or refused with the rule that refused it and a reason for logs and events.

    ``number`` is the phone number the verdict was about, as dialled (E.164 unless the rule is
    ``not_e164``; None for an internal target), so callers can put it in their event without parsing
    the target again.
    """

    allowed: bool
    reason: str = ""
    rule: FraudRule | None = None
    number: str | None = None


def target_number(target: str) -> str | None:
    """The phone number a transfer target or a dialled Request-URI designates, or None for a name.

    Numbers: ``tel:...``; a SIP URI with ``user=phone`` or whose user part is (``+``) digits,
    whatever host it names (a transfer leaves through the carrier, which routes digits as a number,
    short codes included); bare digits. The returned text is the dialled string without separators
    (not necessarily E.164: the caller checks). Internal targets have a name: ``sip:queue-billing@``.
    """
    text = target.strip()
    if "<" in text:  # a name-addr, as in a Refer-To header: the URI between the brackets
        text = text.split("<", 1)[1].split(">", 1)[0].strip()
    text = unquote(text)  # "%2B881..." is "+881..." to whoever routes it
    lowered = text.lower()
    if lowered.startswith("tel:"):
        return _VISUAL_SEPARATORS.sub("", text[4:].split(";", 1)[0])
    if lowered.startswith(("sip:", "sips:")):
        rest = text.split(":", 1)[1]
        if "@" not in rest:
            # "sip:host[:port]" names no user; "sip:+15551234" (no host) is still a number
            if not rest.startswith("+"):
                return None
            user, params = rest, rest.lower()
        else:
            user, host_part = rest.rsplit("@", 1)
            params = host_part.lower()
        # parameters and a password (user:password@host) are not part of the dialled number
        user = _VISUAL_SEPARATORS.sub("", user.split(";", 1)[0].split(":", 1)[0])
        if "user=phone" in params:
            return user
        if _DIALLED_DIGITS.match(user):
            return user
        return None
    bare = _VISUAL_SEPARATORS.sub("", text)
    return bare if _DIALLED_DIGITS.match(bare) else None


class OutboundPolicy:
    """Decides outbound destinations and keeps the per-agent rate and concurrency books.

    One per process (``EdgeGuard.outbound``). The tables are keyed by authenticated agent extensions
    only, so they are bounded by the number of agents; an agent's entry disappears when it holds
    no recent attempt and no live call.
    """

    def __init__(
        self,
        settings: OutboundSettings,
        blocked_countries: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._blocked = tuple(dict.fromkeys((*blocked_countries, *settings.blocked_prefixes)))
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}
        self._active: dict[str, int] = {}

    # ---- destinations -----------------------------------------------------------------------------
    def check_destination(self, number: str) -> FraudVerdict:
        """Whether an E.164 ``number`` may be reached at all: blocked, high-cost, allowlisted."""
        if not is_e164(number):
            return FraudVerdict(False, f"{number!r} is not an E.164 number", "not_e164", number)
        if prefix := has_prefix(number, self._blocked):
            return FraudVerdict(False, f"{number} is in blocked country {prefix}", "blocked_country", number)
        allowed = [p for p in self.settings.allow_prefixes if number.startswith(p)]
        if not allowed:
            return FraudVerdict(
                False, f"{number} is outside the destination allowlist", "not_allowed", number
            )
        costly = has_prefix(number, HIGH_COST_PREFIXES)
        # a high-cost range is open only when an allow prefix is at least as specific as it
        if costly is not None and not any(p.startswith(costly) for p in allowed):
            return FraudVerdict(
                False, f"{number} is in high-cost range {costly} (not listed)", "high_cost", number
            )
        return FraudVerdict(True, "allowed", None, number)

    # ---- agents' own calls ------------------------------------------------------------------------
    def check_agent_call(self, agent: str, destination: str) -> FraudVerdict:
        """May ``agent`` place a call to ``destination`` (E.164, already normalised by the caller)?

        An allowed verdict counts as an attempt against the agent's rate, whether or not the call
        then connects: a burst of short calls is the pattern being limited.
        """
        verdict = self.check_destination(destination)
        if not verdict.allowed:
            return verdict
        limit_concurrent = self.settings.agent_concurrent
        if self._active.get(agent, 0) >= limit_concurrent:
            return FraudVerdict(
                False,
                f"agent {agent} already has {limit_concurrent} outbound calls",
                "concurrency",
                destination,
            )
        now = self._clock()
        attempts = self._recent(agent, now)
        limit_rate = self.settings.agent_calls_per_minute
        if len(attempts) >= limit_rate:
            return FraudVerdict(
                False, f"agent {agent} is over {limit_rate} calls per minute", "rate", destination
            )
        attempts.append(now)
        self._attempts[agent] = attempts
        return verdict

    def check_agent_dial(self, agent: str, uri: str) -> FraudVerdict | None:
        """:meth:`check_agent_call` for the Request-URI an agent's phone sent, or None when the URI
        names no phone number (``sip:queue-billing@...``: not a toll destination).

        A number not in E.164 is refused as such: agents dial ``+`` numbers (a dial plan for
        national forms belongs to the outbound calling that is not built yet).
        """
        number = target_number(uri)
        return None if number is None else self.check_agent_call(agent, number)

    def call_started(self, agent: str) -> None:
        """An allowed agent call was set up: it holds one of the agent's concurrent slots."""
        self._active[agent] = self._active.get(agent, 0) + 1

    def call_ended(self, agent: str) -> None:
        """The agent's call ended (each ``call_started`` gets exactly one of these)."""
        left = self._active.get(agent, 0) - 1
        if left > 0:
            self._active[agent] = left
        else:
            self._active.pop(agent, None)

    def active_calls(self, agent: str) -> int:
        """How many outbound calls ``agent`` holds now."""
        return self._active.get(agent, 0)

    def _recent(self, agent: str, now: float) -> deque[float]:
        """The agent's attempts within the last minute (expired ones dropped, an empty book freed)."""
        attempts = self._attempts.pop(agent, None) or deque()
        while attempts and now - attempts[0] >= RATE_WINDOW_S:
            attempts.popleft()
        if attempts:
            self._attempts[agent] = attempts
        return attempts

    # ---- transfers --------------------------------------------------------------------------------
    def allow_transfer(self, target: str) -> FraudVerdict:
        """May a transfer (IVR node, agent REFER) go to ``target``?

        An internal SIP target (agent, queue, ``sip:name@host``) is fine. A phone number only when
        ``refer_to_numbers`` is on and the number passes :meth:`check_destination`.
        """
        dialled = target_number(target)
        if dialled is None:
            return FraudVerdict(True, "internal target")
        if not self.settings.refer_to_numbers:
            return FraudVerdict(
                False,
                f"transfer to number {dialled} refused: refer_to_numbers is off",
                "number_transfer",
                dialled,
            )
        return self.check_destination(dialled)
