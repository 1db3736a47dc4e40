"""The XMPP connector's own tables (``xmpp_…``, migrated by ``xmpp_version``).

- ``xmpp_muc_archive``: per bridged MUC, the room's ``stanza-id`` (XEP-0359) of the last
  message the bridge took from it, and when. After any gap (reconnect, rejoin, restart) the
  catch-up asks the room's archive (XEP-0313) for what came after it (:mod:`bridge.xmpp.mam`).
- ``xmpp_hosted_occupant``: who is in each room the bridge hosts, so that XMPP occupants are
  still there after a restart and self-pings (XEP-0410) are answered only for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Connection, Database

from bridge.portal import connector_upgrade_table, fetch_rows, upgrade_connector_tables


async def _create_tables(conn: Connection) -> None:
    await conn.execute(
        """CREATE TABLE xmpp_muc_archive (
            room       TEXT   PRIMARY KEY,
            stanza_id  TEXT   NOT NULL,
            seen_at    BIGINT NOT NULL
        )"""
    )
    await conn.execute(
        """CREATE TABLE xmpp_hosted_occupant (
            room  TEXT NOT NULL,
            nick  TEXT NOT NULL,
            jid   TEXT NOT NULL,
            PRIMARY KEY (room, nick)
        )"""
    )


@dataclass(frozen=True, slots=True)
class ArchiveMark:
    """Where the bridge is in a MUC's archive: ``stanza_id`` is empty when only the time is
    known (the room was just bridged, or has no MAM and gives no stanza-ids)."""

    stanza_id: str
    seen_at: int
    """Milliseconds since the epoch."""


class XmppStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upgrade(self) -> None:
        table = connector_upgrade_table("xmpp")
        table.register(_create_tables, description="create the XMPP connector's tables")
        await upgrade_connector_tables(self._db, table)

    # --- MUC archives -------------------------------------------------------------------------

    async def archive_mark(self, room: str) -> ArchiveMark | None:
        rows = await fetch_rows(
            self._db, "SELECT stanza_id, seen_at FROM xmpp_muc_archive WHERE room=$1", room
        )
        return ArchiveMark(rows[0]["stanza_id"], int(rows[0]["seen_at"])) if rows else None

    async def set_archive_mark(self, room: str, mark: ArchiveMark) -> None:
        await self._db.execute(
            "INSERT INTO xmpp_muc_archive (room, stanza_id, seen_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (room) DO UPDATE SET stanza_id=excluded.stanza_id,"
            " seen_at=excluded.seen_at",
            room,
            mark.stanza_id,
            mark.seen_at,
        )

    # --- hosted rooms -------------------------------------------------------------------------

    async def hosted_occupants(self) -> dict[str, dict[str, str]]:
        """room → nick → occupant's full JID, for every hosted room."""
        rooms: dict[str, dict[str, str]] = {}
        for row in await fetch_rows(self._db, "SELECT room, nick, jid FROM xmpp_hosted_occupant"):
            rooms.setdefault(row["room"], {})[row["nick"]] = row["jid"]
        return rooms

    async def set_occupant(self, room: str, nick: str, jid: str) -> None:
        await self._db.execute(
            "INSERT INTO xmpp_hosted_occupant (room, nick, jid) VALUES ($1, $2, $3)"
            " ON CONFLICT (room, nick) DO UPDATE SET jid=excluded.jid",
            room,
            nick,
            jid,
        )

    async def remove_occupant(self, room: str, nick: str) -> None:
        await self._db.execute(
            "DELETE FROM xmpp_hosted_occupant WHERE room=$1 AND nick=$2", room, nick
        )
