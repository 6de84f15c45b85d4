"""Flow tests for the PIN subflow on its own."""

from __future__ import annotations

from pathlib import Path

from helpline.ivr.testing import run_flow_test

PIN = Path(__file__).parent / "pin_check.yaml"


def test_verified_returns_account_name() -> None:
    t = run_flow_test(PIN, ["4321#"], variables={"api_base": "https://crm.test"},
                      http={"https://crm.test/accounts/verify": {"json": {"name": "Ada"}}})
    t.assert_outcome("verified")
    assert t.result.outputs == {"account_name": "Ada"}
    assert "4321" not in str([e.data for e in t.events])


def test_bad_pins_then_failed() -> None:
    t = run_flow_test(PIN, ["12#", "abc", "99#"])
    t.assert_heard("PIN", "not valid", "PIN")
    t.assert_outcome("failed")


def test_lookup_timeout_still_verifies() -> None:
    t = run_flow_test(PIN, ["4321#"], variables={"api_base": "https://crm.test"},
                      http={"https://crm.test/": "timeout"})
    t.assert_outcome("verified")
