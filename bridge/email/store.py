"""The email connector's own tables: who is in a conversation, and how mail threads.

The shared store already maps Message-IDs to Matrix events. Mail needs three more facts:

- ``email_participant``: the addresses a portal's mail goes to (people who wrote to it or
  were written to from it);
- ``email_mail``: the subject and ``References`` of every mail of a portal, so a reply from
  Matrix carries ``Re: <subject>`` and a complete ``References`` chain;
- ``email_dm``: the portal address of each (Matrix user, correspondent) direct chat.
"""

from __future__ import annotations

from mautrix.util.async_db import Connection, Database

from bridge.portal import connector_upgrade_table, fetch_rows, upgrade_connector_tables

MAX_REFERENCES = 20


async def _create_tables(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE email_participant (
            portal   TEXT NOT NULL,
            address  TEXT NOT NULL,
            PRIMARY KEY (portal, address)
        )"""
    )
    await conn.execute(
        """CREATE TABLE email_mail (
            portal      TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            subject     TEXT NOT NULL,
            refs        TEXT NOT NULL,
            PRIMARY KEY (portal, message_id)
        )"""
    )
    await conn.execute(
        """CREATE TABLE email_dm (
            user_mxid  TEXT NOT NULL,
            address    TEXT NOT NULL,
            portal     TEXT NOT NULL,
            PRIMARY KEY (user_mxid, address)
        )"""
    )


class EmailStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upgrade(self) -> None:
        table = connector_upgrade_table("email")
        table.register(_create_tables, description="create the email connector's tables")
        await upgrade_connector_tables(self._db, table)

    async def participants(self, portal: str) -> list[str]:
        rows = await fetch_rows(
            self._db,
            "SELECT address FROM email_participant WHERE portal=$1 ORDER BY address",
            portal,
        )
        return [row["address"] for row in rows]

    async def add_participant(self, portal: str, address: str) -> None:
        await self._db.execute(
            "INSERT INTO email_participant (portal, address) VALUES ($1, $2)"
            " ON CONFLICT (portal, address) DO NOTHING",
            portal,
            address,
        )

    async def remember_mail(
        self, portal: str, message_id: str, subject: str, references: list[str]
    ) -> None:
        await self._db.execute(
            "INSERT INTO email_mail (portal, message_id, subject, refs) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (portal, message_id) DO NOTHING",
            portal,
            message_id,
            subject,
            " ".join(references[-MAX_REFERENCES:]),
        )

    async def mail(self, portal: str, message_id: str) -> tuple[str, list[str]] | None:
        """(subject, references) of a mail of ``portal``, if the bridge has seen it."""
        rows = await fetch_rows(
            self._db,
            "SELECT subject, refs FROM email_mail WHERE portal=$1 AND message_id=$2",
            portal,
            message_id,
        )
        if not rows:
            return None
        return rows[0]["subject"], rows[0]["refs"].split()

    async def dm_portal(self, user_mxid: str, address: str) -> str | None:
        rows = await fetch_rows(
            self._db,
            "SELECT portal FROM email_dm WHERE user_mxid=$1 AND address=$2",
            user_mxid,
            address,
        )
        return str(rows[0]["portal"]) if rows else None

    async def set_dm_portal(self, user_mxid: str, address: str, portal: str) -> None:
        await self._db.execute(
            "INSERT INTO email_dm (user_mxid, address, portal) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_mxid, address) DO UPDATE SET portal=excluded.portal",
            user_mxid,
            address,
            portal,
        )
