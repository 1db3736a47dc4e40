"""The crypto engine's policy, without a homeserver: what the config's verification levels,
delete_keys and rotation turn into on the OlmMachine, which key requests it refuses, and which
messages it does not bridge.

The two-device cases reuse the in-process fake homeserver of ``fake_homeserver``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mautrix.crypto import PgCryptoStore, RejectKeyShare
from mautrix.types import (
    DeviceID,
    DeviceIdentity,
    EncryptedMegolmEventContent,
    IdentityKey,
    Membership,
    RequestedKeyInfo,
    RoomID,
    RoomKeyWithheldCode,
    SessionID,
    SigningKey,
    TrustState,
    UserID,
)

from bridge.core.app import KV_NETWORK
from bridge.core.encryption_settings import EncryptionSettings
from bridge.core.errors import PermanentError, TransientError
from bridge.core.ids import NetworkID
from bridge.core.pickle_key import KEY_BYTES, PickleKey
from bridge.crypto.engine import MEGOLM, CryptoEngine, KeysMissing, Untrusted
from bridge.crypto.state import RoomStateStore
from bridge.portal.store import Store
from tests.crypto.fake_homeserver import (
    ALICE,
    ROOM,
    FakeAPI,
    FakeHomeserver,
    deliver_to_device,
    open_machine,
    send_text,
)

BOT = UserID("@pontis:hub.test")
BOT_DEVICE = DeviceID("HUBDEVICE")
PORTAL = RoomID("!portal:hub.test")
OTHER_ROOM = RoomID("!elsewhere:hub.test")
CAROL = UserID("@carol:hub.test")


@dataclass
class Harness:
    engine: CryptoEngine
    store: Store
    portals: set[str] = field(default_factory=set)


MakeEngine = Callable[..., Any]


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[MakeEngine]:
    """``await make_engine(section)``: an engine over a fresh SQLite store, tables created as
    :meth:`CryptoEngine.start` creates them, nothing sent anywhere."""
    opened: list[tuple[Store, aiohttp.ClientSession]] = []

    async def make(section: dict[str, Any] | None = None, name: str = "hub") -> Harness:
        store = await Store.open(f"sqlite:{tmp_path / name}.db")
        http = aiohttp.ClientSession()
        opened.append((store, http))
        portals: set[str] = set()

        async def is_portal(room_id: str) -> bool:
            return room_id in portals

        engine = CryptoEngine(
            settings=EncryptionSettings.from_section({"allow": True, **(section or {})}),
            pickle_key=PickleKey(b"p" * KEY_BYTES),
            db=store.database,
            http=http,
            homeserver_url="http://127.0.0.1:9",  # never contacted
            as_token="as-token",
            bot_mxid=BOT,
            is_ghost=lambda mxid: mxid.startswith("@xmpp_"),
            is_portal=is_portal,
            kv_get=lambda key: store.kv_get(NetworkID(KV_NETWORK), key),
            kv_set=lambda key, value: store.kv_set(NetworkID(KV_NETWORK), key, value),
            log=logging.getLogger(f"pontis.test.engine.{name}"),
        )
        await RoomStateStore.upgrade_table.upgrade(store.database)
        await PgCryptoStore.upgrade_table.upgrade(store.database)
        return Harness(engine, store, portals)

    yield make
    for store, http in opened:
        await http.close()
        await store.close()


def device(user: UserID, trust: TrustState, device_id: str = "PHONE") -> DeviceIdentity:
    return DeviceIdentity(
        user_id=user,
        device_id=DeviceID(device_id),
        identity_key=IdentityKey("curve25519-key"),
        signing_key=SigningKey("ed25519-key"),
        trust=trust,
        deleted=False,
        name="phone",
    )


def request(room: RoomID) -> RequestedKeyInfo:
    return RequestedKeyInfo(
        algorithm=MEGOLM,  # type: ignore[arg-type]
        room_id=room,
        sender_key=IdentityKey("sender-key"),
        session_id=SessionID("session"),
    )


# --- settings → OlmMachine ----------------------------------------------------------------------


async def test_default_levels_reach_the_machine(make_engine: MakeEngine) -> None:
    engine = (await make_engine()).engine
    assert engine.machine.send_keys_min_trust == TrustState.UNVERIFIED
    assert engine.machine.share_keys_min_trust == TrustState.CROSS_SIGNED_TOFU
    assert engine.machine.allow_key_share == engine._allow_key_share


@pytest.mark.parametrize(
    ("receive", "share"),
    [
        ("cross-signed-tofu", "verified"),
        ("verified", "unverified"),
        ("blacklisted", "cross-signed-trusted"),
    ],
)
async def test_verification_levels_reach_the_machine(
    make_engine: MakeEngine, receive: str, share: str
) -> None:
    engine = (
        await make_engine({"verification_levels": {"receive": receive, "share": share}})
    ).engine
    assert engine.machine.send_keys_min_trust == TrustState.parse(receive)
    assert engine.machine.share_keys_min_trust == TrustState.parse(share)


DELETE_KEYS_ON_MACHINE = {
    "dont_store_outbound": "dont_store_outbound_keys",
    "delete_outbound_on_ack": "delete_outbound_keys_on_ack",
    "delete_prev_on_new_session": "delete_previous_keys_on_receive",
    "ratchet_on_decrypt": "ratchet_keys_on_decrypt",
    "delete_fully_used_on_decrypt": "delete_fully_used_keys_on_decrypt",
    "delete_on_device_delete": "delete_keys_on_device_delete",
}


async def test_delete_keys_are_off_by_default(make_engine: MakeEngine) -> None:
    machine = (await make_engine()).engine.machine
    for attribute in DELETE_KEYS_ON_MACHINE.values():
        assert getattr(machine, attribute) is False, attribute
    assert machine.disable_device_change_key_rotation is False


@pytest.mark.parametrize("option", sorted(DELETE_KEYS_ON_MACHINE))
async def test_each_delete_keys_option_sets_its_machine_attribute(
    make_engine: MakeEngine, option: str
) -> None:
    machine = (await make_engine({"delete_keys": {option: True}})).engine.machine
    on = {a for a in DELETE_KEYS_ON_MACHINE.values() if getattr(machine, a)}
    assert on == {DELETE_KEYS_ON_MACHINE[option]}


async def test_device_change_rotation_setting_reaches_the_machine(
    make_engine: MakeEngine,
) -> None:
    section = {"rotation": {"disable_device_change_key_rotation": True}}
    assert (await make_engine(section)).engine.machine.disable_device_change_key_rotation is True


async def test_encryption_state_has_rotation_only_with_enable_custom(
    make_engine: MakeEngine,
) -> None:
    rotation = {"milliseconds": 3_600_000, "messages": 10}
    plain = (await make_engine({"rotation": rotation}, name="plain")).engine
    assert plain.encryption_state() == {"algorithm": MEGOLM}
    custom = (await make_engine({"rotation": {**rotation, "enable_custom": True}})).engine
    assert custom.encryption_state() == {
        "algorithm": MEGOLM,
        "rotation_period_ms": 3_600_000,
        "rotation_period_msgs": 10,
    }


async def test_room_created_remembers_encryption(make_engine: MakeEngine) -> None:
    engine = (await make_engine({"default": True})).engine
    assert engine.encrypt_new_rooms is True and engine.require is False
    await engine.room_created(PORTAL, True)
    await engine.room_created(OTHER_ROOM, False)
    assert await engine.is_encrypted(PORTAL) is True
    # Not asked for is not "unencrypted" (the homeserver may encrypt every room): the engine
    # asks the homeserver, which is unreachable in this test.
    with pytest.raises(TransientError):
        await engine.is_encrypted(OTHER_ROOM)
    info = await engine.state_store.get_encryption_info(PORTAL)
    assert info is not None and info.algorithm.value == MEGOLM


# --- key requests ---------------------------------------------------------------------------------


SHARING = {"allow_key_sharing": True, "verification_levels": {"share": "cross-signed-tofu"}}


async def test_key_sharing_off_refuses_every_request(make_engine: MakeEngine) -> None:
    hub = await make_engine({"allow_key_sharing": False})
    hub.portals.add(PORTAL)
    await hub.engine.state_store.set_membership(PORTAL, CAROL, Membership.JOIN)
    with pytest.raises(RejectKeyShare) as caught:
        await hub.engine._allow_key_share(device(CAROL, TrustState.VERIFIED), request(PORTAL))
    assert caught.value.code == RoomKeyWithheldCode.UNAVAILABLE


async def test_key_request_from_an_untrusted_device_is_refused(make_engine: MakeEngine) -> None:
    hub = await make_engine(SHARING)
    hub.portals.add(PORTAL)
    await hub.engine.state_store.set_membership(PORTAL, CAROL, Membership.JOIN)
    with pytest.raises(RejectKeyShare) as caught:
        await hub.engine._allow_key_share(device(CAROL, TrustState.BLACKLISTED), request(PORTAL))
    assert caught.value.code == RoomKeyWithheldCode.UNVERIFIED


async def test_key_request_for_a_room_that_is_not_a_portal_is_refused(
    make_engine: MakeEngine,
) -> None:
    hub = await make_engine(SHARING)
    await hub.engine.state_store.set_membership(OTHER_ROOM, CAROL, Membership.JOIN)
    with pytest.raises(RejectKeyShare) as caught:
        await hub.engine._allow_key_share(device(CAROL, TrustState.VERIFIED), request(OTHER_ROOM))
    assert caught.value.code == RoomKeyWithheldCode.UNAVAILABLE


async def test_key_request_from_a_member_of_the_portal_is_allowed(make_engine: MakeEngine) -> None:
    hub = await make_engine(SHARING)
    hub.portals.add(PORTAL)
    for membership in (Membership.JOIN, Membership.INVITE):
        await hub.engine.state_store.set_membership(PORTAL, CAROL, membership)
        assert await hub.engine._allow_key_share(
            device(CAROL, TrustState.VERIFIED), request(PORTAL)
        )


async def test_key_request_from_someone_not_in_the_portal_is_refused(
    make_engine: MakeEngine,
) -> None:
    hub = await make_engine(SHARING)
    hub.portals.add(PORTAL)
    await hub.engine.state_store.set_membership(PORTAL, CAROL, Membership.LEAVE)
    with pytest.raises(RejectKeyShare) as caught:
        await hub.engine._allow_key_share(device(CAROL, TrustState.VERIFIED), request(PORTAL))
    assert caught.value.code == RoomKeyWithheldCode.UNAUTHORIZED


# --- decrypting what a Matrix user sent -------------------------------------------------------------


async def hub_device(hs: FakeHomeserver, hub: Harness) -> CryptoEngine:
    """The engine's bot device on the fake homeserver (what ``start`` does over HTTP)."""
    engine = hub.engine
    engine.client.api = FakeAPI(hs, BOT, BOT_DEVICE)  # type: ignore[assignment]
    engine.client.device_id = BOT_DEVICE
    await engine.crypto_store.open()
    await engine.machine.load()
    await engine.crypto_store.put_device_id(BOT_DEVICE)
    await engine.machine.share_keys(0)
    await engine.room_created(ROOM, True)
    return engine


def room_event(content: EncryptedMegolmEventContent, n: int) -> dict[str, Any]:
    return {
        "room_id": ROOM,
        "event_id": f"$event{n}",
        "sender": ALICE,
        "origin_server_ts": 1_700_000_000_000 + n,
        "type": "m.room.encrypted",
        "content": content.serialize(),
        "unsigned": {"age": 5},
    }


@pytest.mark.filterwarnings("ignore:The sender_key field in Megolm events:DeprecationWarning")
@pytest.mark.parametrize("send_level", ["unverified", "cross-signed-tofu"])
async def test_decrypt_follows_the_send_level(
    make_engine: MakeEngine, tmp_path: Path, send_level: str
) -> None:
    hs = FakeHomeserver()
    hub = await make_engine({"verification_levels": {"send": send_level}})
    engine = await hub_device(hs, hub)
    alice, alice_db = await open_machine(hs, tmp_path, ALICE, "ALICEDEVICE")
    try:
        await alice.share_keys(0)
        await alice.share_group_session(ROOM, [ALICE, BOT])
        assert await deliver_to_device(hs, engine.machine)
        event = room_event(await send_text(alice, "hello hub"), 1)
        if send_level == "unverified":
            out = await engine.decrypt(event)
            assert out["type"] == "m.room.message"
            assert out["content"]["body"] == "hello hub"
            assert (out["event_id"], out["sender"], out["room_id"]) == ("$event1", ALICE, ROOM)
            assert out["pontis_encrypted"] is True and out["unsigned"] == {"age": 5}
            assert "mautrix" not in out
            return
        # Alice's device has no cross-signing: unverified, below cross-signed-tofu.
        with pytest.raises(Untrusted) as caught:
            await engine.decrypt(event)
        assert isinstance(caught.value, PermanentError)
        message = caught.value.user_message
        assert "does not trust enough" in message
        assert "Verify your device" in message
        assert "(unverified; this hub needs cross-signed-tofu)" in message
        assert "hello hub" not in message and "hello hub" not in str(caught.value)
    finally:
        await alice_db.stop()


@pytest.mark.filterwarnings("ignore:The sender_key field in Megolm events:DeprecationWarning")
async def test_a_key_that_never_arrives_is_reported_to_the_sender(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    hs = FakeHomeserver()
    hub = await make_engine({"key_wait_seconds": 0, "key_request_seconds": 0})
    engine = await hub_device(hs, hub)
    alice, alice_db = await open_machine(hs, tmp_path, ALICE, "ALICEDEVICE")
    try:
        await alice.share_keys(0)
        await alice.share_group_session(ROOM, [ALICE])  # the hub is left out
        with pytest.raises(KeysMissing) as caught:
            await engine.decrypt(room_event(await send_text(alice, "secret"), 1))
        message = caught.value.user_message
        assert "never received the keys" in message and "send it again" in message
        assert "unverified devices" in message
    finally:
        await alice_db.stop()
