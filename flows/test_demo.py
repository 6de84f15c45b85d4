"""Flow tests for the demo helpline, written the way flow authors are meant to write them."""

from __future__ import annotations

from pathlib import Path

from helpline.ivr.testing import run_flow_test

DEMO = Path(__file__).parent / "demo.yaml"
OPEN = "2026-12-24T17:59 Europe/Berlin"


def test_billing_with_pin_lookup() -> None:
    t = run_flow_test(
        DEMO, ["1", "4321#"], at=OPEN, variables={"api_base": "https://crm.test"},
        http={"POST https://crm.test/accounts/verify": {"json": {"name": "Ada"}}},
        enqueue="answered",
    )
    t.assert_heard("Welcome", "press 1", "PIN", "Thank you, Ada")
    t.assert_milestones("billing_selected")
    t.assert_outcome("answered")
    assert t.channel.enqueued[0][0] == "billing"


def test_billing_without_api_and_a_wrong_lookup() -> None:
    t = run_flow_test(DEMO, ["1", "1111#"], at=OPEN, enqueue="answered")
    t.assert_heard("Thank you. Connecting you to billing.")
    t = run_flow_test(DEMO, ["1", "1111#"], at=OPEN, variables={"api_base": "https://crm.test"},
                      http={"https://crm.test/": {"status": 404}})
    t.assert_heard("could not verify")
    t.assert_outcome("transferred")


def test_support_queue_times_out() -> None:
    t = run_flow_test(DEMO, ["2"], at=OPEN)
    t.assert_milestones("support_selected")
    t.assert_heard("Nobody could take your call", "Goodbye")
    t.assert_outcome("hangup")


def test_zero_out_reaches_the_operator_and_busy_falls_back() -> None:
    t = run_flow_test(DEMO, ["0"], at=OPEN)
    t.assert_outcome("transferred")
    assert t.channel.transfers == ["sip:operator@pbx.example.com"]
    t = run_flow_test(DEMO, ["0"], at=OPEN, transfer="busy")
    t.assert_heard("cannot be reached", "Goodbye")


def test_after_hours_holiday_and_new_years_eve() -> None:
    t = run_flow_test(DEMO, at="2026-12-24T18:00 Europe/Berlin")
    t.assert_milestones("after_hours")
    t.assert_not_heard("press 1")
    t = run_flow_test(DEMO, at="2026-12-25T10:00 Europe/Berlin")
    t.assert_milestones("holiday")
    t = run_flow_test(DEMO, at="2026-12-31T15:00 Europe/Berlin")
    t.assert_milestones("after_hours")


def test_silence_and_repeat() -> None:
    t = run_flow_test(DEMO, ["", "*", "", ""], at=OPEN)
    t.assert_heard("did not hear", "press 1", "press 1", "still did not hear")
    t.assert_outcome("hangup")
