"""Version 4: the audit log, one row per admin action or policy refusal (who, what, when, from
where), pruned after ``bridge.retention.audit_days``."""

from __future__ import annotations

from mautrix.util.async_db import Connection, Scheme

from .columns import serial_pk

AUDIT = """
    CREATE TABLE audit (
        id      {serial},
        at      BIGINT NOT NULL,
        actor   TEXT   NOT NULL,
        action  TEXT   NOT NULL,
        target  TEXT   NOT NULL DEFAULT '',
        outcome TEXT   NOT NULL,
        origin  TEXT   NOT NULL DEFAULT '',
        detail  TEXT   NOT NULL DEFAULT ''
    )
"""
AUDIT_AT_INDEX = "CREATE INDEX audit_at_idx ON audit (at)"


async def upgrade(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(AUDIT.format(serial=serial_pk(scheme)))
    await conn.execute(AUDIT_AT_INDEX)
