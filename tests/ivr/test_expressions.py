"""The expression language evaluates what flows need and refuses everything that could escape."""

from __future__ import annotations

import pytest

from helpline.ivr.expressions import (
    EvaluationError,
    ExpressionError,
    check_template,
    compile_expression,
    render_template,
)

ENV = {"pin": "4321", "n": 7, "caller": "+4930123", "items": ["a", "b"], "resp": {"name": "Ada"}}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('pin == "4321"', True),
        ("n % 3 + 1", 2),
        ("n > 5 and not (n > 10)", True),
        ('startswith(caller, "+49")', True),
        ("len(items) == 2 and 'b' in items", True),
        ("int(pin) - 1", 4320),
        ("str(n) + pin", "74321"),
        ('resp["name"]', "Ada"),
        ("'x' if n < 0 else 'y'", "y"),
        ("true and null is None" if False else "true or false", True),
        ("n / 2", 3.5),
    ],
)
def test_evaluates(text: str, value: object) -> None:
    assert compile_expression(text).evaluate(ENV) == value


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("caller.__class__", "attribute access"),
        ("__import__('os')", "unknown function '__import__'"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("eval('1')", "unknown function 'eval'"),
        ("_secret", "leading underscore"),
        ("[x for x in items]", "comprehension"),
        ("lambda: 1", "lambda"),
        ("2 ** 100000", "** operator"),
        ("len(items, key=1)", "keyword"),
        ("(x := 1)", "assignment"),
        ("n ==", "syntax error"),
        ("a\nb", "one line"),
    ],
)
def test_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert fragment in info.value.message


def test_error_offset_points_at_the_bad_part() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("n > 1 and caller.real")
    assert info.value.offset == len("n > 1 and ")


def test_runtime_errors_are_evaluation_errors() -> None:
    with pytest.raises(EvaluationError, match="unknown variable 'missing'"):
        compile_expression("missing + 1").evaluate(ENV)
    with pytest.raises(EvaluationError, match="ZeroDivisionError"):
        compile_expression("n / 0").evaluate(ENV)
    with pytest.raises(EvaluationError, match="too large"):
        compile_expression("'a' * 100000000").evaluate(ENV)


def test_templates() -> None:
    assert render_template("PIN {{ pin }} for {{ resp['name'] }}", ENV) == "PIN 4321 for Ada"
    with pytest.raises(ExpressionError) as info:
        check_template("Hi {{ open('x') }}")
    assert info.value.offset == len("Hi {{ ")
    with pytest.raises(ExpressionError, match="unclosed"):
        check_template("Hi {{ pin")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("n & 1", "the & operator is not allowed in expressions"),
        ("n | 1", "the | operator is not allowed in expressions"),
        ("~n", "the ~ operator is not allowed in expressions"),
        ("n << 2", "the << operator is not allowed in expressions"),
        ("{1, 2}", "set literals are not allowed in expressions"),
        ("{'a': 1}", "dict literals are not allowed in expressions"),
        ("n is None", "'is' (use ==) is not allowed in expressions"),
        ("items[0:1]", "slices are not allowed in expressions"),
    ],
)
def test_refusals_are_worded_for_people(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert info.value.message == message


def test_urlencode_makes_a_query_value_safe() -> None:
    env = {**ENV, "caller": "+49 30/123&x=1", "none": None}
    url = render_template("https://crm.test/find?number={{ urlencode(caller) }}", env)
    assert url == "https://crm.test/find?number=%2B49%2030%2F123%26x%3D1"
    assert render_template("{{ urlencode(none) }}{{ urlencode(n) }}", env) == "7"
