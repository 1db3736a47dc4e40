"""Version 2: the remote inbox (network → Matrix events stored before they are acknowledged),
and dead letters that say which network and portal they belong to."""

from __future__ import annotations

from mautrix.util.async_db import Connection, Scheme

from .columns import serial_pk

REMOTE_INBOX = """
    CREATE TABLE remote_inbox (
        id          {serial},
        network     TEXT    NOT NULL,
        portal_id   TEXT    NOT NULL,
        receiver    TEXT    NOT NULL DEFAULT '',
        login_id    TEXT    NOT NULL DEFAULT '',
        kind        TEXT    NOT NULL,
        dedupe_id   TEXT,
        payload     TEXT    NOT NULL,
        received_at BIGINT  NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        UNIQUE (network, portal_id, receiver, dedupe_id)
    )
"""
DEAD_LETTER_COLUMNS = (
    # NULL network: a Matrix event that could not reach its network (an inbox row).
    "ALTER TABLE dead_letter ADD COLUMN network TEXT",
    "ALTER TABLE dead_letter ADD COLUMN portal_id TEXT",
    "ALTER TABLE dead_letter ADD COLUMN receiver TEXT",
    "ALTER TABLE dead_letter ADD COLUMN login_id TEXT",
    "ALTER TABLE dead_letter ADD COLUMN dedupe_id TEXT",
)


async def upgrade(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(REMOTE_INBOX.format(serial=serial_pk(scheme)))
    for statement in DEAD_LETTER_COLUMNS:
        await conn.execute(statement)
