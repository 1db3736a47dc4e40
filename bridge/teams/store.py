"""The Teams connector's own tables: none any more, only their history.

Version 1 kept accepted change notifications in ``teams_notification`` until a worker of the
connector had bridged them. The core's remote inbox does that now (``ctx.accept_remote``), so
version 2 drops the table; notifications a previous version left in it are handed to the remote
inbox first (:meth:`TeamsStore.legacy_notifications`), then the table goes.
"""

from __future__ import annotations

import json
from typing import Any

from mautrix.util.async_db import Connection, Database, Scheme

from bridge.portal import connector_upgrade_table, fetch_rows, upgrade_connector_tables

VERSION = "teams_version"


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


async def _drop_notification_table(conn: Connection) -> None:
    await conn.execute("DROP TABLE teams_notification")


class TeamsStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upgrade(self) -> None:
        table = connector_upgrade_table("teams")
        table.register(_create_tables, description="create the Teams connector's tables")
        table.register(
            _drop_notification_table,
            description="drop teams_notification: notifications wait in the remote inbox",
        )
        await upgrade_connector_tables(self._db, table)

    async def legacy_notifications(self) -> list[dict[str, Any]]:
        """The notifications version 1 accepted and had not bridged yet, oldest first (empty
        once :meth:`upgrade` has run). Hand them to the remote inbox before upgrading: if the
        process dies in between, they are read and handed over again (the inbox dedupes)."""
        await self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION} (version INTEGER PRIMARY KEY)"
        )
        if await self._db.fetchval(f"SELECT version FROM {VERSION} LIMIT 1") != 1:
            return []
        rows = await fetch_rows(
            self._db, "SELECT tenant_id, payload FROM teams_notification ORDER BY id"
        )
        items = []
        for row in rows:
            item = json.loads(row["payload"])
            if isinstance(item, dict):
                items.append({"tenantId": row["tenant_id"], **item})
        return items
