"""The shared portal store, on SQLite and PostgreSQL (see tests/store_fixtures.py)."""

from __future__ import annotations

from typing import Any

import pytest
from mautrix.util.async_db import Connection, UpgradeTable

from bridge.core.ids import (
    LoginID,
    NetworkID,
    PartID,
    PortalKey,
    RemoteChatID,
    RemoteMessageID,
    RemoteUserID,
)
from bridge.portal import (
    BridgeUser,
    Ghost,
    InboxItem,
    Login,
    Message,
    NetworkStore,
    Portal,
    Reaction,
    Store,
    StoreError,
    connector_upgrade_table,
    open_database,
    upgrade_connector_tables,
)
from bridge.portal.migrations import LATEST_VERSION
from tests.store_fixtures import StoreTarget

XMPP = NetworkID("xmpp")
TEAMS = NetworkID("teams")
CHAT = RemoteChatID("room@muc.example")
KEY = PortalKey(XMPP, CHAT)


def message(remote_id: str = "m1", part_id: str = "", mxid: str = "$e1", **kwargs: Any) -> Message:
    fields: dict[str, Any] = {
        "network": XMPP,
        "portal_id": CHAT,
        "remote_id": RemoteMessageID(remote_id),
        "part_id": PartID(part_id),
        "mxid": mxid,
        "room_id": "!room:hub",
        "sender_id": "alice@xmpp.example",
        "timestamp": 1_700_000_000_123,
    }
    fields.update(kwargs)
    return Message(**fields)


def reaction(emoji: str = "👍", mxid: str = "$r1", **kwargs: Any) -> Reaction:
    fields: dict[str, Any] = {
        "network": XMPP,
        "portal_id": CHAT,
        "message_id": RemoteMessageID("m1"),
        "sender_id": "bob@xmpp.example",
        "emoji": emoji,
        "mxid": mxid,
        "room_id": "!room:hub",
        "timestamp": 5,
    }
    fields.update(kwargs)
    return Reaction(**fields)


def pdu(event_id: str | None, body: str = "hi") -> InboxItem:
    return InboxItem("pdu", event_id, "!room:hub", {"event_id": event_id, "body": body})


# --- round trips -----------------------------------------------------------------------------


async def test_portal_round_trip(store: Store) -> None:
    portal = Portal(
        XMPP,
        CHAT,
        LoginID("login1"),
        mxid="!room:hub",
        name="Room",
        topic="Talk",
        avatar_mxc="mxc://hub/abc",
        is_direct=True,
        relay_login=LoginID("relay"),
        metadata={"muc": {"nick": "pontis"}, "n": [1, 2]},
    )
    await store.save_portal(portal)
    await store.save_portal(Portal(TEAMS, RemoteChatID("19:x"), is_direct=False))

    loaded = await store.get_portal(portal.key)
    assert loaded == portal
    assert loaded is not None and loaded.is_direct is True
    assert await store.get_portal_by_mxid("!room:hub") == portal
    teams = await store.get_portal(PortalKey(TEAMS, RemoteChatID("19:x")))
    assert teams is not None and teams.is_direct is False and teams.metadata == {}
    assert teams.mxid is None and teams.relay_login is None
    # The receiver is part of the key.
    assert await store.get_portal(PortalKey(XMPP, CHAT)) is None

    portal.name = "Renamed"
    portal.metadata["muc"]["nick"] = "bridge"
    await store.save_portal(portal)
    assert await store.get_portal(portal.key) == portal
    assert await store.count_portals() == 2
    assert await store.list_portals(XMPP) == [portal]
    assert len(await store.list_portals()) == 2


async def test_delete_portal_forgets_its_messages(store: Store) -> None:
    await store.save_portal(Portal(XMPP, CHAT, mxid="!room:hub"))
    assert await store.add_message(message())
    assert await store.add_reaction(reaction())
    await store.delete_portal(KEY)
    assert await store.get_portal(KEY) is None
    assert await store.get_message_by_mxid("$e1") is None
    assert await store.get_reaction_by_mxid("$r1") is None
    assert await store.count_portals() == 0


async def test_ghost_round_trip(store: Store) -> None:
    ghost = Ghost(
        XMPP,
        RemoteUserID("alice@xmpp.example"),
        "@xmpp_alice=40xmpp.example:hub",
        name="Alice",
        avatar_mxc="mxc://hub/a",
        avatar_id="sha1:abc",
        metadata={"vcard": True},
    )
    await store.save_ghost(ghost)
    assert await store.get_ghost(XMPP, ghost.remote_id) == ghost
    assert await store.get_ghost_by_mxid(ghost.mxid) == ghost
    assert await store.get_ghost(TEAMS, ghost.remote_id) is None

    ghost.avatar_id = "sha1:def"
    ghost.avatar_mxc = None
    await store.save_ghost(ghost)
    assert await store.get_ghost(XMPP, ghost.remote_id) == ghost
    assert await store.count_ghosts() == 1


async def test_login_round_trip(store: Store) -> None:
    alice_xmpp = Login(XMPP, LoginID("component"), "@alice:hub", "xmpp.hub", {"secret": "s"})
    alice_teams = Login(TEAMS, LoginID("aad-1"), "@alice:hub", "Alice A.", {"token": "t"})
    bob_teams = Login(TEAMS, LoginID("aad-2"), "@bob:hub")
    for login in (alice_xmpp, alice_teams, bob_teams):
        await store.save_login(login)

    assert await store.get_login(TEAMS, LoginID("aad-1")) == alice_teams
    assert await store.list_logins(TEAMS) == [alice_teams, bob_teams]
    assert await store.list_logins(user_mxid="@alice:hub") == [alice_teams, alice_xmpp]
    assert await store.list_logins(TEAMS, "@bob:hub") == [bob_teams]
    assert len(await store.list_logins()) == 3

    alice_teams.metadata["token"] = "t2"
    await store.save_login(alice_teams)
    assert await store.get_login(TEAMS, LoginID("aad-1")) == alice_teams

    await store.delete_login(TEAMS, LoginID("aad-1"))
    assert await store.get_login(TEAMS, LoginID("aad-1")) is None
    assert await store.get_login(XMPP, LoginID("component")) == alice_xmpp


async def test_bridge_user_round_trip(store: Store) -> None:
    await store.save_user(BridgeUser("@alice:hub"))
    assert await store.get_user("@alice:hub") == BridgeUser("@alice:hub", None)
    await store.save_user(BridgeUser("@alice:hub", "!mgmt:hub"))
    assert await store.get_user("@alice:hub") == BridgeUser("@alice:hub", "!mgmt:hub")
    assert await store.get_user_by_management_room("!mgmt:hub") == BridgeUser(
        "@alice:hub", "!mgmt:hub"
    )
    assert await store.get_user("@bob:hub") is None
    assert await store.get_user_by_management_room("!other:hub") is None


async def test_message_round_trip(store: Store) -> None:
    first = message(
        thread_root_id=RemoteMessageID("root"),
        reply_to_id=RemoteMessageID("m0"),
        metadata={"stanza_id": "abc", "origin": None},
    )
    assert first.id is None
    assert await store.add_message(first)
    assert isinstance(first.id, int)

    assert await store.get_message_by_mxid("$e1") == first
    assert await store.get_message(KEY, RemoteMessageID("m1")) == first
    assert first.portal_key == KEY

    # Parts come back '' first whatever order they were stored in.
    assert await store.add_message(message(part_id="b", mxid="$e1b"))
    assert await store.add_message(message(part_id="a", mxid="$e1a"))
    parts = await store.get_message_parts(KEY, RemoteMessageID("m1"))
    assert [p.part_id for p in parts] == ["", "a", "b"]
    assert await store.get_message(KEY, RemoteMessageID("m1"), PartID("b")) == parts[2]

    assert await store.add_message(message("m2", mxid="$e2"))
    last = await store.get_last_message(KEY)
    assert last is not None and last.mxid == "$e2"
    assert await store.get_last_message(PortalKey(XMPP, RemoteChatID("other"))) is None

    await store.bump_edit_count("$e1")
    await store.bump_edit_count("$e1")
    edited = await store.get_message_by_mxid("$e1")
    assert edited is not None and edited.edit_count == 2

    assert await store.add_reaction(reaction())
    await store.delete_message_parts(KEY, RemoteMessageID("m1"))
    assert await store.get_message_parts(KEY, RemoteMessageID("m1")) == []
    assert await store.get_reaction_by_mxid("$r1") is None
    assert await store.get_message_by_mxid("$e2") is not None


async def test_message_same_remote_part_twice_is_rejected(store: Store) -> None:
    assert await store.add_message(message(mxid="$first"))
    duplicate = message(mxid="$second", sender_id="mallory")
    assert await store.add_message(duplicate) is False
    assert duplicate.id is None
    assert await store.get_message_by_mxid("$second") is None
    stored = await store.get_message(KEY, RemoteMessageID("m1"))
    assert stored is not None and stored.mxid == "$first"
    # A different part or receiver of the same remote message is a different row.
    assert await store.add_message(message(part_id="1", mxid="$part"))
    assert await store.add_message(message(receiver=LoginID("l2"), mxid="$recv"))


async def test_message_same_mxid_twice_is_rejected(store: Store) -> None:
    assert await store.add_message(message("m1", mxid="$same"))
    assert await store.add_message(message("m2", mxid="$same")) is False
    assert await store.get_message(KEY, RemoteMessageID("m2")) is None
    stored = await store.get_message_by_mxid("$same")
    assert stored is not None and stored.remote_id == "m1"


async def test_reaction_round_trip_and_uniqueness(store: Store) -> None:
    thumbs = reaction(metadata={"remote": "r-1"})
    assert await store.add_reaction(thumbs)
    assert await store.add_reaction(reaction("❤️", "$r2", timestamp=6))
    assert await store.add_reaction(reaction(mxid="$r3", sender_id="carol", timestamp=7))

    assert (
        await store.get_reaction(KEY, RemoteMessageID("m1"), PartID(""), "bob@xmpp.example", "👍")
        == thumbs
    )
    assert await store.get_reaction_by_mxid("$r1") == thumbs
    assert [r.mxid for r in await store.list_reactions(KEY, RemoteMessageID("m1"))] == [
        "$r1",
        "$r2",
        "$r3",
    ]
    bobs = await store.list_reactions(KEY, RemoteMessageID("m1"), "bob@xmpp.example")
    assert [r.emoji for r in bobs] == ["👍", "❤️"]

    # Same sender+emoji again, or the same Matrix event again: refused, nothing changed.
    assert await store.add_reaction(reaction(mxid="$r9")) is False
    assert await store.add_reaction(reaction("🎉", "$r1")) is False
    assert await store.get_reaction_by_mxid("$r9") is None
    assert len(await store.list_reactions(KEY, RemoteMessageID("m1"))) == 3

    await store.delete_reaction("$r1")
    assert await store.get_reaction_by_mxid("$r1") is None
    assert len(await store.list_reactions(KEY, RemoteMessageID("m1"))) == 2


async def test_kv_round_trip(store: Store) -> None:
    assert await store.kv_get(XMPP, "cursor") is None
    await store.kv_set(XMPP, "cursor", "1")
    await store.kv_set(XMPP, "cursor", "2")
    await store.kv_set(TEAMS, "cursor", "t")
    assert await store.kv_get(XMPP, "cursor") == "2"
    assert await store.kv_get(TEAMS, "cursor") == "t"
    await store.kv_delete(XMPP, "cursor")
    assert await store.kv_get(XMPP, "cursor") is None
    assert await store.kv_get(TEAMS, "cursor") == "t"


# --- inbox -----------------------------------------------------------------------------------


async def test_store_transaction_returns_inserted_rows_in_order(store: Store) -> None:
    items = [
        pdu("$a"),
        InboxItem("ephemeral", None, "!room:hub", {"type": "m.typing"}),
        pdu("$b", "second"),
    ]
    rows = await store.store_transaction("txn1", items)
    assert rows is not None
    assert [(r.kind, r.event_id) for r in rows] == [
        ("pdu", "$a"),
        ("ephemeral", None),
        ("pdu", "$b"),
    ]
    assert rows[0].id < rows[1].id < rows[2].id
    assert all(r.txn_id == "txn1" and r.attempts == 0 for r in rows)
    assert await store.pending_inbox() == rows
    assert rows[2].payload == {"event_id": "$b", "body": "second"}


async def test_store_transaction_dedups_by_txn_id(store: Store) -> None:
    assert await store.store_transaction("txn1", [pdu("$a")]) is not None
    assert await store.store_transaction("txn1", [pdu("$a"), pdu("$new")]) is None
    pending = await store.pending_inbox()
    assert [r.event_id for r in pending] == ["$a"]
    assert await store.inbox_depth() == 1


async def test_store_transaction_dedups_by_event_id_across_txns(store: Store) -> None:
    await store.store_transaction("txn1", [pdu("$a")])
    rows = await store.store_transaction("txn2", [pdu("$a", "again"), pdu("$b"), pdu(None)])
    assert rows is not None
    assert [r.event_id for r in rows] == ["$b", None]
    # Items without an event id are never deduplicated.
    rows = await store.store_transaction("txn3", [pdu(None)])
    assert rows is not None and len(rows) == 1
    pending = await store.pending_inbox()
    assert [r.event_id for r in pending] == ["$a", "$b", None, None]
    assert pending[0].payload["body"] == "hi"


async def test_store_transaction_keeps_order_with_items_without_event_ids(store: Store) -> None:
    await store.store_transaction("txn1", [pdu("$seen")])
    items = [
        InboxItem("ephemeral", None, "!room:hub", {"n": 1}),
        pdu("$a"),
        InboxItem("to_device", None, None, {"n": 2}),
        pdu("$seen"),
        pdu("$a", "twice in one transaction"),
        InboxItem("ephemeral", None, "!room:hub", {"n": 3}),
        pdu("$b"),
    ]
    rows = await store.store_transaction("txn2", items)
    assert rows is not None
    assert [(r.kind, r.event_id, r.payload.get("n")) for r in rows] == [
        ("ephemeral", None, 1),
        ("pdu", "$a", None),
        ("to_device", None, 2),
        ("ephemeral", None, 3),
        ("pdu", "$b", None),
    ]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    pending = await store.pending_inbox()
    assert pending[1:] == rows  # what the dispatcher reads back is what it was handed
    assert pending[2].payload["body"] == "hi"  # the first $a, not the repeat


async def test_store_transaction_is_atomic_on_database_error(store: Store) -> None:
    # The second item violates NOT NULL after the txn id and the first item were written.
    broken = InboxItem(None, "$b", "!room:hub", {})  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"(?i)null"):
        await store.store_transaction("txn1", [pdu("$a"), broken])
    assert await store.inbox_depth() == 0
    # The txn id was rolled back too, so the homeserver's retry is accepted.
    rows = await store.store_transaction("txn1", [pdu("$a"), pdu("$b")])
    assert rows is not None and [r.event_id for r in rows] == ["$a", "$b"]


async def test_store_transaction_with_unserialisable_payload_stores_nothing(store: Store) -> None:
    bad = InboxItem("pdu", "$b", "!room:hub", {"x": object()})
    with pytest.raises(TypeError):
        await store.store_transaction("txn1", [pdu("$a"), bad])
    assert await store.inbox_depth() == 0
    assert await store.store_transaction("txn1", [pdu("$a")]) is not None


async def test_pending_finish_and_failures(store: Store) -> None:
    rows = await store.store_transaction("txn1", [pdu("$a"), pdu("$b"), pdu("$c")])
    assert rows is not None
    assert [r.event_id for r in await store.pending_inbox(after_id=rows[0].id)] == ["$b", "$c"]
    assert [r.event_id for r in await store.pending_inbox(limit=1)] == ["$a"]

    assert await store.record_inbox_failure(rows[1].id, "timeout") == 1
    assert await store.record_inbox_failure(rows[1].id, "HTTP 502") == 2
    failed = (await store.pending_inbox(after_id=rows[0].id, limit=1))[0]
    assert (failed.attempts, failed.last_error) == (2, "HTTP 502")

    await store.finish_inbox(rows[0].id)
    assert [r.event_id for r in await store.pending_inbox()] == ["$b", "$c"]
    assert await store.inbox_depth() == 2


async def test_park_inbox_moves_exactly_one_row(store: Store) -> None:
    rows = await store.store_transaction("txn1", [pdu("$a"), pdu("$b"), pdu("$c")])
    assert rows is not None
    await store.record_inbox_failure(rows[1].id, "first")
    dead = await store.park_inbox(rows[1].id, "gave up after 1 attempt")

    assert (dead.kind, dead.event_id, dead.room_id) == ("pdu", "$b", "!room:hub")
    assert dead.payload == {"event_id": "$b", "body": "hi"}
    assert (dead.error, dead.attempts) == ("gave up after 1 attempt", 1)
    assert [r.event_id for r in await store.pending_inbox()] == ["$a", "$c"]
    assert await store.list_dead_letters() == [dead]
    with pytest.raises(KeyError):
        await store.park_inbox(rows[1].id, "again")
    assert len(await store.list_dead_letters()) == 1


async def test_prune_transactions_keeps_recent_ones(store_target: StoreTarget) -> None:
    now = [1_000_000]
    store = await store_target.open(clock=lambda: now[0])
    try:
        await store.store_transaction("old", [])
        now[0] += 60_000
        await store.store_transaction("recent", [])
        now[0] += 1_000
        assert await store.prune_transactions(older_than_ms=30_000) == 1
        # "old" is forgotten (accepted again), "recent" still deduplicates.
        assert await store.store_transaction("recent", []) is None
        assert await store.store_transaction("old", []) == []
    finally:
        await store.close()


# --- network scoping ------------------------------------------------------------------------


async def test_network_store_sees_only_its_network(store: Store) -> None:
    a, b = NetworkID("a"), NetworkID("b")
    same_chat, same_user = RemoteChatID("chat"), RemoteUserID("user")
    for net in (a, b):
        await store.save_portal(Portal(net, same_chat, name=f"{net} chat"))
        await store.save_ghost(Ghost(net, same_user, f"@{net}_user:hub", name=f"{net} user"))
        await store.save_login(Login(net, LoginID("login"), "@alice:hub", remote_name=net))
        await store.add_message(
            message("m", network=net, portal_id=same_chat, mxid=f"${net}", sender_id=net)
        )
        await store.kv_set(net, "k", net)

    view = NetworkStore(store, a)
    portal = await view.get_portal(same_chat)
    assert portal is not None and portal.name == "a chat"
    assert [p.network for p in await view.list_portals()] == [a]
    ghost = await view.get_ghost(same_user)
    assert ghost is not None and ghost.name == "a user"
    assert [lg.remote_name for lg in await view.list_logins()] == ["a"]
    login = await view.get_login(LoginID("login"))
    assert login is not None and login.network == a
    msg = await view.get_message(same_chat, RemoteMessageID("m"))
    assert msg is not None and msg.mxid == "$a"
    assert await view.kv_get("k") == "a"
    await view.kv_delete("k")
    assert await view.kv_get("k") is None
    assert await store.kv_get(b, "k") == "b"
    await view.kv_set("k2", "v")
    assert await store.kv_get(b, "k2") is None

    login.metadata = {"token": "new"}
    await view.save_login(login)
    b_login = await store.get_login(b, LoginID("login"))
    assert b_login is not None and b_login.metadata == {}
    with pytest.raises(ValueError, match="belongs to network 'b'"):
        await view.save_login(b_login)
    assert view.database is store.database


async def test_network_store_reads_portals_through_the_lookup_it_is_given(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bridge hands each connector's view the core's portal cache: a connector asking
    for a known portal on every message (an email RCPT, a Teams notification) costs no query."""
    net = NetworkID("a")
    await store.save_portal(Portal(net, CHAT, mxid="!room:hub"))
    cache: dict[PortalKey, Portal | None] = {}

    async def cached(key: PortalKey) -> Portal | None:
        if key not in cache:
            cache[key] = await store.get_portal(key)
        return cache[key]

    reads: list[PortalKey] = []
    read = store.get_portal

    async def counted(key: PortalKey) -> Portal | None:
        reads.append(key)
        return await read(key)

    monkeypatch.setattr(store, "get_portal", counted)
    view = NetworkStore(store, net, cached)
    for _ in range(3):
        portal = await view.get_portal(CHAT)
        assert portal is not None and portal.mxid == "!room:hub"
    assert reads == [PortalKey(net, CHAT)]
    assert await NetworkStore(store, net).get_portal(CHAT) is not None  # default: the store
    assert len(reads) == 2


# --- opening and migrations -----------------------------------------------------------------


async def test_reopen_keeps_data_and_does_not_rerun_migrations(store_target: StoreTarget) -> None:
    store = await store_target.open()
    await store.save_portal(Portal(XMPP, CHAT, mxid="!room:hub"))
    # If v1 ran again on reopen it would fail on the existing tables or recreate this one.
    await store.database.execute("DROP TABLE kv")
    await store.close()

    store = await store_target.open()
    try:
        assert await store.get_portal(KEY) == Portal(XMPP, CHAT, mxid="!room:hub")
        # Not mautrix's table_exists: on PostgreSQL it looks in every schema, and another test
        # (or a killed run) may have left a kv table in its own schema of the same database.
        gone = await store.database.fetchval(
            "SELECT to_regclass('kv') IS NULL" if store_target.engine == "postgres"
            else "SELECT COUNT(*) = 0 FROM sqlite_master WHERE type='table' AND name='kv'"
        )  # fmt: skip
        assert gone
        version = await store.database.fetchval("SELECT version FROM pontis_version")
        assert version == LATEST_VERSION
    finally:
        await store.close()


async def test_newer_schema_refuses_to_start(store_target: StoreTarget) -> None:
    store = await store_target.open()
    await store.database.execute("UPDATE pontis_version SET version=$1", LATEST_VERSION + 41)
    await store.close()

    with pytest.raises(StoreError) as info:
        await store_target.open()
    message = str(info.value)
    assert f"version {LATEST_VERSION + 41}" in message
    assert f"only knows up to {LATEST_VERSION}" in message
    assert "upgrade Pontis or restore a backup" in message


async def test_database_owned_by_another_program_refuses(store_target: StoreTarget) -> None:
    store = await store_target.open()
    await store.database.execute("UPDATE database_owner SET owner='mautrix-telegram'")
    await store.close()
    with pytest.raises(StoreError, match="owned by mautrix-telegram"):
        await store_target.open()


async def test_connector_tables_have_their_own_version(store: Store) -> None:
    table: UpgradeTable = connector_upgrade_table("xmpp")

    async def create_muc_table(conn: Connection) -> None:
        await conn.execute("CREATE TABLE xmpp_muc (jid TEXT PRIMARY KEY)")

    table.register(create_muc_table, description="create xmpp_muc")

    await upgrade_connector_tables(store.database, table)
    await upgrade_connector_tables(store.database, table)  # nothing to do the second time
    await store.database.execute("INSERT INTO xmpp_muc (jid) VALUES ($1)", "room@muc")
    assert await store.database.fetchval("SELECT version FROM xmpp_version") == 1
    assert await store.database.fetchval("SELECT version FROM pontis_version") == LATEST_VERSION


@pytest.mark.parametrize("url", ["mysql://localhost/pontis", "pontis.db", "http://x/y"])
async def test_bad_url_scheme_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme"):
        await open_database(url)


async def test_memory_database_works() -> None:
    store = await Store.open("sqlite::memory:")
    try:
        await store.kv_set(XMPP, "k", "v")
        assert await store.kv_get(XMPP, "k") == "v"
    finally:
        await store.close()


async def test_portal_users_are_listed_and_forgotten_with_the_portal(store: Store) -> None:
    mine = Portal(network=NetworkID("a"), remote_id=RemoteChatID("c1"), mxid="!c1:hub.test")
    other = Portal(network=NetworkID("a"), remote_id=RemoteChatID("c2"), mxid="!c2:hub.test")
    await store.save_portal(mine)
    await store.save_portal(other)
    await store.add_portal_user("@alice:hub.test", mine.key)
    await store.add_portal_user("@alice:hub.test", mine.key)  # idempotent
    await store.add_portal_user("@bob:hub.test", other.key)
    assert [p.remote_id for p in await store.list_portals_for_user("@alice:hub.test")] == ["c1"]
    await store.delete_portal(mine.key)
    assert await store.list_portals_for_user("@alice:hub.test") == []
    assert [p.remote_id for p in await store.list_portals_for_user("@bob:hub.test")] == ["c2"]
