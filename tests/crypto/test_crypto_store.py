"""The crypto tables live in the portal store's database, on SQLite and on PostgreSQL.

What the bridge's device holds must survive a restart on either engine: its Olm account (the
device keys), the Megolm sessions it received, and the room state the crypto engine asks about.
Pickles are encrypted with the pickle key: the database alone does not give them up.
"""

from __future__ import annotations

import olm
import pytest
from mautrix.crypto import InboundGroupSession, OlmAccount, OutboundGroupSession, PgCryptoStore
from mautrix.types import (
    DeviceID,
    DeviceIdentity,
    EncryptionAlgorithm,
    IdentityKey,
    Membership,
    RoomID,
    SessionID,
    SigningKey,
    TrustState,
    UserID,
)

from bridge.core.pickle_key import PickleKey
from bridge.crypto.state import RoomStateStore
from bridge.crypto.store import CachedCryptoStore
from tests.store_fixtures import StoreTarget

BOT = UserID("@pontis:hub.test")
ROOM = RoomID("!portal:hub.test")
KEY = PickleKey(b"p" * 32)


async def _crypto_store(target: StoreTarget, key: PickleKey = KEY):  # type: ignore[no-untyped-def]
    store = await target.open()
    await RoomStateStore.upgrade_table.upgrade(store.database)
    await PgCryptoStore.upgrade_table.upgrade(store.database)
    crypto = PgCryptoStore(BOT, key.olm_passphrase(), store.database)
    await crypto.open()
    return store, crypto


async def test_device_keys_and_room_keys_survive_a_restart(store_target: StoreTarget) -> None:
    store, crypto = await _crypto_store(store_target)
    try:
        account = OlmAccount()
        await crypto.put_device_id("PONTISDEV")
        await crypto.put_account(account)
        outbound = OutboundGroupSession(ROOM)
        inbound = InboundGroupSession(
            outbound.session_key, SigningKey(account.signing_key), IdentityKey(account.identity_key),
            ROOM,
        )  # fmt: skip
        await crypto.put_group_session(
            ROOM, IdentityKey(account.identity_key), SessionID(inbound.id), inbound
        )
        outbound.shared = True
        ciphertext = outbound.encrypt("hello across a restart")
        rooms = RoomStateStore(store.database)
        await rooms.set_encryption_info(ROOM, {"algorithm": EncryptionAlgorithm.MEGOLM_V1.value})
        await rooms.set_membership(ROOM, UserID("@alice:hub.test"), Membership.JOIN)
        # The pickle is not the key: nothing in the row reads as the session key.
        raw = await store.database.fetchval(
            "SELECT session FROM crypto_megolm_inbound_session WHERE session_id=$1", inbound.id
        )
        assert outbound.session_key.encode() not in bytes(raw)
    finally:
        await store.close()

    store, crypto = await _crypto_store(store_target)
    try:
        assert await crypto.get_device_id() == "PONTISDEV"
        again = await crypto.get_account()
        assert again is not None and again.identity_key == account.identity_key
        got = await crypto.get_group_session(ROOM, SessionID(inbound.id))
        assert got is not None
        assert got.decrypt(ciphertext)[0] == "hello across a restart"
        rooms = RoomStateStore(store.database)
        assert await rooms.is_encrypted(ROOM)  # 1 on SQLite, True on PostgreSQL
        assert await rooms.members_for_keys(ROOM) == ["@alice:hub.test"]
        assert await rooms.find_shared_rooms(UserID("@alice:hub.test")) == [ROOM]
    finally:
        await store.close()


async def test_another_pickle_key_cannot_load_the_device(store_target: StoreTarget) -> None:
    store, crypto = await _crypto_store(store_target)
    try:
        await crypto.put_device_id("PONTISDEV")
        await crypto.put_account(OlmAccount())
    finally:
        await store.close()
    store, crypto = await _crypto_store(store_target, PickleKey(b"q" * 32))
    try:
        with pytest.raises(olm.OlmAccountError):
            await crypto.get_account()
    finally:
        await store.close()


async def test_outbound_sessions_never_reach_the_disk(store_target: StoreTarget) -> None:
    """A session restored from disk could reuse a message index (clients call that a replay):
    the bridge's own sessions stay in memory, and a restart starts new ones."""
    store = await store_target.open()
    try:
        await RoomStateStore.upgrade_table.upgrade(store.database)
        await PgCryptoStore.upgrade_table.upgrade(store.database)
        crypto = CachedCryptoStore(BOT, KEY.olm_passphrase(), store.database, persist_ratchet=False)
        await crypto.open()
        outbound = OutboundGroupSession(ROOM)
        await crypto.add_outbound_group_session(outbound)
        outbound.shared = True
        outbound.encrypt("one")
        await crypto.update_outbound_group_session(outbound)
        assert await crypto.get_outbound_group_session(ROOM) is outbound
        rows = await store.database.fetchval("SELECT COUNT(*) FROM crypto_megolm_outbound_session")
        assert rows == 0
        again = CachedCryptoStore(BOT, KEY.olm_passphrase(), store.database, persist_ratchet=False)
        await again.open()
        assert await again.get_outbound_group_session(ROOM) is None
    finally:
        await store.close()


async def test_cached_devices_follow_what_the_store_writes(store_target: StoreTarget) -> None:
    store = await store_target.open()
    try:
        await PgCryptoStore.upgrade_table.upgrade(store.database)
        crypto = CachedCryptoStore(BOT, KEY.olm_passphrase(), store.database, persist_ratchet=False)
        await crypto.open()
        alice = UserID("@alice:hub.test")
        assert await crypto.get_devices(alice) is None  # not tracked yet
        first = DeviceIdentity(
            user_id=alice, device_id=DeviceID("A"), identity_key=IdentityKey("k1"),
            signing_key=SigningKey("s1"), trust=TrustState.UNVERIFIED, deleted=False, name="phone",
        )  # fmt: skip
        await crypto.put_devices(alice, {DeviceID("A"): first})
        found = await crypto.find_device_by_key(alice, IdentityKey("k1"))
        assert found is not None and found.device_id == "A"
        renamed = DeviceIdentity(
            user_id=alice, device_id=DeviceID("B"), identity_key=IdentityKey("k2"),
            signing_key=SigningKey("s2"), trust=TrustState.VERIFIED, deleted=False, name="laptop",
        )  # fmt: skip
        await crypto.put_devices(alice, {DeviceID("B"): renamed})
        assert await crypto.get_device(alice, DeviceID("A")) is None
        got = await crypto.get_device(alice, DeviceID("B"))
        assert got is not None and got.trust == TrustState.VERIFIED
        fresh = PgCryptoStore(BOT, KEY.olm_passphrase(), store.database)
        assert set(await fresh.get_devices(alice) or {}) == {"B"}  # written through
    finally:
        await store.close()
