"""The Matrix side's durable inbox: each appservice transaction stored before the homeserver
gets its 200, its events worked through in order, failures counted, and the hopeless parked as
dead letters. Part of :class:`~bridge.portal.store.Store`."""

from __future__ import annotations

from typing import Any

from .models import (
    DeadLetter,
    InboxItem,
    InboxRow,
)
from .rows import Row
from .store_base import StoreBase, dump_json, load_json

_PG_STORE_TRANSACTION = """
WITH txn AS (
    INSERT INTO as_transaction (txn_id, received_at) VALUES ($1, $2)
    ON CONFLICT (txn_id) DO NOTHING RETURNING txn_id
), ins AS (
    INSERT INTO inbox (txn_id, kind, event_id, room_id, payload, received_at)
    SELECT txn.txn_id, i.kind, i.event_id, i.room_id, i.payload, $2
    FROM txn, unnest($3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
        AS i (kind, event_id, room_id, payload, n)
    ORDER BY i.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING id, kind, event_id, room_id, payload
)
SELECT (SELECT count(*) FROM txn) AS accepted, ins.*
FROM (SELECT 1) AS one LEFT JOIN ins ON true
"""
"""Store.store_transaction on PostgreSQL: the transaction id, then its items, in one statement;
at least one row, whose ``accepted`` is 0 if the transaction id was seen before."""

_INBOX_COLUMNS = "id, txn_id, kind, event_id, room_id, payload, received_at, attempts, last_error"
_DEAD_LETTER_COLUMNS = "id, kind, event_id, room_id, payload, error, attempts, parked_at"


def _inbox_row(row: Row) -> InboxRow:
    return InboxRow(
        id=row["id"],
        txn_id=row["txn_id"],
        kind=row["kind"],
        event_id=row["event_id"],
        room_id=row["room_id"],
        payload=load_json(row["payload"]),
        received_at=row["received_at"],
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


def _dead_letter(row: Row) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        kind=row["kind"],
        event_id=row["event_id"],
        room_id=row["room_id"],
        payload=load_json(row["payload"]),
        error=row["error"],
        attempts=row["attempts"],
        parked_at=row["parked_at"],
    )


class MatrixInbox(StoreBase):
    """The ``as_transaction``, ``inbox`` and Matrix dead-letter tables."""

    async def store_transaction(self, txn_id: str, items: list[InboxItem]) -> list[InboxRow] | None:
        """Durably accept one appservice transaction, all or nothing.

        Returns None (storing nothing) if ``txn_id`` was accepted before; otherwise the rows
        actually inserted, in order, leaving out events whose ``event_id`` is already in the
        inbox. Database errors propagate and leave nothing behind.
        """
        now = self._clock()
        # Serialise first, so a bad payload fails before the database is touched.
        payloads = [dump_json(item.payload) for item in items]
        if not self._sqlite:
            return await self._store_transaction_in_one_statement(txn_id, items, payloads, now)
        rows: list[InboxRow] = []
        async with self._transaction():
            accepted = await self._fetchval(
                "INSERT INTO as_transaction (txn_id, received_at) VALUES ($1, $2)"
                " ON CONFLICT (txn_id) DO NOTHING RETURNING txn_id",
                txn_id,
                now,
            )
            if accepted is None:
                return None
            for item, payload in zip(items, payloads, strict=True):
                row_id = await self._fetchval(
                    "INSERT INTO inbox (txn_id, kind, event_id, room_id, payload, received_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6)"
                    " ON CONFLICT (event_id) DO NOTHING RETURNING id",
                    txn_id,
                    item.kind,
                    item.event_id,
                    item.room_id,
                    payload,
                    now,
                )
                if row_id is not None:
                    rows.append(
                        InboxRow(
                            id=int(row_id),
                            txn_id=txn_id,
                            kind=item.kind,
                            event_id=item.event_id,
                            room_id=item.room_id,
                            payload=item.payload,
                            received_at=now,
                        )
                    )
        return rows

    async def _store_transaction_in_one_statement(
        self, txn_id: str, items: list[InboxItem], payloads: list[str], now: int
    ) -> list[InboxRow] | None:
        """:meth:`store_transaction` on PostgreSQL: one statement, so one round trip instead
        of ``BEGIN``, an insert per item and ``COMMIT`` while the homeserver waits for its 200.

        A statement is atomic by itself. The rows come back from ``RETURNING`` whole and are
        put in id order, the order the dispatcher and :meth:`pending_inbox` use (the insert
        follows the items' order, so in practice that is the items' order too)."""
        records = await self._fetch(
            _PG_STORE_TRANSACTION,
            txn_id,
            now,
            [item.kind for item in items],
            [item.event_id for item in items],
            [item.room_id for item in items],
            payloads,
        )
        if not records[0]["accepted"]:
            return None
        parsed = dict(zip(payloads, (item.payload for item in items), strict=True))
        return [
            InboxRow(
                id=r["id"],
                txn_id=txn_id,
                kind=r["kind"],
                event_id=r["event_id"],
                room_id=r["room_id"],
                payload=parsed[r["payload"]],
                received_at=now,
            )
            for r in sorted((r for r in records if r["id"] is not None), key=lambda r: r["id"])
        ]

    async def pending_inbox(self, after_id: int = 0, limit: int = 500) -> list[InboxRow]:
        """Unfinished inbox rows with ``id > after_id``, oldest first."""
        rows = await self._fetch(
            f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE id > $1 ORDER BY id LIMIT $2",
            after_id,
            limit,
        )
        return [_inbox_row(row) for row in rows]

    async def pending_inbox_of_room(self, room_id: str | None, limit: int) -> list[InboxRow]:
        """Unfinished inbox rows of one room (``None``: of no room), oldest first."""
        where = "room_id IS NULL" if room_id is None else "room_id = $2"
        args: list[Any] = [limit] if room_id is None else [limit, room_id]
        rows = await self._fetch(
            f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE {where} ORDER BY id LIMIT $1", *args
        )
        return [_inbox_row(row) for row in rows]

    async def inbox_row_exists(self, row_id: int) -> bool:
        return bool(await self._db.fetchval("SELECT 1 FROM inbox WHERE id=$1", row_id))

    async def finish_inbox(self, row_id: int) -> None:
        await self._db.execute("DELETE FROM inbox WHERE id=$1", row_id)

    async def record_inbox_failure(self, row_id: int, error: str) -> int:
        """Count one more failed attempt; returns the number of attempts so far."""
        attempts = await self._fetchval(
            "UPDATE inbox SET attempts=attempts+1, last_error=$2 WHERE id=$1 RETURNING attempts",
            row_id,
            error,
        )
        if attempts is None:
            raise KeyError(f"inbox row {row_id} does not exist")
        return int(attempts)

    async def park_inbox(self, row_id: int, error: str) -> DeadLetter:
        """Move an inbox row to the dead letters, with the error that made it give up."""
        async with self._transaction() as conn:
            row = await self._fetchrow(f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE id=$1", row_id)
            if row is None:
                raise KeyError(f"inbox row {row_id} does not exist")
            item = _inbox_row(row)
            parked_at = self._clock()
            dead_id = await self._fetchval(
                "INSERT INTO dead_letter"
                " (kind, event_id, room_id, payload, error, attempts, parked_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                item.kind,
                item.event_id,
                item.room_id,
                row["payload"],
                error,
                item.attempts,
                parked_at,
            )
            await conn.execute("DELETE FROM inbox WHERE id=$1", row_id)
        return DeadLetter(
            id=int(dead_id),
            kind=item.kind,
            event_id=item.event_id,
            room_id=item.room_id,
            payload=item.payload,
            error=error,
            attempts=item.attempts,
            parked_at=parked_at,
        )

    async def inbox_depth(self) -> int:
        return int(await self._fetchval("SELECT COUNT(*) FROM inbox"))

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recently parked dead letters, newest first."""
        rows = await self._fetch(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letter ORDER BY id DESC LIMIT $1", limit
        )
        return [_dead_letter(row) for row in rows]

    async def prune_transactions(self, older_than_ms: int) -> int:
        """Forget transaction ids accepted more than ``older_than_ms`` ago; returns how many.

        The homeserver retries a transaction only until it succeeds, so ids older than its
        retry horizon are no longer needed for deduplication.
        """
        cutoff = self._clock() - older_than_ms
        rows = await self._fetch(
            "DELETE FROM as_transaction WHERE received_at < $1 RETURNING txn_id", cutoff
        )
        return len(rows)
