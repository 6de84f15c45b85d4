"""pytest fixtures for code that needs a real database: every test runs against a SQLite file and a
throwaway PostgreSQL cluster. Import them into a conftest:

    from helpline.store.testing import db_url, migrated_store, postgres_cluster  # noqa: F401

PostgreSQL missing is a failure, never a skip: with CI=true it is a broken CI image, otherwise the
message says what to install.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from helpline.store.migrate import upgrade
from helpline.store.store import Store
from helpline.store.throwaway_pg import PostgresUnavailable, ThrowawayPostgres

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[ThrowawayPostgres]:
    try:
        cluster = ThrowawayPostgres().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'helpline.db'}"
    cluster: ThrowawayPostgres = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()


@pytest.fixture
async def migrated_store(db_url: str) -> AsyncIterator[Store]:
    """A ``Store`` on a database migrated to head."""
    await upgrade(db_url)
    store = Store(db_url)
    try:
        yield store
    finally:
        await store.close()
