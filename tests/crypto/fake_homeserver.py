"""Two mautrix OlmMachines in one process, without a homeserver: the key and to-device
endpoints they need (:class:`FakeHomeserver`), a room they both see as encrypted, and helpers to
deliver to-device events and send Megolm text.

Import it only from tests under ``tests/crypto``: their conftest installs the vodozemac adapter
as ``olm`` before this module imports mautrix.crypto.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

from mautrix.client import Client
from mautrix.crypto import OlmMachine, PgCryptoStore, StateStore
from mautrix.types import (
    DeviceID,
    EncryptedEvent,
    EncryptedMegolmEventContent,
    EncryptionAlgorithm,
    EventType,
    MessageType,
    RoomEncryptionStateEventContent,
    RoomID,
    TextMessageEventContent,
    ToDeviceEvent,
    UserID,
)
from mautrix.util.async_db import Database

ROOM = RoomID("!room:example.org")
ALICE = UserID("@alice:example.org")
BOB = UserID("@bob:example.org")


class FakeHomeserver:
    """The key and to-device endpoints of a homeserver, for OlmMachines in one process."""

    def __init__(self) -> None:
        self.device_keys: dict[str, dict[str, Any]] = defaultdict(dict)
        self.one_time_keys: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
        self.inbox: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

    def client(self, user_id: UserID, device_id: DeviceID) -> Client:
        return Client(
            mxid=user_id, device_id=device_id, api=cast(Any, FakeAPI(self, user_id, device_id))
        )


class FakeAPI:
    """Stands in for mautrix's HTTPAPI: answers the JSON a homeserver would."""

    def __init__(self, hs: FakeHomeserver, user_id: UserID, device_id: DeviceID) -> None:
        self.hs, self.user_id, self.device_id = hs, user_id, device_id
        self.log = logging.getLogger(f"pontis.test.api.{device_id}")
        self._txn = itertools.count()

    def get_txn_id(self) -> str:
        return f"txn{next(self._txn)}"

    async def request(self, method: Any, path: Any, content: Any = None, **_: Any) -> Any:
        url, body, me = str(path), content or {}, (self.user_id, self.device_id)
        if url.endswith("/keys/upload"):
            if "device_keys" in body:
                self.hs.device_keys[self.user_id][self.device_id] = body["device_keys"]
            self.hs.one_time_keys[me].update(body.get("one_time_keys", {}))
            return {"one_time_key_counts": {"signed_curve25519": len(self.hs.one_time_keys[me])}}
        if url.endswith("/keys/query"):
            users = [u for u in body["device_keys"] if u in self.hs.device_keys]
            return {"device_keys": {u: dict(self.hs.device_keys[u]) for u in users}}
        if url.endswith("/keys/claim"):
            claimed: dict[str, dict[str, Any]] = defaultdict(dict)
            for user_id, devices in body["one_time_keys"].items():
                for device_id in devices:
                    keys = self.hs.one_time_keys[(user_id, device_id)]
                    if keys:
                        key_id = next(iter(keys))
                        claimed[user_id][device_id] = {key_id: keys.pop(key_id)}
            return {"one_time_keys": claimed}
        if "/sendToDevice/" in url:
            event_type = url.split("/")[-2]
            for user_id, devices in body["messages"].items():
                for device_id, message in devices.items():
                    event = {"sender": self.user_id, "type": event_type, "content": message}
                    self.hs.inbox[(user_id, device_id)].append(event)
            return {}
        raise AssertionError(f"unexpected request {method} {url}")


class EncryptedRoomState(StateStore):
    async def is_encrypted(self, room_id: RoomID) -> bool:
        return True

    async def get_encryption_info(self, room_id: RoomID) -> RoomEncryptionStateEventContent:
        return RoomEncryptionStateEventContent(algorithm=EncryptionAlgorithm.MEGOLM_V1)

    async def find_shared_rooms(self, user_id: UserID) -> list[RoomID]:
        return [ROOM]


async def open_machine(
    hs: FakeHomeserver, tmp_path: Path, user_id: UserID, device_id: str
) -> tuple[OlmMachine, Database]:
    db = Database.create(
        f"sqlite:{tmp_path / device_id}.db", upgrade_table=PgCryptoStore.upgrade_table
    )
    await db.start()
    store = PgCryptoStore(account_id=user_id, pickle_key=f"pickle key of {device_id}", db=db)
    log = cast(Any, logging.getLogger(f"pontis.test.crypto.{device_id}"))
    machine = OlmMachine(hs.client(user_id, DeviceID(device_id)), store, EncryptedRoomState(), log)
    await machine.load()
    return machine, db


async def deliver_to_device(hs: FakeHomeserver, machine: OlmMachine) -> list[dict[str, Any]]:
    events = hs.inbox.pop((machine.client.mxid, machine.client.device_id), [])
    for event in events:
        await machine.handle_to_device_event(ToDeviceEvent.deserialize(event))
    return events


def olm_type(event: dict[str, Any]) -> int:
    (ciphertext,) = event["content"]["ciphertext"].values()
    return int(ciphertext["type"])


def as_room_event(sender: UserID, content: EncryptedMegolmEventContent, n: int) -> EncryptedEvent:
    return EncryptedEvent.deserialize(
        {
            "room_id": ROOM,
            "event_id": f"$event{n}",
            "sender": sender,
            "origin_server_ts": 1_700_000_000_000 + n,
            "type": "m.room.encrypted",
            "content": content.serialize(),
        }
    )


async def send_text(machine: OlmMachine, text: str) -> EncryptedMegolmEventContent:
    content = TextMessageEventContent(msgtype=MessageType.TEXT, body=text)
    return await machine.encrypt_megolm_event(ROOM, EventType.ROOM_MESSAGE, content)
