"""What the edge keeps once its calls are over: nothing past 64*T1, and nothing only the cyclic GC frees.

The collector is off while the calls run, so an object that is gone at the end was freed by reference
counting. Under load a full cyclic collection is rare, and every ended call that needs one piles up
until it runs (bench/leak_check.py measured it).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from helpline.sbc_bridge import CallEnd, EdgePolicy, InboundCall, SipSettings, TrunkBridge
from tests.sbc_bridge.edge_support import DID_NATIONAL, PCMU_ANSWER, SCENARIOS, trunk
from tests.support.sipp import run_sipp

T1 = 0.05
CALLS = 20


async def answer(call: InboundCall) -> None:
    call.answer(PCMU_ANSWER)


async def answer_then_hang_up(call: InboundCall) -> None:
    call.answer(PCMU_ANSWER)
    await asyncio.sleep(0.2)
    call.hangup()


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize(
    ("scenario", "transport", "behaviour", "ended_by"),
    [
        ("uac_basic.xml", "u1", answer, "remote_bye"),
        ("uac_server_bye.xml", "u1", answer_then_hang_up, "local"),
        ("uac_server_bye.xml", "t1", answer_then_hang_up, "local"),
    ],
)
async def test_ended_calls_leave_nothing_behind(
    scenario: str, transport: str, behaviour: Callable[[InboundCall], Awaitable[None]], ended_by: str
) -> None:
    alive: list[weakref.ref[Any]] = []
    ends: list[str] = []
    all_ended = asyncio.Event()

    async def on_call(call: InboundCall) -> None:
        leg: Any = call._leg
        alive.extend(weakref.ref(obj) for obj in (call, leg, leg.call))

        def ended(end: CallEnd) -> None:  # holds the list, not the call
            ends.append(end.by)
            if len(ends) == CALLS:
                all_ended.set()

        call.on_ended = ended
        await behaviour(call)

    settings = SipSettings(host="127.0.0.1", port=0, timer_t1=T1)
    bridge = TrunkBridge(settings, [trunk()], EdgePolicy(), on_call, lambda kind, data: None)
    await bridge.start()
    try:
        name = "udp" if transport == "u1" else "tcp"
        uas = bridge._uas[name]
        target = bridge.local_addresses[name]
        result = await run_sipp(
            SCENARIOS / scenario,
            target,
            transport=transport,
            service=DID_NATIONAL,
            calls=CALLS,
            keys={"caller": "2125550100"},
            extra=["-r", "20", "-l", str(CALLS)],
        )
        assert result.returncode == 0, result.explain()
        assert result.stat("SuccessfulCall(C)") == CALLS
        async with asyncio.timeout(10):
            await all_ended.wait()
        assert set(ends) == {ended_by}

        # An ACKed 2xx is not kept for the rest of its transaction's life (RFC 6026 absorbs silently).
        replies = uas.edge_transport.replies._entries
        assert [key for key, entry in replies.items() if key[1] == "INVITE" and entry.response] == []
        assert uas._calls == {}
        assert uas.transactions.server_transactions == {}
        assert uas.transactions.client_transactions == {}
        assert uas.requests._pending == {}
        assert bridge._tasks == set()

        await asyncio.sleep(64 * T1 + 0.5)
        options = await run_sipp(SCENARIOS / "uac_options.xml", target, transport=transport)
        assert options.returncode == 0, options.explain()  # it also triggers the lazy pruning
        assert len(replies) <= 1  # the OPTIONS just answered
        still_alive = Counter(type(obj).__name__ for ref in alive if (obj := ref()) is not None)
        assert not still_alive, f"kept alive after the calls ended: {dict(still_alive)}"
    finally:
        await bridge.stop()
