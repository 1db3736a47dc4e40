"""Existing databases move to the new schema step by step, keeping their rows (both engines)."""

from __future__ import annotations

import json

from bridge.core.ids import NetworkID, PortalKey, RemoteChatID
from bridge.portal.migrations import LATEST_VERSION
from bridge.portal.models import RemoteInput
from tests.store_fixtures import StoreTarget


async def test_a_version_1_database_gains_the_remote_inbox(store_target: StoreTarget) -> None:
    store = await store_target.open()
    db = store.database
    # Back to version 1 as it was shipped: no remote inbox, dead letters without a network.
    await db.execute("DROP TABLE remote_inbox")
    for column in ("network", "portal_id", "receiver", "login_id", "dedupe_id"):
        await db.execute(f"ALTER TABLE dead_letter DROP COLUMN {column}")
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
