"""Version 1: the whole latest schema, which a fresh database gets in one step.

When the schema changes, edit the statements here to the new latest shape *and* add a numbered
step that brings existing databases there; see ``migrations/__init__.py``.
"""

from __future__ import annotations

from mautrix.util.async_db import Connection, Scheme

from .columns import serial_pk
from .v02_remote_inbox import REMOTE_INBOX
from .v03_kv_written_at import KV_UPDATED_AT_INDEX
from .v04_audit import AUDIT, AUDIT_AT_INDEX


async def create_latest(conn: Connection, scheme: Scheme) -> None:
    serial = serial_pk(scheme)
    await conn.execute("""
        CREATE TABLE portal (
            network     TEXT    NOT NULL,
            remote_id   TEXT    NOT NULL,
            receiver    TEXT    NOT NULL DEFAULT '',
            mxid        TEXT    UNIQUE,
            name        TEXT,
            topic       TEXT,
            avatar_mxc  TEXT,
            is_direct   BOOLEAN NOT NULL DEFAULT false,
            relay_login TEXT,
            metadata    TEXT    NOT NULL DEFAULT '{}',
            PRIMARY KEY (network, remote_id, receiver)
        )
    """)
    await conn.execute("""
        CREATE TABLE ghost (
            network    TEXT NOT NULL,
            remote_id  TEXT NOT NULL,
            mxid       TEXT NOT NULL UNIQUE,
            name       TEXT,
            avatar_mxc TEXT,
            avatar_id  TEXT,
            metadata   TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (network, remote_id)
        )
    """)
    await conn.execute("""
        CREATE TABLE login (
            network     TEXT NOT NULL,
            login_id    TEXT NOT NULL,
            user_mxid   TEXT NOT NULL,
            remote_name TEXT,
            metadata    TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (network, login_id)
        )
    """)
    await conn.execute("CREATE INDEX login_user_mxid_idx ON login (user_mxid)")
    await conn.execute("""
        CREATE TABLE bridge_user (
            mxid            TEXT PRIMARY KEY,
            management_room TEXT
        )
    """)
    await conn.execute(
        "CREATE INDEX bridge_user_management_room_idx ON bridge_user (management_room)"
    )
    await conn.execute(f"""
        CREATE TABLE message (
            id             {serial},
            network        TEXT   NOT NULL,
            portal_id      TEXT   NOT NULL,
            receiver       TEXT   NOT NULL DEFAULT '',
            remote_id      TEXT   NOT NULL,
            part_id        TEXT   NOT NULL DEFAULT '',
            mxid           TEXT   NOT NULL UNIQUE,
            room_id        TEXT   NOT NULL,
            sender_id      TEXT   NOT NULL,
            timestamp      BIGINT NOT NULL DEFAULT 0,
            thread_root_id TEXT,
            reply_to_id    TEXT,
            edit_count     INTEGER NOT NULL DEFAULT 0,
            metadata       TEXT   NOT NULL DEFAULT '{{}}',
            UNIQUE (network, portal_id, receiver, remote_id, part_id)
        )
    """)
    await conn.execute("""
        CREATE TABLE reaction (
            network    TEXT   NOT NULL,
            portal_id  TEXT   NOT NULL,
            receiver   TEXT   NOT NULL DEFAULT '',
            message_id TEXT   NOT NULL,
            part_id    TEXT   NOT NULL DEFAULT '',
            sender_id  TEXT   NOT NULL,
            emoji      TEXT   NOT NULL,
            mxid       TEXT   NOT NULL UNIQUE,
            room_id    TEXT   NOT NULL,
            timestamp  BIGINT NOT NULL DEFAULT 0,
            metadata   TEXT   NOT NULL DEFAULT '{}',
            PRIMARY KEY (network, portal_id, receiver, message_id, part_id, sender_id, emoji)
        )
    """)
    await conn.execute("""
        CREATE TABLE as_transaction (
            txn_id      TEXT   PRIMARY KEY,
            received_at BIGINT NOT NULL
        )
    """)
    await conn.execute(
        "CREATE INDEX as_transaction_received_at_idx ON as_transaction (received_at)"
    )
    await conn.execute(f"""
        CREATE TABLE inbox (
            id          {serial},
            txn_id      TEXT    NOT NULL,
            kind        TEXT    NOT NULL,
            event_id    TEXT    UNIQUE,
            room_id     TEXT,
            payload     TEXT    NOT NULL,
            received_at BIGINT  NOT NULL,
            attempts    INTEGER NOT NULL DEFAULT 0,
            last_error  TEXT
        )
    """)
    await conn.execute(f"""
        CREATE TABLE dead_letter (
            id        {serial},
            kind      TEXT    NOT NULL,
            event_id  TEXT,
            room_id   TEXT,
            payload   TEXT    NOT NULL,
            error     TEXT    NOT NULL,
            attempts  INTEGER NOT NULL DEFAULT 0,
            parked_at BIGINT  NOT NULL,
            network   TEXT,
            portal_id TEXT,
            receiver  TEXT,
            login_id  TEXT,
            dedupe_id TEXT
        )
    """)
    await conn.execute("""
        CREATE TABLE user_portal (
            user_mxid TEXT NOT NULL,
            network   TEXT NOT NULL,
            portal_id TEXT NOT NULL,
            receiver  TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (user_mxid, network, portal_id, receiver)
        )
    """)
    await conn.execute("""
        CREATE TABLE kv (
            network    TEXT   NOT NULL,
            key        TEXT   NOT NULL,
            value      TEXT   NOT NULL,
            updated_at BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (network, key)
        )
    """)
    await conn.execute(KV_UPDATED_AT_INDEX)
    await conn.execute(REMOTE_INBOX.format(serial=serial))
    await conn.execute(AUDIT.format(serial=serial))
    await conn.execute(AUDIT_AT_INDEX)
