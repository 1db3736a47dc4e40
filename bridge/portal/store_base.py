"""What every part of the store stands on: one database, its clock, and one-hop reads."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mautrix.util.async_db import Connection, Database, Scheme

from .rows import Row, fetch_rows


def now_ms() -> int:
    return int(time.time() * 1000)


def dump_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load_json(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    loaded = json.loads(value)
    return loaded if isinstance(loaded, dict) else {}


class StoreBase:
    """The database and clock the parts of :class:`~bridge.portal.store.Store` share.

    ``clock`` returns milliseconds since the epoch; tests replace it.
    """

    def __init__(self, db: Database, *, clock: Callable[[], int] = now_ms) -> None:
        self._db = db
        self._clock = clock
        self._sqlite = db.scheme == Scheme.SQLITE

    @property
    def database(self) -> Database:
        """The underlying database, for connector-private tables."""
        return self._db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        """One connection in one transaction; nested store calls in the task share it."""
        conn: Connection
        async with self._db.acquire() as conn, conn.transaction():
            yield conn

    async def _fetch(self, query: str, *args: Any) -> list[Row]:
        return await fetch_rows(self._db, query, *args)

    async def _fetchrow(self, query: str, *args: Any) -> Row | None:
        rows = await self._fetch(query, *args)
        return rows[0] if rows else None

    async def _fetchval(self, query: str, *args: Any) -> Any:
        rows = await self._fetch(query, *args)
        return rows[0][0] if rows else None
