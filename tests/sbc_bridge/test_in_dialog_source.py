"""In-dialog requests are taken only from the trunk that placed the call (A23)."""

from __future__ import annotations

import asyncio

from tests.sbc_bridge.edge_support import DID, Edge, trunk
from tests.support.rtp_probe import make_sdp_offer
from tests.support.sip_uac import SipUac

OFFER = make_sdp_offer(40000)


async def test_another_trunk_cannot_end_or_reinvite_a_call_with_its_call_id_and_tags(make_edge) -> None:
    edge: Edge = await make_edge(
        trunks=[trunk(name="carrier-a", sources=("127.0.0.1/32",)),
                trunk(name="carrier-b", sources=("127.0.0.2/32",))]
    )  # fmt: skip
    async with await SipUac.open("127.0.0.1") as caller, await SipUac.open("127.0.0.2") as other:
        call = await caller.invite(f"sip:{DID}@127.0.0.1:{edge.udp[1]}", OFFER, remote=edge.udp)
        assert call.status == 200
        # carrier B replays the dialog's exact identifiers (a sniffed Call-ID, From and To tags)
        for method, body in (("BYE", None), ("INVITE", OFFER)):
            forged = call._request(method, next(call._cseq), call._branch(), body)
            other.send_raw(forged, edge.udp)
            answer = await other.next_unmatched(3.0)
            assert answer.status == 481, answer
        forged_events = [data for kind, data in edge.security if kind == "security.foreign_in_dialog"]
        assert len(forged_events) == 2 and forged_events[0]["trunk"] == "carrier-b"
        await asyncio.sleep(0.3)
        assert edge.ends == {} and edge.reoffers == []  # the call is untouched
        assert await call.bye() == 200  # its own trunk still ends it
        await edge.wait_ended()
        assert edge.ends[call.call_id].by == "remote_bye"
