"""The email connector's own tables: who receives a portal's mail, and how mail threads.

The shared store already maps Message-IDs to Matrix events. Mail needs more facts:

- ``email_contact``: the people a portal's *new* conversations go to, chosen by the room's
  members (``contacts add``), an invited ghost, or the correspondent of a direct chat. Writing
  to a portal does not make anyone a contact: a published address must not mail every
  citizen's answer to every other citizen.
- ``email_mail``: per mail of a portal, the subject and ``References`` (so a reply from Matrix
  carries ``Re: <subject>`` and a complete chain) and whom a reply goes to: ``reply_to`` and
  ``reply_cc`` as a mail client's "reply all" would fill them (empty for automatic mail), and
  for mail the bridge sent, ``sent_to`` (the envelope recipients, which a bounce must name)
  and ``separately`` (sent as one copy per contact: answers go out the same way).
- ``email_bounced``: addresses whose mail bounced, per portal; they receive nothing more from
  that portal until a member adds them again.
- ``email_dm``: the portal address of each (Matrix user, correspondent) direct chat.
- ``email_sent_copy``: which recipients a mail from Matrix was already handed to the relay for,
  so that a retry of the message (the relay or the store went away half-way) sends only the
  copies still missing. Rows older than :data:`SENT_COPY_DAYS` are pruned.
- ``email_secret``: secrets the bridge generated for itself (the key of the bounce addresses,
  :mod:`bridge.email.verp`); generated once, on first use, and shared by every instance.

The raw records of sent and received mail are in :mod:`bridge.email.records`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mautrix.util.async_db import Connection, Database, Scheme

from bridge.portal import connector_upgrade_table, fetch_rows, upgrade_connector_tables

MAX_REFERENCES = 20
SENT_COPY_DAYS = 7
"""How long the progress of a mail's copies is kept: far longer than any retry takes."""
MAX_CONTACTS = 500
"""Contacts of one portal: each new conversation is one mail per contact."""


@dataclass(slots=True)
class StoredMail:
    """What the bridge keeps of one mail of a portal (see the module docstring)."""

    subject: str
    references: list[str]
    reply_to: list[str] = field(default_factory=list)
    reply_cc: list[str] = field(default_factory=list)
    sent_to: list[str] = field(default_factory=list)
    separately: bool = False


@dataclass(slots=True)
class ContactRow:
    address: str
    bounced: str | None = None
    """Why mail to this address stopped (the bounce's diagnostic), or None."""


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


async def _contacts_and_records(conn: Connection, scheme: Scheme) -> None:
    """v2: participants become contacts (so nobody who received mail silently stops), mails
    keep their correspondents, bounces are marked, raw records are kept."""
    blob = "BLOB" if scheme == Scheme.SQLITE else "BYTEA"
    await conn.execute(
        """CREATE TABLE email_contact (
            portal    TEXT NOT NULL,
            address   TEXT NOT NULL,
            added_at  BIGINT NOT NULL,
            PRIMARY KEY (portal, address)
        )"""
    )
    await conn.execute(
        "INSERT INTO email_contact (portal, address, added_at)"
        " SELECT portal, address, 0 FROM email_participant"
    )
    await conn.execute("DROP TABLE email_participant")
    await conn.execute(
        """CREATE TABLE email_bounced (
            portal      TEXT NOT NULL,
            address     TEXT NOT NULL,
            reason      TEXT NOT NULL,
            bounced_at  BIGINT NOT NULL,
            PRIMARY KEY (portal, address)
        )"""
    )
    for column in ("reply_to", "reply_cc", "sent_to"):
        await conn.execute(f"ALTER TABLE email_mail ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
    await conn.execute(
        "ALTER TABLE email_mail ADD COLUMN separately BOOLEAN NOT NULL DEFAULT false"
    )
    await conn.execute(
        f"""CREATE TABLE email_record (
            sha256     TEXT PRIMARY KEY,
            size       BIGINT NOT NULL,
            data       {blob} NOT NULL,
            stored_at  BIGINT NOT NULL
        )"""
    )
    await conn.execute(
        """CREATE TABLE email_record_ref (
            portal      TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            direction   TEXT NOT NULL,
            sha256      TEXT NOT NULL,
            stored_at   BIGINT NOT NULL,
            PRIMARY KEY (portal, message_id, sha256)
        )"""
    )
    await conn.execute("CREATE INDEX email_record_ref_sha256 ON email_record_ref (sha256)")
    await conn.execute("CREATE INDEX email_record_ref_message ON email_record_ref (message_id)")


async def _sent_copies_and_secrets(conn: Connection) -> None:
    """v3: per-recipient progress of outgoing mail, and the bridge's own secrets."""
    await conn.execute(
        """CREATE TABLE email_sent_copy (
            portal      TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            address     TEXT NOT NULL,
            sent_at     BIGINT NOT NULL,
            PRIMARY KEY (portal, message_id, address)
        )"""
    )
    await conn.execute("CREATE INDEX email_sent_copy_sent_at ON email_sent_copy (sent_at)")
    await conn.execute(
        """CREATE TABLE email_secret (
            name   TEXT PRIMARY KEY,
            value  TEXT NOT NULL
        )"""
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _join(addresses: list[str]) -> str:
    return " ".join(dict.fromkeys(addresses))


class EmailStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def database(self) -> Database:
        return self._db

    async def upgrade(self) -> None:
        table = connector_upgrade_table("email")
        table.register(_create_tables, description="create the email connector's tables")
        table.register(_contacts_and_records, description="contacts, correspondents, records")
        table.register(_sent_copies_and_secrets, description="sent copies, secrets")
        await upgrade_connector_tables(self._db, table)

    # --- contacts and bounces -------------------------------------------------------------------

    async def contacts(self, portal: str) -> list[ContactRow]:
        """The portal's contacts, with the bounce that stopped mail to them, if any."""
        rows = await fetch_rows(
            self._db,
            "SELECT c.address, b.reason FROM email_contact c LEFT JOIN email_bounced b"
            " ON b.portal=c.portal AND b.address=c.address WHERE c.portal=$1 ORDER BY c.address",
            portal,
        )
        return [ContactRow(row["address"], row["reason"]) for row in rows]

    async def add_contact(self, portal: str, address: str) -> bool:
        """Add ``address`` (clearing a bounce mark: a member vouches for it); False if the
        portal has :data:`MAX_CONTACTS` already."""
        rows = await fetch_rows(
            self._db, "SELECT COUNT(*) AS n FROM email_contact WHERE portal=$1", portal
        )
        conn: Connection
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM email_bounced WHERE portal=$1 AND address=$2", portal, address
            )
            exists = await conn.fetchval(
                "SELECT 1 FROM email_contact WHERE portal=$1 AND address=$2", portal, address
            )
            if exists:
                return True
            if int(rows[0]["n"]) >= MAX_CONTACTS:
                return False
            await conn.execute(
                "INSERT INTO email_contact (portal, address, added_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (portal, address) DO NOTHING",
                portal,
                address,
                _now_ms(),
            )
        return True

    async def remove_contact(self, portal: str, address: str) -> bool:
        """Whether ``address`` was a contact of ``portal``."""
        conn: Connection
        async with self._db.acquire() as conn:
            exists = await conn.fetchval(
                "SELECT 1 FROM email_contact WHERE portal=$1 AND address=$2", portal, address
            )
            await conn.execute(
                "DELETE FROM email_contact WHERE portal=$1 AND address=$2", portal, address
            )
        return bool(exists)

    async def mark_bounced(self, portal: str, address: str, reason: str) -> None:
        await self._db.execute(
            "INSERT INTO email_bounced (portal, address, reason, bounced_at) VALUES ($1, $2, $3,"
            " $4) ON CONFLICT (portal, address) DO UPDATE SET reason=excluded.reason,"
            " bounced_at=excluded.bounced_at",
            portal,
            address,
            reason[:500],
            _now_ms(),
        )

    async def bounced(self, portal: str) -> set[str]:
        rows = await fetch_rows(
            self._db, "SELECT address FROM email_bounced WHERE portal=$1", portal
        )
        return {row["address"] for row in rows}

    # --- mails ----------------------------------------------------------------------------------

    async def remember_mail(
        self, portal: str, message_id: str, subject: str, references: list[str],
        *, reply_to: Sequence[str] = (), reply_cc: Sequence[str] = (),
        sent_to: Sequence[str] = (), separately: bool = False,
    ) -> None:  # fmt: skip
        """Keep what a reply to this mail needs; the first call for a mail wins (a retry after
        a crash gives the same values)."""
        await self._db.execute(
            "INSERT INTO email_mail (portal, message_id, subject, refs, reply_to, reply_cc,"
            " sent_to, separately) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (portal, message_id) DO NOTHING",
            portal,
            message_id,
            subject,
            " ".join(references[-MAX_REFERENCES:]),
            _join(list(reply_to)),
            _join(list(reply_cc)),
            _join(list(sent_to)),
            separately,
        )

    async def mail(self, portal: str, message_id: str) -> StoredMail | None:
        """A mail of ``portal``, if the bridge has seen it."""
        rows = await fetch_rows(
            self._db,
            "SELECT subject, refs, reply_to, reply_cc, sent_to, separately FROM email_mail"
            " WHERE portal=$1 AND message_id=$2",
            portal,
            message_id,
        )
        if not rows:
            return None
        row = rows[0]
        return StoredMail(
            subject=row["subject"],
            references=row["refs"].split(),
            reply_to=row["reply_to"].split(),
            reply_cc=row["reply_cc"].split(),
            sent_to=row["sent_to"].split(),
            separately=bool(row["separately"]),
        )

    # --- copies of outgoing mail ---------------------------------------------------------------

    async def sent_copies(self, portal: str, message_id: str) -> set[str]:
        """The recipients an earlier attempt already handed ``message_id`` to the relay for."""
        rows = await fetch_rows(
            self._db,
            "SELECT address FROM email_sent_copy WHERE portal=$1 AND message_id=$2",
            portal,
            message_id,
        )
        return {row["address"] for row in rows}

    async def copy_sent(self, portal: str, message_id: str, address: str) -> None:
        await self._db.execute(
            "INSERT INTO email_sent_copy (portal, message_id, address, sent_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (portal, message_id, address) DO NOTHING",
            portal,
            message_id,
            address,
            _now_ms(),
        )

    async def prune_sent_copies(self) -> None:
        """Forget the progress of mail sent more than :data:`SENT_COPY_DAYS` ago."""
        cutoff = _now_ms() - SENT_COPY_DAYS * 24 * 3600 * 1000
        await self._db.execute("DELETE FROM email_sent_copy WHERE sent_at < $1", cutoff)

    # --- secrets --------------------------------------------------------------------------------

    async def secret(self, name: str) -> bytes:
        """The secret called ``name``: 32 random bytes, generated on first use. Whichever
        instance writes first wins; every other reads that one."""
        await self._db.execute(
            "INSERT INTO email_secret (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            name,
            secrets.token_hex(32),
        )
        rows = await fetch_rows(self._db, "SELECT value FROM email_secret WHERE name=$1", name)
        return bytes.fromhex(rows[0]["value"])

    # --- direct chats ---------------------------------------------------------------------------

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
