"""Records: the raw bytes of every mail received and sent, kept for ``records.keep_days``.

An agency must be able to show what it received and what it sent, byte for byte, long after the
room has moved on. Records are content-addressed: the key is the SHA-256 of the raw mail, which
the room event of a received mail carries in its content (``fi.pontis.email.sha256``), so a
record can be checked against what the room shows. They live in the shared database (one more
table, the same backups, both engines), zlib-compressed: mail is mostly text and base64.

``email_record_ref`` says which portal's mail a record is (the same mail sent to two portals is
one record with two references); housekeeping deletes references older than the retention and
then the records nobody references.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mautrix.util.async_db import Connection

from bridge.email.store import EmailStore
from bridge.portal import fetch_rows

DIRECTION_IN = "in"
DIRECTION_OUT = "out"
RECORD_KEY = "fi.pontis.email.sha256"
"""Key of the record's hash in the content of a received mail's first room event."""
DAY_MS = 24 * 3600 * 1000
PRUNE_INTERVAL_SECONDS = 3600.0


def record_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class RecordRef:
    portal: str
    message_id: str
    direction: str
    sha256: str
    stored_at: int


class Records:
    def __init__(self, store: EmailStore) -> None:
        self._db = store.database

    async def keep(self, portal: str, message_id: str, direction: str, raw: bytes) -> str:
        """Store ``raw`` (once per content) and that it is ``message_id`` of ``portal``;
        its hash. Idempotent: a retry after a crash stores nothing twice."""
        digest = record_hash(raw)
        now = int(time.time() * 1000)
        packed = await asyncio.to_thread(zlib.compress, raw, 6)  # MiBs: not on the loop
        conn: Connection
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO email_record (sha256, size, data, stored_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (sha256) DO UPDATE SET stored_at=excluded.stored_at",
                digest,
                len(raw),
                packed,
                now,
            )
            await conn.execute(
                "INSERT INTO email_record_ref (portal, message_id, direction, sha256, stored_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (portal, message_id, sha256) DO NOTHING",
                portal,
                message_id,
                direction,
                digest,
                now,
            )
        return digest

    async def raw(self, sha256: str) -> bytes | None:
        """The record's bytes, checked against its hash; None if there is none (or expired)."""
        rows = await fetch_rows(
            self._db, "SELECT data FROM email_record WHERE sha256=$1", sha256.lower()
        )
        if not rows:
            return None
        try:
            raw = await asyncio.to_thread(zlib.decompress, bytes(rows[0]["data"]))
        except zlib.error as err:
            raise ValueError(f"record {sha256} cannot be read: the database was altered") from err
        if record_hash(raw) != sha256.lower():
            raise ValueError(f"record {sha256} does not match its hash: the database was altered")
        return raw

    async def find(self, key: str) -> list[RecordRef]:
        """References by hash or by Message-ID (``<id@domain>``), newest first."""
        column = "message_id" if key.startswith("<") else "sha256"
        rows = await fetch_rows(
            self._db,
            "SELECT portal, message_id, direction, sha256, stored_at FROM email_record_ref"
            f" WHERE {column}=$1 ORDER BY stored_at DESC",
            key if column == "message_id" else key.lower(),
        )
        return [
            RecordRef(r["portal"], r["message_id"], r["direction"], r["sha256"], r["stored_at"])
            for r in rows
        ]

    async def prune(self, keep_days: float, now_ms: int | None = None) -> int:
        """Delete references older than ``keep_days`` and the records left without one; the
        number of records deleted. ``keep_days`` 0 keeps everything."""
        if keep_days <= 0:
            return 0
        cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(
            keep_days * DAY_MS
        )
        conn: Connection
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM email_record_ref WHERE stored_at < $1", cutoff)
            orphans = await conn.fetch(
                "SELECT sha256 FROM email_record r WHERE NOT EXISTS"
                " (SELECT 1 FROM email_record_ref f WHERE f.sha256 = r.sha256)"
            )
            await conn.execute(  # one statement: a record referenced meanwhile stays
                "DELETE FROM email_record WHERE NOT EXISTS"
                " (SELECT 1 FROM email_record_ref f WHERE f.sha256 = email_record.sha256)"
            )
        return len(orphans)


async def prune_forever(
    records: Records,
    keep_days: float,
    log: logging.Logger,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    interval: float = PRUNE_INTERVAL_SECONDS,
) -> None:
    """The connector's housekeeping: prune now and every ``interval``; a failure (the database
    away) is logged and tried again next time."""
    while True:
        try:
            deleted = await records.prune(keep_days)
        except Exception as err:
            log.warning("Pruning mail records failed, trying again in %.0f s: %s", interval, err)
        else:
            if deleted:
                log.info("Deleted %d mail records older than %s days", deleted, keep_days)
        await sleep(interval)
