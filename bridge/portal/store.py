"""The shared portal store: every remote chat, person, login and message mapped to Matrix.

One :class:`Store` wraps one database and is shared by the core and all connectors; each
connector receives a :class:`NetworkStore`, a view that only sees its own network's rows. SQL
uses ``$n`` placeholders so the same text runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from mautrix.util.async_db import Connection, Database, Scheme

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
from .models import (
    FIRST_PART,
    NO_RECEIVER,
    BridgeUser,
    DeadLetter,
    Ghost,
    InboxItem,
    InboxRow,
    Login,
    Message,
    Portal,
    Reaction,
)
from .remote_inbox import RemoteInboxStore
from .rows import Row, fetch_rows

_log = logging.getLogger("pontis.store")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    loaded = json.loads(value)
    return loaded if isinstance(loaded, dict) else {}


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
        metadata=_load(row["metadata"]),
    )


def _ghost(row: Row) -> Ghost:
    return Ghost(
        network=NetworkID(row["network"]),
        remote_id=RemoteUserID(row["remote_id"]),
        mxid=row["mxid"],
        name=row["name"],
        avatar_mxc=row["avatar_mxc"],
        avatar_id=row["avatar_id"],
        metadata=_load(row["metadata"]),
    )


def _login(row: Row) -> Login:
    return Login(
        network=NetworkID(row["network"]),
        login_id=LoginID(row["login_id"]),
        user_mxid=row["user_mxid"],
        remote_name=row["remote_name"],
        metadata=_load(row["metadata"]),
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
        metadata=_load(row["metadata"]),
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
        metadata=_load(row["metadata"]),
    )


def _inbox_row(row: Row) -> InboxRow:
    return InboxRow(
        id=row["id"],
        txn_id=row["txn_id"],
        kind=row["kind"],
        event_id=row["event_id"],
        room_id=row["room_id"],
        payload=_load(row["payload"]),
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
        payload=_load(row["payload"]),
        error=row["error"],
        attempts=row["attempts"],
        parked_at=row["parked_at"],
    )


class Store:
    """All shared tables of one database. Safe to share between tasks.

    ``clock`` returns milliseconds since the epoch; tests replace it.
    """

    def __init__(self, db: Database, *, clock: Callable[[], int] = _now_ms) -> None:
        self._db = db
        self._clock = clock
        self._sqlite = db.scheme == Scheme.SQLITE
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
        clock: Callable[[], int] = _now_ms,
    ) -> Store:
        """Open ``url`` (see :func:`~bridge.portal.db.open_database`), migrating if needed."""
        return cls(await open_database(url, log=log, db_args=db_args), clock=clock)

    async def close(self) -> None:
        await self._db.stop()

    @property
    def database(self) -> Database:
        """The underlying database, for connector-private tables."""
        return self._db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        """One connection in one transaction; nested store calls in the task share it."""
        conn: Connection
        async with self._db.acquire() as conn, conn.transaction():
            yield conn

    async def _fetch(self, query: str, *args: Any) -> list[Row]:
        return await fetch_rows(self._db, query, *args)

    async def _fetchrow(self, query: str, *args: Any) -> Row | None:
        rows = await self._fetch(query, *args)
        return rows[0] if rows else None

    async def _fetchval(self, query: str, *args: Any) -> Any:
        rows = await self._fetch(query, *args)
        return rows[0][0] if rows else None

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
            _dump(p.metadata),
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
            _dump(g.metadata),
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
            _dump(
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
            _dump(m.metadata),
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
            _dump(r.metadata),
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

    # --- inbox -----------------------------------------------------------------------------

    async def store_transaction(self, txn_id: str, items: list[InboxItem]) -> list[InboxRow] | None:
        """Durably accept one appservice transaction, all or nothing.

        Returns None (storing nothing) if ``txn_id`` was accepted before; otherwise the rows
        actually inserted, in order, leaving out events whose ``event_id`` is already in the
        inbox. Database errors propagate and leave nothing behind.
        """
        now = self._clock()
        # Serialise first, so a bad payload fails before the database is touched.
        payloads = [_dump(item.payload) for item in items]
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


class NetworkStore:
    """The store as one connector sees it: only rows of its own network.

    Connectors read through this view; the core writes portals, ghosts and messages. Private
    tables go in :attr:`database` with their own migrations
    (:func:`bridge.portal.db.upgrade_connector_tables`).
    """

    def __init__(
        self,
        store: Store,
        network: NetworkID,
        find_portal: Callable[[PortalKey], Awaitable[Portal | None]] | None = None,
    ) -> None:
        self._store = store
        self._network = network
        self._find_portal = find_portal or store.get_portal

    @property
    def network(self) -> NetworkID:
        return self._network

    @property
    def database(self) -> Database:
        return self._store.database

    async def get_portal(
        self, remote_id: RemoteChatID, receiver: LoginID = NO_RECEIVER
    ) -> Portal | None:
        """The portal, from the core's portal cache when the bridge runs: a copy, so the
        connector never sees the core change it mid-update."""
        portal = await self._find_portal(PortalKey(self._network, remote_id, receiver))
        if portal is None:
            return None
        return dataclasses.replace(portal, metadata=copy.deepcopy(portal.metadata))

    async def list_portals(self) -> list[Portal]:
        return await self._store.list_portals(self._network)

    async def get_ghost(self, remote_id: RemoteUserID) -> Ghost | None:
        return await self._store.get_ghost(self._network, remote_id)

    async def list_logins(self) -> list[Login]:
        return await self._store.list_logins(network=self._network)

    async def get_login(self, login_id: LoginID) -> Login | None:
        return await self._store.get_login(self._network, login_id)

    async def save_login(self, login: Login) -> None:
        """Save ``login`` (e.g. refreshed tokens in its metadata); it must be of this network."""
        if login.network != self._network:
            raise ValueError(
                f"login {login.login_id!r} belongs to network {login.network!r},"
                f" not {self._network!r}"
            )
        await self._store.save_login(login)

    async def get_message(
        self,
        portal_remote_id: RemoteChatID,
        remote_id: RemoteMessageID,
        part_id: PartID = FIRST_PART,
        receiver: LoginID = NO_RECEIVER,
    ) -> Message | None:
        key = PortalKey(self._network, portal_remote_id, receiver)
        return await self._store.get_message(key, remote_id, part_id)

    async def list_reactions(
        self, portal: PortalKey, message_id: RemoteMessageID, sender_id: str | None = None
    ) -> list[Reaction]:
        if portal.network != self._network:
            raise ValueError(f"portal {portal} is not of network {self._network!r}")
        return await self._store.list_reactions(portal, message_id, sender_id)

    async def kv_get(self, key: str) -> str | None:
        return await self._store.kv_get(self._network, key)

    async def kv_set(self, key: str, value: str) -> None:
        await self._store.kv_set(self._network, key, value)

    async def kv_delete(self, key: str) -> None:
        await self._store.kv_delete(self._network, key)
