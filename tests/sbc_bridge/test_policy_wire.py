"""Edge policy on the wire: strangers, unknown DIDs, blocked countries, hops, identity, digest."""

from __future__ import annotations

from helpline.sbc_bridge import DigestCredentials, SipSettings
from tests.sbc_bridge.edge_support import DID, DID_NATIONAL, SCENARIOS, Edge, trunk
from tests.support.sipp import run_sipp

CALLER = {"caller": "2125550100", "maxfwd": "70"}


async def test_unknown_did_gets_404_and_is_reported(make_edge) -> None:
    edge: Edge = await make_edge()
    result = await run_sipp(SCENARIOS / "uac_refused_404.xml", edge.udp, service="2125550000", keys=CALLER)
    assert result.returncode == 0, result.explain()
    assert edge.calls == []
    assert edge.security_types() == ["security.unknown_did"]
    (refused,) = edge.refused
    assert (refused.sip_code, refused.did, refused.trunk) == (404, "+12125550000", "carrier")


async def test_blocked_country_caller_gets_403_with_reason(make_edge) -> None:
    edge: Edge = await make_edge()
    keys = {"caller": "011795123456789", "maxfwd": "70"}  # +7 via the international prefix
    result = await run_sipp(SCENARIOS / "uac_refused_403.xml", edge.udp, service=DID_NATIONAL, keys=keys)
    assert result.returncode == 0, result.explain()
    assert edge.calls == []
    kind, data = edge.security[0]
    assert kind == "security.blocked_country" and "+7" in data["reason"]
    assert edge.refused[0].caller == "+795123456789" and edge.refused[0].sip_code == 403


async def test_non_trunk_source_is_dropped_silently(make_edge) -> None:
    edge: Edge = await make_edge(trunks=[trunk(sources=("127.0.0.2/32",))])
    result = await run_sipp(SCENARIOS / "uac_unanswered.xml", edge.udp, service="9999", keys=CALLER)
    assert result.returncode == 0, result.explain()
    assert edge.calls == []
    kinds = set(edge.security_types())
    assert kinds == {"security.non_trunk_source"}
    # the DID was never looked at: no number in the refused record
    assert edge.refused and all(r.did is None and r.sip_code is None for r in edge.refused)
    # the same scenario from the trunk's address is answered, so it fails: the check above can fail
    answered = await run_sipp(
        SCENARIOS / "uac_unanswered.xml", edge.udp, local_ip="127.0.0.2", service="9999", keys=CALLER
    )
    assert answered.returncode != 0


async def test_non_trunk_source_gets_403_in_reject_mode(make_edge) -> None:
    settings = SipSettings(host="127.0.0.1", port=0, non_trunk_policy="reject")
    edge: Edge = await make_edge(settings=settings, trunks=[trunk(sources=("127.0.0.2/32",))])
    result = await run_sipp(SCENARIOS / "uac_refused_403.xml", edge.udp, service="9999", keys=CALLER)
    assert result.returncode == 0, result.explain()
    assert edge.security_types()[0] == "security.non_trunk_source"
    assert edge.refused[0].sip_code == 403 and edge.refused[0].did is None


async def test_trunk_matched_by_second_source_address(make_edge) -> None:
    edge: Edge = await make_edge(trunks=[trunk(sources=("10.0.0.0/8", "127.0.0.2"))])
    result = await run_sipp(
        SCENARIOS / "uac_basic.xml", edge.udp, local_ip="127.0.0.2", service=DID_NATIONAL, keys=CALLER
    )
    assert result.returncode == 0, result.explain()
    assert edge.calls[0].source[0] == "127.0.0.2"


async def test_max_forwards_zero_gets_483(make_edge) -> None:
    edge: Edge = await make_edge()
    keys = {"caller": "2125550100", "maxfwd": "0"}
    result = await run_sipp(SCENARIOS / "uac_refused_483.xml", edge.udp, service=DID_NATIONAL, keys=keys)
    assert result.returncode == 0, result.explain()
    assert edge.security_types() == ["security.max_forwards"]
    assert edge.refused[0].sip_code == 483 and edge.calls == []


async def test_pai_and_verstat_kept_from_trusted_and_dropped_and_reported_from_untrusted(make_edge) -> None:
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
    assert trusted.trunk == "trusted" and trusted.verstat == "TN-Validation-Passed"
    assert trusted.pai is not None and "+12125550100" in trusted.pai
    assert untrusted.trunk == "untrusted" and untrusted.pai is None and untrusted.verstat is None
    # what the untrusted trunk claimed is reported once, naming the call, the source and the headers
    stripped = [data for kind, data in edge.security if kind == "security.identity_stripped"]
    assert len(stripped) == 1, edge.security
    (event,) = stripped
    assert event["sip_call_id"] == untrusted.sip_call_id
    assert event["source"].startswith("127.0.0.2") and event["trunk"] == "untrusted"
    assert set(event["stripped"]) == {"P-Asserted-Identity", "verstat"}


async def test_digest_trunk_challenges_then_accepts(make_edge) -> None:
    credentials = DigestCredentials(username="trunkuser", password="s3cret", realm="helpline.test")
    edge: Edge = await make_edge(trunks=[trunk(credentials=credentials)])
    result = await run_sipp(SCENARIOS / "uac_auth.xml", edge.udp, service=DID_NATIONAL, keys=CALLER)
    assert result.returncode == 0, result.explain()
    await edge.wait_ended()
    assert len(edge.calls) == 1 and edge.calls[0].did == DID
    assert edge.security == []


async def test_digest_trunk_refuses_wrong_password(make_edge) -> None:
    credentials = DigestCredentials(username="trunkuser", password="other", realm="helpline.test")
    edge: Edge = await make_edge(trunks=[trunk(credentials=credentials)])
    result = await run_sipp(SCENARIOS / "uac_auth.xml", edge.udp, service=DID_NATIONAL, keys=CALLER)
    assert result.returncode != 0  # the second INVITE gets 403, not the 200 the scenario wants
    assert edge.calls == []
    assert edge.security_types() == ["security.auth_failed"]
    assert edge.refused[0].sip_code == 403
