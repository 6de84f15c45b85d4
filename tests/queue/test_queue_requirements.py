"""Requirement expressions: semantics (a missing skill is not zero), explanations, errors with columns."""

from __future__ import annotations

from typing import Any

import pytest

from helpline.queue.requirements import RequirementError, combine, compile_requirements

AGENT_SKILLS = {"spanish": 2, "billing": 3, "english": 0}
AGENT_ATTRS: dict[str, Any] = {"language": "es", "site": "lisbon", "vip_desk": True, "night": False}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spanish >= 2", True),
        ("spanish >= 3", False),
        ("spanish >= 2 and billing >= 2", True),
        ("spanish >= 3 or billing >= 3", True),
        ("not french", True),
        ("not spanish", False),
        ("french >= 0", False),  # missing is not zero
        ("french == 0", False),
        ("french != 3", False),  # every comparison reading a missing value is false
        ("french in [1, 2]", False),
        ("french not in [1, 2]", False),
        ("not (french >= 3)", True),
        ("english", True),  # a bare skill name: has it, at any level (0 included)
        ("english >= 0", True),
        ('language == "es"', True),
        ('language in ["pt", "es"]', True),
        ('language not in ["pt", "es"]', False),
        ("vip_desk", True),
        ("night", False),  # a falsy attribute
        ("has(night)", True),  # present, whatever the value
        ('has("french")', False),
        ("skill.spanish >= 2", True),
        ("attr.spanish >= 2", False),  # attr namespace does not read skills
        ("attr.site == 'lisbon' and skill.billing > 2", True),
        ("1 <= spanish <= 2", True),
        ("1 <= spanish < 2", False),
        ("language >= 3", False),  # incomparable types are false, not an error
        ("(spanish >= 3 or language == 'es') and not (billing < 3)", True),
        ("true", True),
        ("False", False),
        ("", True),
        ("   ", True),
    ],
)
def test_evaluate(text: str, expected: bool) -> None:
    assert compile_requirements(text).evaluate(AGENT_SKILLS, AGENT_ATTRS) is expected


@pytest.mark.parametrize(
    ("text", "explanation"),
    [
        ("spanish >= 3", "spanish >= 3: agent has spanish=2"),
        ("spanish >= 2 and billing >= 4", "billing >= 4: agent has billing=3"),
        ("spanish >= 2 and french >= 2", "french >= 2: agent lacks french"),
        ("not spanish", "not spanish: agent has spanish=2"),
        ("french", "french: agent lacks french"),
        ("language == 'pt'", "language == 'pt': agent has language='es'"),
        (
            "french >= 1 or german >= 1",
            "none of (french >= 1 or german >= 1): "
            "french >= 1: agent lacks french; german >= 1: agent lacks german",
        ),
        ("spanish >= 2", None),
    ],
)
def test_explain_names_the_first_failing_clause(text: str, explanation: str | None) -> None:
    assert compile_requirements(text).explain(AGENT_SKILLS, AGENT_ATTRS) == explanation


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("a >= 3 3", 7, "syntax error"),
        ("a and (b", 6, "never closed"),
        ("spanish + 1 > 2", 0, "arithmetic"),
        ("foo(spanish)", 0, "unknown function 'foo'"),
        ("spanish is 3", 11, "'is' (use ==)"),
        ("3 > 2", 0, "compares constants"),
        ("language in lang", 12, "must be a list"),
        ("language == ['es']", 12, "a list may only follow 'in'"),
        ("skill.__class__ > 1", 0, "leading underscore"),
        ("x.y >= 1", 0, "only skill.<name> and attr.<name>"),
        ("'es'", 0, "is a value, not a condition"),
        ("spanish >= 3 and -billing", 17, "only 'not'"),
        ("  spanish >= x(1)", 13, "got x(1)"),  # leading blanks still count
        ("has(a, b)", 0, "exactly one"),
        ("spanish if billing else french", 0, "conditional"),
        ("spanish[0]", 0, "indexing"),
    ],
)
def test_errors_give_a_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(RequirementError) as info:
        compile_requirements(text)
    assert fragment in info.value.message
    assert info.value.column == column


def test_compiled_once_and_referenced_names() -> None:
    first = compile_requirements("spanish >= 3 and skill.billing >= 2 and attr.site == 'x' and not french")
    assert (
        compile_requirements("spanish >= 3 and skill.billing >= 2 and attr.site == 'x' and not french")
        is first
    )
    assert first.skills == {"spanish", "billing", "french"}
    assert first.attributes == {"spanish", "site", "french"}


def test_proficiency_sums_referenced_levels_the_agent_has() -> None:
    req = compile_requirements("spanish >= 1 and billing >= 1 or german")
    assert req.proficiency({"spanish": 4, "billing": 5, "english": 9}) == 9


def test_combine_requires_every_part() -> None:
    both = combine([compile_requirements("spanish >= 2"), compile_requirements("billing >= 4")])
    assert both.text == "(spanish >= 2) and (billing >= 4)"
    assert not both.evaluate(AGENT_SKILLS, AGENT_ATTRS)
    assert both.explain(AGENT_SKILLS, AGENT_ATTRS) == "billing >= 4: agent has billing=3"
    only = compile_requirements("billing >= 1")
    assert combine([compile_requirements(""), only]) is only
    assert combine([]).is_any
