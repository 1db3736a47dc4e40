"""The remote inbox: what a network handed the hub, kept until Matrix has all of it.

A connector stores the raw input (a stanza, a mail, a change notification) here *before* it
acknowledges it to its network; the core converts and sends it inside the portal's ordered queue
and deletes the row once Matrix accepted every part. After a crash the rows are still here and
are sent, in order, before anything newer of the same portal. What fails for good moves to the
``dead_letter`` table with its network and portal, where an operator can retry or drop it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mautrix.util.async_db import Connection, Database

from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID

from .models import RemoteInput
from .rows import fetch_rows

_COLUMNS = (
    "id, network, portal_id, receiver, login_id, kind, dedupe_id, payload, received_at, "
    "attempts, last_error"
)


@dataclass(slots=True)
class RemoteInboxRow:
    id: int
    input: RemoteInput
    received_at: int
    attempts: int = 0
    last_error: str | None = None
    network: NetworkID = field(init=False)

    def __post_init__(self) -> None:
        self.network = self.input.portal.network


def _row(row: Any) -> RemoteInboxRow:
    key = PortalKey(
        NetworkID(row["network"]), RemoteChatID(row["portal_id"]), LoginID(row["receiver"])
    )
    payload = json.loads(row["payload"])
    return RemoteInboxRow(
        id=int(row["id"]),
        input=RemoteInput(
            portal=key,
            kind=row["kind"],
            payload=payload if isinstance(payload, dict) else {},
            dedupe_id=row["dedupe_id"],
            login=LoginID(row["login_id"]),
        ),
        received_at=int(row["received_at"]),
        attempts=int(row["attempts"]),
        last_error=row["last_error"],
    )


class RemoteInboxStore:
    def __init__(self, db: Database, clock: Callable[[], int]) -> None:
        self._db = db
        self._clock = clock

    async def add(self, item: RemoteInput) -> RemoteInboxRow | None:
        """Store ``item`` (one round trip); None if the same ``dedupe_id`` of the portal is
        still pending."""
        key = item.portal
        received_at = self._clock()
        rows = await fetch_rows(
            self._db,
            "INSERT INTO remote_inbox"
            " (network, portal_id, receiver, login_id, kind, dedupe_id, payload, received_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (network, portal_id, receiver, dedupe_id) DO NOTHING RETURNING id",
            key.network, key.remote_id, key.receiver, item.login, item.kind, item.dedupe_id,
            json.dumps(item.payload, separators=(",", ":"), ensure_ascii=False), received_at,
        )  # fmt: skip
        if not rows:
            return None
        return RemoteInboxRow(id=int(rows[0][0]), input=item, received_at=received_at)

    async def pending(self, after_id: int = 0, limit: int = 500) -> list[RemoteInboxRow]:
        """Rows not yet on Matrix with ``id > after_id``, oldest first."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM remote_inbox WHERE id > $1 ORDER BY id LIMIT $2",
            after_id, limit,
        )  # fmt: skip
        return [_row(row) for row in rows]

    async def pending_for(self, key: PortalKey, limit: int) -> list[RemoteInboxRow]:
        """The portal's rows not yet on Matrix, oldest first (the unique index's prefix)."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM remote_inbox"
            " WHERE network=$1 AND portal_id=$2 AND receiver=$3 ORDER BY id LIMIT $4",
            key.network, key.remote_id, key.receiver, limit,
        )  # fmt: skip
        return [_row(row) for row in rows]

    async def get(self, row_id: int) -> RemoteInboxRow | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM remote_inbox WHERE id=$1", row_id)
        return None if row is None else _row(row)

    async def exists(self, row_id: int) -> bool:
        return bool(await self._db.fetchval("SELECT 1 FROM remote_inbox WHERE id=$1", row_id))

    async def finish(self, row_id: int) -> None:
        await self._db.execute("DELETE FROM remote_inbox WHERE id=$1", row_id)

    async def finish_many(self, row_ids: list[int]) -> None:
        """Remove rows Matrix has, in one statement."""
        for start in range(0, len(row_ids), 500):
            chunk = row_ids[start : start + 500]
            marks = ", ".join(f"${n}" for n in range(1, len(chunk) + 1))
            await self._db.execute(f"DELETE FROM remote_inbox WHERE id IN ({marks})", *chunk)

    async def record_failure(self, row_id: int, error: str) -> None:
        await self._db.execute(
            "UPDATE remote_inbox SET attempts=attempts+1, last_error=$2 WHERE id=$1",
            row_id, error[:2000],
        )  # fmt: skip

    async def park(self, row: RemoteInboxRow, error: str) -> int:
        """Move ``row`` to the dead letters; returns the dead letter's id."""
        item, key = row.input, row.input.portal
        conn: Connection
        async with self._db.acquire() as conn, conn.transaction():
            dead_id = await conn.fetchval(
                "INSERT INTO dead_letter (kind, event_id, room_id, payload, error, attempts,"
                " parked_at, network, portal_id, receiver, login_id, dedupe_id)"
                " VALUES ($1, NULL, NULL, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                item.kind, json.dumps(item.payload, ensure_ascii=False), error[:2000],
                row.attempts, self._clock(), key.network, key.remote_id, key.receiver,
                item.login, item.dedupe_id,
            )  # fmt: skip
            await conn.execute("DELETE FROM remote_inbox WHERE id=$1", row.id)
        return int(dead_id)

    async def depth(self) -> dict[str, tuple[int, int | None]]:
        """network → (pending rows, received_at of the oldest)."""
        rows = await self._db.fetch(
            "SELECT network, COUNT(*) AS n, MIN(received_at) AS oldest FROM remote_inbox"
            " GROUP BY network"
        )
        return {str(r["network"]): (int(r["n"]), r["oldest"]) for r in rows}
