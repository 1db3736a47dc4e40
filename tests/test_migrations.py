"""Existing databases move to the new schema step by step, keeping their rows (both engines)."""

from __future__ import annotations

import json
import time

from mautrix.util.async_db import Database

from bridge.core.audit import AuditLog
from bridge.core.ids import NetworkID, PortalKey, RemoteChatID
from bridge.portal.audit import AuditStore
from bridge.portal.migrations import LATEST_VERSION
from bridge.portal.models import RemoteInput
from tests.store_fixtures import StoreTarget


async def back_to_version_3(db: Database) -> None:
    """Undo version 4: no audit log."""
    await db.execute("DROP TABLE audit")
    await db.execute("UPDATE pontis_version SET version=3")


async def back_to_version_2(db: Database) -> None:
    """Undo versions 4 and 3: ``kv`` without ``updated_at``."""
    await back_to_version_3(db)
    await db.execute("DROP INDEX kv_updated_at_idx")
    await db.execute("ALTER TABLE kv DROP COLUMN updated_at")
    await db.execute("UPDATE pontis_version SET version=2")


async def test_a_version_1_database_gains_the_remote_inbox(store_target: StoreTarget) -> None:
    store = await store_target.open()
    db = store.database
    # Back to version 1 as it was shipped: no remote inbox, dead letters without a network.
    await db.execute("DROP TABLE remote_inbox")
    for column in ("network", "portal_id", "receiver", "login_id", "dedupe_id"):
        await db.execute(f"ALTER TABLE dead_letter DROP COLUMN {column}")
    await back_to_version_2(db)
    await db.execute(
        "INSERT INTO dead_letter (kind, event_id, room_id, payload, error, attempts, parked_at)"
        " VALUES ('pdu', '$old', '!r:hub', $1, 'refused', 3, 5)",
        json.dumps({"type": "m.room.message"}),
    )
    await db.execute("UPDATE pontis_version SET version=1")
    await store.close()

    store = await store_target.open()
    try:
        assert await store.database.fetchval("SELECT version FROM pontis_version") == LATEST_VERSION
        (old,) = await store.list_dead_letters()
        assert (old.event_id, old.error, old.attempts) == ("$old", "refused", 3)
        assert await store.database.fetchval("SELECT network FROM dead_letter") is None
        key = PortalKey(NetworkID("xmpp"), RemoteChatID("a@b"))
        row = await store.remote_inbox.add(RemoteInput(portal=key, kind="m", payload={"x": 1}))
        assert row is not None and [r.id for r in await store.remote_inbox.pending()] == [row.id]
    finally:
        await store.close()


async def test_a_version_2_database_stamps_its_kv_rows_with_the_upgrade_time(
    store_target: StoreTarget,
) -> None:
    store = await store_target.open()
    await back_to_version_2(store.database)
    await store.database.execute(
        "INSERT INTO kv (network, key, value) VALUES ('xmpp', 'sid:room:1', 'm1')"
    )
    await store.close()

    before = int(time.time() * 1000)
    store = await store_target.open()
    try:
        assert await store.database.fetchval("SELECT version FROM pontis_version") == LATEST_VERSION
        # Retention of rows older than the column counts from the upgrade, not from 1970.
        stamped = await store.database.fetchval("SELECT updated_at FROM kv WHERE key='sid:room:1'")
        assert before <= stamped <= int(time.time() * 1000)
        assert await store.kv_get(NetworkID("xmpp"), "sid:room:1") == "m1"
    finally:
        await store.close()


async def test_a_version_3_database_gains_the_audit_log(store_target: StoreTarget) -> None:
    store = await store_target.open()
    await back_to_version_3(store.database)
    await store.kv_set(NetworkID("xmpp"), "sid:room:1", "m1")
    await store.close()

    store = await store_target.open()
    try:
        assert await store.database.fetchval("SELECT version FROM pontis_version") == LATEST_VERSION
        assert await store.kv_get(NetworkID("xmpp"), "sid:room:1") == "m1"
        entry = await AuditLog(store).record(
            actor="cli:root", action="pending.park", target="n1", outcome="ok", origin="cli"
        )
        assert entry is not None
        assert [e.id for e in await AuditStore(store.database).newest()] == [entry.id]
    finally:
        await store.close()
