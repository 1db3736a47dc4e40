"""Store fixtures, run against both engines: ``sqlite`` (a temp file) and ``postgres``.

PostgreSQL comes from ``PONTIS_TEST_POSTGRES`` (default ``postgres://postgres@127.0.0.1:5432/test``).
Each test gets a fresh schema that is dropped afterwards. An unreachable server fails the
``postgres`` tests instead of skipping them: CI has one, so silence would hide breakage.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bridge.portal import Store

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/test"


@dataclass
class StoreTarget:
    """How to (re)open the same test database, for tests that close and reopen it."""

    engine: str
    url: str
    db_args: dict[str, Any] = field(default_factory=dict)

    async def open(self, **kwargs: Any) -> Store:
        return await Store.open(self.url, db_args=dict(self.db_args), **kwargs)


@pytest.fixture(params=["sqlite", "postgres"])
async def store_target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreTarget]:
    if request.param == "sqlite":
        yield StoreTarget("sqlite", f"sqlite:{tmp_path / 'pontis.db'}")
        return
    url = os.environ.get("PONTIS_TEST_POSTGRES", DEFAULT_POSTGRES)
    try:
        admin = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        pytest.fail(f"PostgreSQL at {url} is unreachable ({e!r}); set PONTIS_TEST_POSTGRES")
    schema = f"pontis_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield StoreTarget(
            "postgres",
            url,
            {"server_settings": {"search_path": schema}, "min_size": 1, "max_size": 4},
        )
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def store(store_target: StoreTarget) -> AsyncIterator[Store]:
    store = await store_target.open()
    try:
        yield store
    finally:
        await store.close()
