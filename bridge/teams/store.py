"""The Teams connector's own table: change notifications accepted but not yet bridged.

Graph gets its ``202`` only after a notification is in ``teams_notification``; a worker then
bridges the rows in order and deletes each one when its message is on Matrix. A crash between
the two loses nothing: the rows are still there at the next start.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from mautrix.util.async_db import Connection, Database, Scheme

from bridge.portal import connector_upgrade_table, fetch_rows, upgrade_connector_tables


async def _create_tables(conn: Connection, scheme: Scheme) -> None:
    serial = (
        "INTEGER PRIMARY KEY AUTOINCREMENT" if scheme == Scheme.SQLITE else "BIGSERIAL PRIMARY KEY"
    )
    await conn.execute(
        f"""CREATE TABLE teams_notification (
            id           {serial},
            tenant_id    TEXT   NOT NULL,
            payload      TEXT   NOT NULL,
            received_at  BIGINT NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0
        )"""
    )


INSERT_ROWS = 1000
"""Rows per ``INSERT`` statement: 3,000 parameters, below SQLite's and PostgreSQL's limits."""


async def _insert_notifications(
    db: Database | Connection, rows: list[tuple[str, str, int]]
) -> None:
    values = ", ".join(f"(${3 * i + 1}, ${3 * i + 2}, ${3 * i + 3})" for i in range(len(rows)))
    await db.execute(
        f"INSERT INTO teams_notification (tenant_id, payload, received_at) VALUES {values}",
        *(value for row in rows for value in row),
    )


@dataclass(slots=True)
class StoredNotification:
    id: int
    tenant_id: str
    payload: dict[str, Any]
    attempts: int


class TeamsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upgrade(self) -> None:
        table = connector_upgrade_table("teams")
        table.register(_create_tables, description="create the Teams connector's tables")
        await upgrade_connector_tables(self._db, table)

    async def add_notifications(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Store (tenant id, notification) pairs, all or none.

        One multi-row ``INSERT`` is atomic by itself: a webhook call costs one database round
        trip instead of four (``BEGIN``, ``INSERT``, ``COMMIT``). Only a body with more items
        than one statement takes (Graph batches far fewer) needs a transaction."""
        now = int(time.time() * 1000)
        rows = [(tenant_id, json.dumps(payload), now) for tenant_id, payload in items]
        chunks = [rows[i : i + INSERT_ROWS] for i in range(0, len(rows), INSERT_ROWS)]
        if len(chunks) == 1:
            await _insert_notifications(self._db, chunks[0])
            return
        conn: Connection
        async with self._db.acquire() as conn, conn.transaction():
            for chunk in chunks:
                await _insert_notifications(conn, chunk)

    async def pending_notifications(self, limit: int = 200) -> list[StoredNotification]:
        rows = await fetch_rows(
            self._db,
            "SELECT id, tenant_id, payload, attempts FROM teams_notification ORDER BY id LIMIT $1",
            limit,
        )
        return [
            StoredNotification(r["id"], r["tenant_id"], json.loads(r["payload"]), r["attempts"])
            for r in rows
        ]

    async def finish_notification(self, row_id: int) -> None:
        await self._db.execute("DELETE FROM teams_notification WHERE id=$1", row_id)

    async def count_notifications(self) -> int:
        return int(await self._db.fetchval("SELECT COUNT(*) FROM teams_notification") or 0)

    async def record_attempt(self, row_id: int) -> int:
        await self._db.execute(
            "UPDATE teams_notification SET attempts=attempts+1 WHERE id=$1", row_id
        )
        rows = await fetch_rows(
            self._db, "SELECT attempts FROM teams_notification WHERE id=$1", row_id
        )
        return int(rows[0]["attempts"]) if rows else 0
