"""One query, one hop: reading rows the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from typing import Any, cast

import aiosqlite
from mautrix.util.async_db import Connection, Database, Scheme

Row = Any  # sqlite3.Row or asyncpg.Record; both index by column name

_POSITIONAL = re.compile(r"\$(\d+)")
_SLOW_QUERY_SECONDS = 1.0
_SQLITE_SQL: dict[str, str] = {}
"""Queries with ``$n`` placeholders → the same with SQLite's ``?n``."""


async def fetch_rows(db: Database, query: str, *args: Any) -> list[Row]:
    """The rows of ``query`` (``$1``-style placeholders), for the store and connector tables.

    On SQLite each call of mautrix's ``fetch``/``fetchrow``/``fetchval`` is three hops to
    aiosqlite's worker thread (execute, fetch, close the cursor), each a GIL handover both ways;
    this is one (``execute_fetchall``), with mautrix's warning for queries slower than a
    second. PostgreSQL is unchanged."""
    conn: Connection
    async with db.acquire() as conn:
        if db.scheme != Scheme.SQLITE:
            return list(await conn.fetch(query, *args))
        sql = _SQLITE_SQL.get(query)
        if sql is None:
            sql = _SQLITE_SQL[query] = _POSITIONAL.sub(r"?\1", query)
        began = time.monotonic()
        rows = await cast(aiosqlite.Connection, conn.wrapped).execute_fetchall(sql, args)
        if (took := time.monotonic() - began) > _SLOW_QUERY_SECONDS:
            conn.log.warning("fetch(%r) took %.3f seconds", query, took)
        return list(rows)
