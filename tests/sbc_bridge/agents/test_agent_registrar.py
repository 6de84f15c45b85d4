"""The agent registrar over the wire: digest (MD5 and SHA-256), nonces, expiry rules, bindings.

The peer is a hand-written UDP agent (raw_agent) that computes digests itself, so it can replay,
go stale, forge nonces and lie about passwords.
"""

from __future__ import annotations

import asyncio
import re
import time

from tests.sbc_bridge.agents.agent_support import PASSWORDS
from tests.sbc_bridge.agents.raw_agent import RawAgent, digest_answer, digest_params


async def _agent(h) -> RawAgent:
    return await RawAgent.open(h.udp)


def _uri(h) -> str:
    return f"sip:{h.udp[0]}:{h.udp[1]}"


def _contact_expires(response) -> dict[str, int]:
    result = {}
    for value in response.all("contact"):
        m = re.match(r"<([^>]+)>;expires=(\d+)", value)
        assert m, value
        result[m.group(1)] = int(m.group(2))
    return result


async def test_challenge_offers_sha256_then_md5_with_qop_auth(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent = await _agent(h)
    try:
        data, branch = agent.register_bytes("1001")
        response = await agent.request(data, branch)
        assert response.status == 401 and response.reason == "Unauthorized"
        challenges = [digest_params(v) for v in response.all("www-authenticate")]
        assert [c["algorithm"] for c in challenges] == ["SHA-256", "MD5"]
        assert all(c["qop"] == "auth" and c["realm"] == "helpline" for c in challenges)
        assert "stale" not in challenges[0]
        assert h.edge.bindings("1001") == ()
        assert h.security == []  # a first REGISTER without credentials is no failure
    finally:
        agent.close()


async def test_md5_and_sha256_digests_both_register(make_agent_edge) -> None:
    h = await make_agent_edge()
    md5_agent, sha_agent = await _agent(h), await _agent(h)
    try:
        ok = await md5_agent.register("1001", PASSWORDS["1001"], algorithm="MD5", expires=120)
        assert ok.status == 200, ok.start_line
        ok = await sha_agent.register("1002", PASSWORDS["1002"], algorithm="SHA-256", expires=120)
        assert ok.status == 200, ok.start_line
        assert _contact_expires(ok) == {f"sip:1002@127.0.0.1:{sha_agent.port}": 120}
        (b1,) = await h.wait_bindings("1001", lambda b: len(b) == 1, 3)
        (b2,) = await h.wait_bindings("1002", lambda b: len(b) == 1, 3)
        assert b1.source == ("127.0.0.1", md5_agent.port) and b1.transport == "udp"
        assert b2.contact == f"sip:1002@127.0.0.1:{sha_agent.port}"
        assert 110 < b2.expires_at - b2.registered_at <= 120
    finally:
        md5_agent.close()
        sha_agent.close()


async def test_unknown_user_and_wrong_password_look_the_same(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent = await _agent(h)
    try:
        wrong = await agent.register("1001", "not-the-password")
        unknown = await agent.register("9999", "whatever")
        assert (wrong.status, wrong.reason) == (unknown.status, unknown.reason) == (401, "Unauthorized")
        assert [k for k, _ in wrong.headers] == [k for k, _ in unknown.headers]
        for response in (wrong, unknown):
            algorithms = [digest_params(v)["algorithm"] for v in response.all("www-authenticate")]
            assert algorithms == ["SHA-256", "MD5"]
        events = h.security_of("security.agent_auth_failed")
        assert [(e["extension"], e["reason"]) for e in events] == [
            ("1001", "wrong password"),
            ("9999", "unknown extension"),
        ]
        assert events[0]["source"] == f"127.0.0.1:{agent.port}" and events[0]["transport"] == "udp"
        assert h.edge.bindings("1001") == () and h.edge.bindings("9999") == ()
    finally:
        agent.close()


async def test_stale_nonce_gets_stale_true(make_agent_edge) -> None:
    h = await make_agent_edge(nonce_lifetime_s=1.0)
    agent = await _agent(h)
    try:
        data, branch = agent.register_bytes("1001")
        challenge = agent.challenge(await agent.request(data, branch), "MD5")
        await asyncio.sleep(2.2)
        auth = digest_answer(
            challenge, method="REGISTER", uri=_uri(h), username="1001", password=PASSWORDS["1001"]
        )
        data, branch = agent.register_bytes("1001", authorization=auth)
        response = await agent.request(data, branch)
        assert response.status == 401
        assert all(digest_params(v).get("stale") == "true" for v in response.all("www-authenticate"))
        assert h.edge.bindings("1001") == ()
        fresh = agent.challenge(response, "SHA-256")
        auth = digest_answer(
            fresh, method="REGISTER", uri=_uri(h), username="1001", password=PASSWORDS["1001"]
        )
        data, branch = agent.register_bytes("1001", authorization=auth)
        assert (await agent.request(data, branch)).status == 200
    finally:
        agent.close()


async def test_replayed_nonce_count_and_foreign_nonce_are_refused(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent = await _agent(h)
    try:
        data, branch = agent.register_bytes("1001")
        challenge = agent.challenge(await agent.request(data, branch), "SHA-256")

        def authorization(nc: int, nonce: str | None = None) -> str:
            values = dict(challenge, nonce=nonce) if nonce else challenge
            return digest_answer(
                values, method="REGISTER", uri=_uri(h), username="1001", password=PASSWORDS["1001"], nc=nc
            )

        data, branch = agent.register_bytes("1001", authorization=authorization(1))
        assert (await agent.request(data, branch)).status == 200
        # the captured request again (a new transaction, same nonce and nc): refused
        data, branch = agent.register_bytes("1001", authorization=authorization(1))
        replay = await agent.request(data, branch)
        assert replay.status == 401
        # a higher nonce-count on the same nonce is fine
        data, branch = agent.register_bytes("1001", authorization=authorization(2))
        assert (await agent.request(data, branch)).status == 200
        # a nonce we never issued (a forged signature): refused
        forged = challenge["nonce"].rsplit(".", 1)[0] + ".0123456789abcdef0123456789abcdef"
        data, branch = agent.register_bytes("1001", authorization=authorization(3, forged))
        assert (await agent.request(data, branch)).status == 401
        reasons = [e["reason"] for e in h.security_of("security.agent_auth_failed")]
        assert reasons == ["replayed nonce count", "nonce not issued by us to this source"]
    finally:
        agent.close()


async def test_expiry_is_clamped_and_too_brief_gets_423(make_agent_edge) -> None:
    h = await make_agent_edge(min_expires=60, max_expires=3600, default_expires=600)
    agent = await _agent(h)
    try:
        brief = await agent.register("1001", PASSWORDS["1001"], expires=30)
        assert (brief.status, brief.reason) == (423, "Interval Too Brief")
        assert brief.header("min-expires") == "60"
        assert h.edge.bindings("1001") == ()
        long = await agent.register("1001", PASSWORDS["1001"], expires=999999)
        assert long.status == 200
        assert list(_contact_expires(long).values()) == [3600]
        default = await agent.register("1001", PASSWORDS["1001"], expires=None)
        assert list(_contact_expires(default).values()) == [600]
        contact = f"<sip:1001@127.0.0.1:{agent.port}>;expires=90"
        param = await agent.register("1001", PASSWORDS["1001"], expires=3000, contacts=[contact])
        assert list(_contact_expires(param).values()) == [90]
        (binding,) = h.edge.bindings("1001")
        assert 85 < binding.expires_at - time.time() <= 90
    finally:
        agent.close()


async def test_unregister_one_contact_and_star(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent = await _agent(h)
    try:
        c1, c2 = f"<sip:1001@127.0.0.1:{agent.port}>", f"<sip:1001@127.0.0.1:{agent.port};line=2>"
        assert (await agent.register("1001", PASSWORDS["1001"], contacts=[c1, c2])).status == 200
        await h.wait_bindings("1001", lambda b: len(b) == 2, 3)
        removed = await agent.register("1001", PASSWORDS["1001"], contacts=[c1], expires=0)
        assert removed.status == 200
        assert list(_contact_expires(removed)) == [f"sip:1001@127.0.0.1:{agent.port};line=2"]
        await h.wait_bindings("1001", lambda b: len(b) == 1, 3)
        star = await agent.register("1001", PASSWORDS["1001"], contacts=["*"], expires=0)
        assert star.status == 200 and star.all("contact") == []
        await h.wait_bindings("1001", lambda b: b == (), 3)
        assert h.binding_events[-1] == ("1001", ())
        bad_star = await agent.register("1001", PASSWORDS["1001"], contacts=["*"], expires=60)
        assert bad_star.status == 400
    finally:
        agent.close()


async def test_max_contacts_replaces_the_oldest(make_agent_edge) -> None:
    h = await make_agent_edge(max_contacts=3)
    agent = await _agent(h)
    try:
        contacts = [f"<sip:1001@127.0.0.1:{agent.port};line={i}>" for i in range(4)]
        for contact in contacts:
            assert (await agent.register("1001", PASSWORDS["1001"], contacts=[contact])).status == 200
        bindings = await h.wait_bindings("1001", lambda b: len(b) == 3 and "line=3" in b[-1].contact, 3)
        assert [b.contact.rsplit("=", 1)[1] for b in bindings] == ["1", "2", "3"]
    finally:
        agent.close()


async def test_binding_expires_and_is_reported(make_agent_edge) -> None:
    h = await make_agent_edge(min_expires=1, default_expires=1)
    agent = await _agent(h)
    try:
        assert (await agent.register("1001", PASSWORDS["1001"], expires=1)).status == 200
        await h.wait_bindings("1001", lambda b: len(b) == 1, 3)
        await h.wait_bindings("1001", lambda b: b == (), 4)
        assert h.binding_events[-1] == ("1001", ())
    finally:
        agent.close()


async def test_register_for_another_aor_is_forbidden(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent = await _agent(h)
    try:
        data, branch = agent.register_bytes("1002")
        challenge = agent.challenge(await agent.request(data, branch), "MD5")
        auth = digest_answer(
            challenge, method="REGISTER", uri=_uri(h), username="1001", password=PASSWORDS["1001"]
        )
        data, branch = agent.register_bytes("1002", authorization=auth)
        assert (await agent.request(data, branch)).status == 403
        assert h.edge.bindings("1002") == () and h.edge.bindings("1001") == ()
    finally:
        agent.close()


async def test_malformed_register_gets_400_and_a_security_event(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent = await _agent(h)
    try:
        data, branch = agent.register_bytes("1001")
        broken = data.replace(b"CSeq: 1 REGISTER", b"CSeq: one REGISTER")
        response = await agent.request(broken, branch)
        assert response.status == 400 and "CSeq" in (response.header("warning") or "")
        (event,) = h.security_of("security.malformed")
        assert event["header"] == "CSeq" and event["source"] == f"127.0.0.1:{agent.port}"
        agent.send(b"\x00\x01garbage that is no SIP\r\n\r\n")
        garbage = await h.wait_security_count("security.malformed", 2, 2)
        assert garbage["source"] == f"127.0.0.1:{agent.port}"  # reported; no answer to route it to
    finally:
        agent.close()
