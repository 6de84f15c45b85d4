"""Inputs fuzzing found that once broke the code, and every seed: each must now pass its target's check.

``regressions/<target>/<name>`` holds the input as libFuzzer saved it (minimised where that helped);
the name says what it broke. The seeds of ``corpus/<target>/`` run too, so a seed that stops passing
is noticed here rather than as a confusing crash on the first execution of a fuzz run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fuzz.harness import CORPUS_DIR, REGRESSIONS_DIR, TARGETS


def _inputs(root: Path) -> list[tuple[str, Path]]:
    return [(target, path) for target in TARGETS if (root / target).is_dir()
            for path in sorted((root / target).iterdir()) if path.is_file()]


def _check(target: str) -> Callable[[bytes], None]:
    check: Callable[[bytes], None] = importlib.import_module(f"tests.fuzz.{target}").check
    return check


REGRESSIONS = _inputs(REGRESSIONS_DIR)
SEEDS = _inputs(CORPUS_DIR)


def test_every_target_has_seeds() -> None:
    assert {target for target, _ in SEEDS} == set(TARGETS)


@pytest.mark.parametrize(("target", "path"), REGRESSIONS, ids=[f"{t}/{p.name}" for t, p in REGRESSIONS])
def test_regression_input_passes(target: str, path: Path) -> None:
    _check(target)(path.read_bytes())


@pytest.mark.parametrize(("target", "path"), SEEDS, ids=[f"{t}/{p.name}" for t, p in SEEDS])
def test_seed_passes(target: str, path: Path) -> None:
    _check(target)(path.read_bytes())
