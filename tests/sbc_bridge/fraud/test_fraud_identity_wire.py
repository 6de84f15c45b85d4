"""The trunk edge over the wire: identity assertions from outside the trust domain are reported."""

from __future__ import annotations

from tests.sbc_bridge.edge_support import DID_NATIONAL, SCENARIOS, Edge, trunk
from tests.support.sipp import run_sipp

CALLER = {"caller": "2125550100", "maxfwd": "70"}


async def test_pai_and_verstat_from_an_untrusted_trunk_raise_identity_stripped(make_edge) -> None:
    edge: Edge = await make_edge(
        trunks=[
            trunk(name="trusted", sources=("127.0.0.1",)),
            trunk(name="untrusted", sources=("127.0.0.2",), trusted=False),
        ]
    )
    for ip in ("127.0.0.1", "127.0.0.2"):
        result = await run_sipp(
            SCENARIOS / "uac_pai.xml", edge.udp, local_ip=ip, service=DID_NATIONAL, keys=CALLER
        )
        assert result.returncode == 0, result.explain()
    trusted, untrusted = edge.calls
    assert trusted.verstat == "TN-Validation-Passed" and trusted.pai is not None
    assert untrusted.verstat is None and untrusted.pai is None
    stripped = [data for kind, data in edge.security if kind == "security.identity_stripped"]
    assert len(stripped) == 1, edge.security  # the untrusted call only
    (event,) = stripped
    assert event["sip_call_id"] == untrusted.sip_call_id
    assert event["source"].startswith("127.0.0.2") and event["trunk"] == "untrusted"
    assert set(event["stripped"]) == {"P-Asserted-Identity", "verstat"}
