"""Deleting what the hub no longer needs, so that its tables stay bounded.

Only rows that are finished with are deleted: accepted transaction ids past the homeserver's
retry horizon, connector markers nobody wrote for a long time, dead letters an operator had
time to look at, audit entries past their retention. Message and reaction mappings are kept
(replies and edits need them); pending inbox rows are never touched. Deletes go in batches, so that SQLite's single writer is never
held for long and PostgreSQL does not lock many rows at once.

:class:`bridge.core.housekeeping.Housekeeping` runs these on a schedule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mautrix.util.async_db import Database

from .rows import fetch_rows

BATCH = 2000
"""Rows deleted per statement."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Pruned:
    """Rows deleted by one run."""

    transactions: int = 0
    markers: int = 0
    dead_letters: int = 0
    audit: int = 0

    @property
    def total(self) -> int:
        return self.transactions + self.markers + self.dead_letters + self.audit


class Pruner:
    """Deletes old rows of one database; ``clock`` gives milliseconds since the epoch (the
    same clock the :class:`~bridge.portal.store.Store` stamps rows with)."""

    def __init__(
        self, db: Database, *, clock: Callable[[], int] = _now_ms, batch: int = BATCH
    ) -> None:
        self._db = db
        self._clock = clock
        self._batch = batch

    async def transactions(self, older_than_ms: int) -> int:
        """Forget appservice transaction ids accepted more than ``older_than_ms`` ago.

        The homeserver resends a transaction only until it was answered 200, so an id past
        that horizon no longer deduplicates anything."""
        return await self._delete(
            "DELETE FROM as_transaction WHERE txn_id IN (SELECT txn_id FROM as_transaction"
            " WHERE received_at < $1 LIMIT $2) RETURNING 1",
            self._clock() - older_than_ms,
        )

    async def kv_markers(self, network: str, prefixes: Iterable[str], older_than_ms: int) -> int:
        """Delete ``network``'s key-value rows whose key starts with one of ``prefixes`` and
        that were last written more than ``older_than_ms`` ago. Other keys are state the
        connector needs for ever (subscriptions, secrets) and are never deleted here."""
        cutoff = self._clock() - older_than_ms
        deleted = 0
        for prefix in dict.fromkeys(prefixes):
            if not prefix:
                raise ValueError(f"{network}: an empty kv marker prefix would match every key")
            deleted += await self._delete(
                "DELETE FROM kv WHERE network=$1 AND key IN (SELECT key FROM kv"
                " WHERE network=$1 AND updated_at < $2 AND substr(key, 1, $4) = $3 LIMIT $5)"
                " RETURNING 1",
                network, cutoff, prefix, len(prefix),
            )  # fmt: skip
        return deleted

    async def dead_letters(self, older_than_ms: int) -> int:
        """Delete dead letters (both directions) parked more than ``older_than_ms`` ago."""
        return await self._delete(
            "DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter"
            " WHERE parked_at < $1 LIMIT $2) RETURNING 1",
            self._clock() - older_than_ms,
        )

    async def audit(self, older_than_ms: int) -> int:
        """Delete audit entries recorded more than ``older_than_ms`` ago."""
        return await self._delete(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 LIMIT $2)"
            " RETURNING 1",
            self._clock() - older_than_ms,
        )

    async def _delete(self, query: str, *args: object) -> int:
        """Run ``query`` (its last placeholder is the batch size) until a batch comes back
        short; returns the rows deleted."""
        deleted = 0
        while True:
            rows = await fetch_rows(self._db, query, *args, self._batch)
            deleted += len(rows)
            if len(rows) < self._batch:
                return deleted
            await asyncio.sleep(0)  # let the bridge's own queries in between two batches
