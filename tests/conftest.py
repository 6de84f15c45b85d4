"""Fixtures shared by every test folder."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """The cyclic collector off: whatever is still alive afterwards was kept by a reference (a leak),
    not merely waiting for a collection."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
