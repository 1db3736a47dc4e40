"""The shared portal store: every remote chat, person, login and message mapped to Matrix.

One :class:`Store` wraps one database and is shared by the core and all connectors; each
connector receives a :class:`NetworkStore`, a view that only sees its own network's rows. SQL
uses ``$n`` placeholders so the same text runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mautrix.util.async_db import Database

from bridge.core.ids import (
    LoginID,
    NetworkID,
    PartID,
    PortalKey,
    RemoteChatID,
    RemoteMessageID,
    RemoteUserID,
)

from .db import open_database
from .dead_letters import DeadLetterStore
from .login_secrets import Sealer, has_plaintext_secret, open_metadata, seal_metadata
from .matrix_inbox import MatrixInbox
from .models import (
    FIRST_PART,
    BridgeUser,
    Ghost,
    Login,
    Message,
    Portal,
    Reaction,
)
from .network_store import NetworkStore
from .remote_inbox import RemoteInboxStore
from .rows import Row
from .store_base import dump_json, load_json, now_ms

__all__ = ["NetworkStore", "Store"]

_log = logging.getLogger("pontis.store")


_PORTAL_COLUMNS = (
    "network, remote_id, receiver, mxid, name, topic, avatar_mxc, is_direct, relay_login, metadata"
)
_GHOST_COLUMNS = "network, remote_id, mxid, name, avatar_mxc, avatar_id, metadata"
_LOGIN_COLUMNS = "network, login_id, user_mxid, remote_name, metadata"
_MESSAGE_COLUMNS = (
    "id, network, portal_id, receiver, remote_id, part_id, mxid, room_id, sender_id, timestamp, "
    "thread_root_id, reply_to_id, edit_count, metadata"
)
_REACTION_COLUMNS = (
    "network, portal_id, receiver, message_id, part_id, sender_id, emoji, mxid, room_id, "
    "timestamp, metadata"
)


def _portal(row: Row) -> Portal:
    return Portal(
        network=NetworkID(row["network"]),
        remote_id=RemoteChatID(row["remote_id"]),
        receiver=LoginID(row["receiver"]),
        mxid=row["mxid"],
        name=row["name"],
        topic=row["topic"],
        avatar_mxc=row["avatar_mxc"],
        is_direct=bool(row["is_direct"]),
        relay_login=LoginID(row["relay_login"]) if row["relay_login"] is not None else None,
        metadata=load_json(row["metadata"]),
    )


def _ghost(row: Row) -> Ghost:
    return Ghost(
        network=NetworkID(row["network"]),
        remote_id=RemoteUserID(row["remote_id"]),
        mxid=row["mxid"],
        name=row["name"],
        avatar_mxc=row["avatar_mxc"],
        avatar_id=row["avatar_id"],
        metadata=load_json(row["metadata"]),
    )


def _login(row: Row) -> Login:
    return Login(
        network=NetworkID(row["network"]),
        login_id=LoginID(row["login_id"]),
        user_mxid=row["user_mxid"],
        remote_name=row["remote_name"],
        metadata=load_json(row["metadata"]),
    )


def _message(row: Row) -> Message:
    return Message(
        id=row["id"],
        network=NetworkID(row["network"]),
        portal_id=RemoteChatID(row["portal_id"]),
        receiver=LoginID(row["receiver"]),
        remote_id=RemoteMessageID(row["remote_id"]),
        part_id=PartID(row["part_id"]),
        mxid=row["mxid"],
        room_id=row["room_id"],
        sender_id=row["sender_id"],
        timestamp=row["timestamp"],
        thread_root_id=row["thread_root_id"],
        reply_to_id=row["reply_to_id"],
        edit_count=row["edit_count"],
        metadata=load_json(row["metadata"]),
    )


def _reaction(row: Row) -> Reaction:
    return Reaction(
        network=NetworkID(row["network"]),
        portal_id=RemoteChatID(row["portal_id"]),
        receiver=LoginID(row["receiver"]),
        message_id=RemoteMessageID(row["message_id"]),
        part_id=PartID(row["part_id"]),
        sender_id=row["sender_id"],
        emoji=row["emoji"],
        mxid=row["mxid"],
        room_id=row["room_id"],
        timestamp=row["timestamp"],
        metadata=load_json(row["metadata"]),
    )


class Store(MatrixInbox):
    """All shared tables of one database. Safe to share between tasks.

    ``clock`` returns milliseconds since the epoch; tests replace it.
    """

    def __init__(self, db: Database, *, clock: Callable[[], int] = now_ms) -> None:
        super().__init__(db, clock=clock)
        self.remote_inbox = RemoteInboxStore(db, clock)
        self.dead_letters = DeadLetterStore(db, clock)
        self.secrets: Sealer | None = None
        """Seals the secrets in logins' metadata; set when a pickle key is loaded."""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        log: logging.Logger | None = None,
        db_args: dict[str, Any] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> Store:
        """Open ``url`` (see :func:`~bridge.portal.db.open_database`), migrating if needed."""
        return cls(await open_database(url, log=log, db_args=db_args), clock=clock)

    async def close(self) -> None:
        await self._db.stop()

    # --- portals ---------------------------------------------------------------------------

    async def get_portal(self, key: PortalKey) -> Portal | None:
        row = await self._fetchrow(
            f"SELECT {_PORTAL_COLUMNS} FROM portal"
            " WHERE network=$1 AND remote_id=$2 AND receiver=$3",
            key.network,
            key.remote_id,
            key.receiver,
        )
        return _portal(row) if row else None

    async def get_portal_by_mxid(self, room_id: str) -> Portal | None:
        row = await self._fetchrow(f"SELECT {_PORTAL_COLUMNS} FROM portal WHERE mxid=$1", room_id)
        return _portal(row) if row else None

    async def save_portal(self, p: Portal) -> None:
        """Insert or update ``p`` by its key."""
        await self._db.execute(
            f"INSERT INTO portal ({_PORTAL_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (network, remote_id, receiver) DO UPDATE SET"
            " mxid=excluded.mxid, name=excluded.name, topic=excluded.topic,"
            " avatar_mxc=excluded.avatar_mxc, is_direct=excluded.is_direct,"
            " relay_login=excluded.relay_login, metadata=excluded.metadata",
            p.network,
            p.remote_id,
            p.receiver,
            p.mxid,
            p.name,
            p.topic,
            p.avatar_mxc,
            p.is_direct,
            p.relay_login,
            dump_json(p.metadata),
        )

    async def delete_portal(self, key: PortalKey) -> None:
        """Forget the portal together with its message and reaction mappings."""
        args = (key.network, key.remote_id, key.receiver)
        async with self._transaction() as conn:
            await conn.execute(
                "DELETE FROM reaction WHERE network=$1 AND portal_id=$2 AND receiver=$3", *args
            )
            await conn.execute(
                "DELETE FROM message WHERE network=$1 AND portal_id=$2 AND receiver=$3", *args
            )
            await conn.execute(
                "DELETE FROM portal WHERE network=$1 AND remote_id=$2 AND receiver=$3", *args
            )
            await conn.execute(
                "DELETE FROM user_portal WHERE network=$1 AND portal_id=$2 AND receiver=$3", *args
            )

    async def add_portal_user(self, user_mxid: str, key: PortalKey) -> None:
        """Remember that the Matrix user ``user_mxid`` belongs in the portal ``key``."""
        await self._db.execute(
            "INSERT INTO user_portal (user_mxid, network, portal_id, receiver)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            user_mxid,
            key.network,
            key.remote_id,
            key.receiver,
        )

    async def portal_users(self) -> dict[PortalKey, list[str]]:
        """Every portal's Matrix users (as :meth:`add_portal_user` recorded them)."""
        users: dict[PortalKey, list[str]] = {}
        for row in await self._fetch(
            "SELECT user_mxid, network, portal_id, receiver FROM user_portal ORDER BY user_mxid"
        ):
            key = PortalKey(row["network"], row["portal_id"], row["receiver"])
            users.setdefault(key, []).append(row["user_mxid"])
        return users

    async def list_portals_for_user(self, user_mxid: str) -> list[Portal]:
        columns = ", ".join(f"p.{c.strip()}" for c in _PORTAL_COLUMNS.split(","))
        rows = await self._fetch(
            f"SELECT {columns} FROM portal p JOIN user_portal u ON u.network = p.network"
            " AND u.portal_id = p.remote_id AND u.receiver = p.receiver"
            " WHERE u.user_mxid = $1 ORDER BY p.network, p.remote_id",
            user_mxid,
        )
        return [_portal(row) for row in rows]

    async def list_portals(self, network: NetworkID | None = None) -> list[Portal]:
        if network is None:
            rows = await self._fetch(
                f"SELECT {_PORTAL_COLUMNS} FROM portal ORDER BY network, remote_id, receiver"
            )
        else:
            rows = await self._fetch(
                f"SELECT {_PORTAL_COLUMNS} FROM portal WHERE network=$1"
                " ORDER BY remote_id, receiver",
                network,
            )
        return [_portal(row) for row in rows]

    async def count_portals(self, network: NetworkID | None = None) -> int:
        if network is None:
            return int(await self._fetchval("SELECT COUNT(*) FROM portal"))
        return int(await self._fetchval("SELECT COUNT(*) FROM portal WHERE network=$1", network))

    # --- ghosts ----------------------------------------------------------------------------

    async def get_ghost(self, network: NetworkID, remote_id: RemoteUserID) -> Ghost | None:
        row = await self._fetchrow(
            f"SELECT {_GHOST_COLUMNS} FROM ghost WHERE network=$1 AND remote_id=$2",
            network,
            remote_id,
        )
        return _ghost(row) if row else None

    async def get_ghost_by_mxid(self, mxid: str) -> Ghost | None:
        row = await self._fetchrow(f"SELECT {_GHOST_COLUMNS} FROM ghost WHERE mxid=$1", mxid)
        return _ghost(row) if row else None

    async def save_ghost(self, g: Ghost) -> None:
        """Insert or update ``g`` by (network, remote_id)."""
        await self._db.execute(
            f"INSERT INTO ghost ({_GHOST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (network, remote_id) DO UPDATE SET"
            " mxid=excluded.mxid, name=excluded.name, avatar_mxc=excluded.avatar_mxc,"
            " avatar_id=excluded.avatar_id, metadata=excluded.metadata",
            g.network,
            g.remote_id,
            g.mxid,
            g.name,
            g.avatar_mxc,
            g.avatar_id,
            dump_json(g.metadata),
        )

    async def count_ghosts(self, network: NetworkID | None = None) -> int:
        if network is None:
            return int(await self._fetchval("SELECT COUNT(*) FROM ghost"))
        return int(await self._fetchval("SELECT COUNT(*) FROM ghost WHERE network=$1", network))

    # --- logins ----------------------------------------------------------------------------

    async def get_login(self, network: NetworkID, login_id: LoginID) -> Login | None:
        row = await self._fetchrow(
            f"SELECT {_LOGIN_COLUMNS} FROM login WHERE network=$1 AND login_id=$2",
            network,
            login_id,
        )
        return self._login(row) if row else None

    async def list_logins(
        self, network: NetworkID | None = None, user_mxid: str | None = None
    ) -> list[Login]:
        """Logins, optionally only of one network and/or one Matrix user."""
        conditions: list[str] = []
        args: list[str] = []
        if network is not None:
            args.append(network)
            conditions.append(f"network=${len(args)}")
        if user_mxid is not None:
            args.append(user_mxid)
            conditions.append(f"user_mxid=${len(args)}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._fetch(
            f"SELECT {_LOGIN_COLUMNS} FROM login{where} ORDER BY network, login_id", *args
        )
        return [self._login(row) for row in rows]

    def _login(self, row: Row) -> Login:
        return self._login_opened(_login(row))

    def _login_opened(self, login: Login) -> Login:
        login.metadata, problems = open_metadata(
            self.secrets, login.network, login.login_id, login.metadata
        )
        for problem in problems:
            _log.error("%s; its user must log in again", problem)
        return login

    async def seal_login_secrets(self) -> int:
        """Seal the secrets of logins written before a pickle key was set; returns how many
        logins were rewritten."""
        sealed = 0
        rows = await self._fetch(f"SELECT {_LOGIN_COLUMNS} FROM login")
        for login in map(_login, rows):  # as stored: sealed values still sealed
            if has_plaintext_secret(login.metadata):
                await self.save_login(self._login_opened(login))
                sealed += 1
        return sealed

    async def save_login(self, login: Login) -> None:
        """Insert or update ``login`` by (network, login_id)."""
        await self._db.execute(
            f"INSERT INTO login ({_LOGIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (network, login_id) DO UPDATE SET"
            " user_mxid=excluded.user_mxid, remote_name=excluded.remote_name,"
            " metadata=excluded.metadata",
            login.network,
            login.login_id,
            login.user_mxid,
            login.remote_name,
            dump_json(
                login.metadata
                if self.secrets is None
                else seal_metadata(self.secrets, login.network, login.login_id, login.metadata)
            ),
        )

    async def delete_login(self, network: NetworkID, login_id: LoginID) -> None:
        await self._db.execute(
            "DELETE FROM login WHERE network=$1 AND login_id=$2", network, login_id
        )

    # --- bridge users ----------------------------------------------------------------------

    async def get_user(self, mxid: str) -> BridgeUser | None:
        row = await self._fetchrow(
            "SELECT mxid, management_room FROM bridge_user WHERE mxid=$1", mxid
        )
        return BridgeUser(row["mxid"], row["management_room"]) if row else None

    async def get_user_by_management_room(self, room_id: str) -> BridgeUser | None:
        row = await self._fetchrow(
            "SELECT mxid, management_room FROM bridge_user WHERE management_room=$1", room_id
        )
        return BridgeUser(row["mxid"], row["management_room"]) if row else None

    async def save_user(self, u: BridgeUser) -> None:
        await self._db.execute(
            "INSERT INTO bridge_user (mxid, management_room) VALUES ($1, $2)"
            " ON CONFLICT (mxid) DO UPDATE SET management_room=excluded.management_room",
            u.mxid,
            u.management_room,
        )

    # --- messages --------------------------------------------------------------------------

    async def add_message(self, m: Message) -> bool:
        """Record a mapping; False (and nothing changed) if the remote part or mxid is known.

        On success ``m.id`` is set to the new row id.
        """
        row_id = await self._fetchval(
            "INSERT INTO message (network, portal_id, receiver, remote_id, part_id, mxid,"
            " room_id, sender_id, timestamp, thread_root_id, reply_to_id, edit_count, metadata)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            " ON CONFLICT DO NOTHING RETURNING id",
            m.network,
            m.portal_id,
            m.receiver,
            m.remote_id,
            m.part_id,
            m.mxid,
            m.room_id,
            m.sender_id,
            m.timestamp,
            m.thread_root_id,
            m.reply_to_id,
            m.edit_count,
            dump_json(m.metadata),
        )
        if row_id is None:
            return False
        m.id = int(row_id)
        return True

    async def get_message_by_mxid(self, mxid: str) -> Message | None:
        row = await self._fetchrow(f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE mxid=$1", mxid)
        return _message(row) if row else None

    async def get_message_parts(self, key: PortalKey, remote_id: RemoteMessageID) -> list[Message]:
        """All parts of a remote message, the first part (``""``) first."""
        rows = await self._fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM message"
            " WHERE network=$1 AND portal_id=$2 AND receiver=$3 AND remote_id=$4",
            key.network,
            key.remote_id,
            key.receiver,
            remote_id,
        )
        # Sorted here: collations differ between engines, code point order does not.
        return sorted((_message(row) for row in rows), key=lambda m: m.part_id)

    async def get_message(
        self, key: PortalKey, remote_id: RemoteMessageID, part_id: PartID = FIRST_PART
    ) -> Message | None:
        row = await self._fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE network=$1 AND portal_id=$2"
            " AND receiver=$3 AND remote_id=$4 AND part_id=$5",
            key.network,
            key.remote_id,
            key.receiver,
            remote_id,
            part_id,
        )
        return _message(row) if row else None

    async def get_last_message(self, key: PortalKey) -> Message | None:
        """The most recently stored message part of the portal."""
        row = await self._fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM message"
            " WHERE network=$1 AND portal_id=$2 AND receiver=$3 ORDER BY id DESC LIMIT 1",
            key.network,
            key.remote_id,
            key.receiver,
        )
        return _message(row) if row else None

    async def delete_message_parts(self, key: PortalKey, remote_id: RemoteMessageID) -> None:
        """Forget every part of a remote message and the reactions on it."""
        args = (key.network, key.remote_id, key.receiver, remote_id)
        async with self._transaction() as conn:
            await conn.execute(
                "DELETE FROM reaction WHERE network=$1 AND portal_id=$2 AND receiver=$3"
                " AND message_id=$4",
                *args,
            )
            await conn.execute(
                "DELETE FROM message WHERE network=$1 AND portal_id=$2 AND receiver=$3"
                " AND remote_id=$4",
                *args,
            )

    async def bump_edit_count(self, mxid: str) -> None:
        await self._db.execute("UPDATE message SET edit_count=edit_count+1 WHERE mxid=$1", mxid)

    # --- reactions -------------------------------------------------------------------------

    async def add_reaction(self, r: Reaction) -> bool:
        """Record a reaction; False (and nothing changed) if it or its mxid is already known."""
        inserted = await self._fetchval(
            f"INSERT INTO reaction ({_REACTION_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT DO NOTHING RETURNING mxid",
            r.network,
            r.portal_id,
            r.receiver,
            r.message_id,
            r.part_id,
            r.sender_id,
            r.emoji,
            r.mxid,
            r.room_id,
            r.timestamp,
            dump_json(r.metadata),
        )
        return inserted is not None

    async def get_reaction(
        self,
        key: PortalKey,
        message_id: RemoteMessageID,
        part_id: PartID,
        sender_id: str,
        emoji: str,
    ) -> Reaction | None:
        row = await self._fetchrow(
            f"SELECT {_REACTION_COLUMNS} FROM reaction WHERE network=$1 AND portal_id=$2"
            " AND receiver=$3 AND message_id=$4 AND part_id=$5 AND sender_id=$6 AND emoji=$7",
            key.network,
            key.remote_id,
            key.receiver,
            message_id,
            part_id,
            sender_id,
            emoji,
        )
        return _reaction(row) if row else None

    async def get_reaction_by_mxid(self, mxid: str) -> Reaction | None:
        row = await self._fetchrow(f"SELECT {_REACTION_COLUMNS} FROM reaction WHERE mxid=$1", mxid)
        return _reaction(row) if row else None

    async def list_reactions(
        self, key: PortalKey, message_id: RemoteMessageID, sender_id: str | None = None
    ) -> list[Reaction]:
        """Reactions on any part of a message, optionally only one sender's, oldest first."""
        query = (
            f"SELECT {_REACTION_COLUMNS} FROM reaction"
            " WHERE network=$1 AND portal_id=$2 AND receiver=$3 AND message_id=$4"
        )
        args: list[str] = [key.network, key.remote_id, key.receiver, message_id]
        if sender_id is not None:
            query += " AND sender_id=$5"
            args.append(sender_id)
        rows = await self._fetch(query + " ORDER BY timestamp", *args)
        return [_reaction(row) for row in rows]

    async def delete_reaction(self, mxid: str) -> None:
        await self._db.execute("DELETE FROM reaction WHERE mxid=$1", mxid)

    # --- key/value -------------------------------------------------------------------------

    async def kv_get(self, network: NetworkID, key: str) -> str | None:
        value = await self._fetchval(
            "SELECT value FROM kv WHERE network=$1 AND key=$2", network, key
        )
        return str(value) if value is not None else None

    async def kv_set(self, network: NetworkID, key: str, value: str) -> None:
        """Set ``key``; ``updated_at`` is when it was last written (housekeeping prunes
        connector markers by it, see :mod:`bridge.core.housekeeping`)."""
        await self._db.execute(
            "INSERT INTO kv (network, key, value, updated_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (network, key) DO UPDATE SET value=excluded.value,"
            " updated_at=excluded.updated_at",
            network,
            key,
            value,
            self._clock(),
        )

    async def kv_delete(self, network: NetworkID, key: str) -> None:
        await self._db.execute("DELETE FROM kv WHERE network=$1 AND key=$2", network, key)
