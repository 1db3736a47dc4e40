"""Version 3: ``kv`` rows say when they were last written (``updated_at``, ms since the epoch),
so that housekeeping can delete connector markers nobody wrote for a long time."""

from __future__ import annotations

import time

from mautrix.util.async_db import Connection, Scheme

KV_UPDATED_AT = "ALTER TABLE kv ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0"
KV_UPDATED_AT_INDEX = "CREATE INDEX kv_updated_at_idx ON kv (updated_at)"


async def upgrade(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(KV_UPDATED_AT)
    # Rows written before this version count from the upgrade: their retention starts now.
    await conn.execute("UPDATE kv SET updated_at=$1", int(time.time() * 1000))
    await conn.execute(KV_UPDATED_AT_INDEX)
