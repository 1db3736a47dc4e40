"""mautrix's crypto store, without a database round trip per message.

``PgCryptoStore`` reads the room's outbound Megolm session from the database and writes it back
(re-pickled) for every message sent, and reads and rewrites the inbound session for every message
received: about 1 ms of bridge CPU per message, most of what encryption costs. Here:

* **Outbound sessions live in memory only.** A restart starts a new session in each room (shared
  with the members' devices on the first message), which clients handle as any rotation. Never
  persisting them also means a session restored from disk can never reuse a message index,
  which clients would flag as a replay.
* **Inbound sessions are cached** (bounded, least recently used first out). A session is written
  when it is new or changed; the per-message bookkeeping of which indexes were seen, which only
  the ``delete_keys`` ratchet options use, stays in memory unless one of those is on.
* Whatever redacts inbound sessions (the ``delete_keys`` options) empties the cache.
* Devices, cross-signing keys and signatures (read to judge the sender's trust on every message
  received) are cached per user, and replaced whenever the store writes them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mautrix.crypto import InboundGroupSession, OutboundGroupSession, PgCryptoStore
from mautrix.types import (
    CrossSigner,
    CrossSigningUsage,
    DeviceID,
    DeviceIdentity,
    IdentityKey,
    RoomID,
    SessionID,
    SigningKey,
    TOFUSigningKey,
    UserID,
)
from mautrix.util.async_db import Database

INBOUND_CACHE = 4096
USER_CACHE = 4096


class CachedCryptoStore(PgCryptoStore):
    def __init__(
        self, account_id: str, pickle_key: str, db: Database, *, persist_ratchet: bool
    ) -> None:
        super().__init__(account_id, pickle_key, db)
        self._persist_ratchet = persist_ratchet
        self._outbound: dict[RoomID, OutboundGroupSession] = {}
        self._inbound: OrderedDict[tuple[RoomID, SessionID], InboundGroupSession] = OrderedDict()
        self._devices: dict[UserID, dict[DeviceID, DeviceIdentity] | None] = {}
        self._cs_keys: dict[UserID, dict[CrossSigningUsage, TOFUSigningKey]] = {}
        self._signed: dict[tuple[CrossSigner, CrossSigner], bool] = {}

    async def open(self) -> None:
        await super().open()
        # Left by an older version that persisted them: never resume one (index reuse).
        await self.db.execute(
            "DELETE FROM crypto_megolm_outbound_session WHERE account_id=$1", self.account_id
        )

    # --- outbound: memory only ------------------------------------------------------------------

    async def add_outbound_group_session(self, session: OutboundGroupSession) -> None:
        self._outbound[session.room_id] = session

    async def update_outbound_group_session(self, session: OutboundGroupSession) -> None:
        self._outbound[session.room_id] = session

    async def get_outbound_group_session(self, room_id: RoomID) -> OutboundGroupSession | None:
        return self._outbound.get(room_id)

    async def remove_outbound_group_session(self, room_id: RoomID) -> None:
        self._outbound.pop(room_id, None)

    async def remove_outbound_group_sessions(self, rooms: list[RoomID]) -> None:
        for room_id in rooms:
            self._outbound.pop(room_id, None)

    # --- inbound: cached ------------------------------------------------------------------------

    async def get_group_session(
        self, room_id: RoomID, session_id: SessionID
    ) -> InboundGroupSession | None:
        key = (room_id, session_id)
        session = self._inbound.get(key)
        if session is not None:
            self._inbound.move_to_end(key)
            return session
        session = await super().get_group_session(room_id, session_id)
        if session is not None:
            self._remember(key, session)
        return session

    async def put_group_session(
        self,
        room_id: RoomID,
        sender_key: IdentityKey,
        session_id: SessionID,
        session: InboundGroupSession,
    ) -> None:
        key = (room_id, session_id)
        if not self._persist_ratchet and self._inbound.get(key) is session:
            return  # the same object back after a decrypt: only index bookkeeping changed
        await super().put_group_session(room_id, sender_key, session_id, session)
        self._remember(key, session)

    def _remember(self, key: tuple[RoomID, SessionID], session: InboundGroupSession) -> None:
        self._inbound[key] = session
        self._inbound.move_to_end(key)
        if len(self._inbound) > INBOUND_CACHE:
            self._inbound.popitem(last=False)

    async def redact_group_session(
        self, room_id: RoomID, session_id: SessionID, reason: str
    ) -> None:
        self._inbound.clear()
        await super().redact_group_session(room_id, session_id, reason)

    async def redact_group_sessions(
        self, room_id: RoomID | None, sender_key: IdentityKey | None, reason: str
    ) -> list[SessionID]:
        self._inbound.clear()
        return await super().redact_group_sessions(room_id, sender_key, reason)  # type: ignore[arg-type]

    async def redact_expired_group_sessions(self) -> list[SessionID]:
        self._inbound.clear()
        return await super().redact_expired_group_sessions()

    async def redact_outdated_group_sessions(self) -> list[SessionID]:
        self._inbound.clear()
        return await super().redact_outdated_group_sessions()

    # --- devices and cross-signing: cached per user -----------------------------------------

    async def get_devices(self, user_id: UserID) -> dict[DeviceID, DeviceIdentity] | None:
        if user_id not in self._devices:
            _bounded(self._devices)
            self._devices[user_id] = await super().get_devices(user_id)
        devices = self._devices[user_id]
        return None if devices is None else dict(devices)

    async def get_device(self, user_id: UserID, device_id: DeviceID) -> DeviceIdentity | None:
        devices = await self.get_devices(user_id)
        if devices is None:  # not tracked: whatever rows there are
            return await super().get_device(user_id, device_id)
        return devices.get(device_id)

    async def find_device_by_key(
        self, user_id: UserID, identity_key: IdentityKey
    ) -> DeviceIdentity | None:
        devices = await self.get_devices(user_id)
        if devices is None:
            return await super().find_device_by_key(user_id, identity_key)
        return next((d for d in devices.values() if d.identity_key == identity_key), None)

    async def put_devices(self, user_id: UserID, devices: dict[DeviceID, DeviceIdentity]) -> None:
        self._devices.pop(user_id, None)
        await super().put_devices(user_id, devices)
        self._devices[user_id] = dict(devices)

    async def put_cross_signing_key(
        self, user_id: UserID, usage: CrossSigningUsage, key: SigningKey
    ) -> None:
        self._cs_keys.pop(user_id, None)
        await super().put_cross_signing_key(user_id, usage, key)

    async def get_cross_signing_keys(
        self, user_id: UserID
    ) -> dict[CrossSigningUsage, TOFUSigningKey]:
        if user_id not in self._cs_keys:
            _bounded(self._cs_keys)
            self._cs_keys[user_id] = await super().get_cross_signing_keys(user_id)
        return dict(self._cs_keys[user_id])

    async def put_signature(self, target: CrossSigner, signer: CrossSigner, signature: str) -> None:
        self._signed.clear()
        await super().put_signature(target, signer, signature)

    async def is_key_signed_by(self, target: CrossSigner, signer: CrossSigner) -> bool:
        key = (target, signer)
        if key not in self._signed:
            _bounded(self._signed)
            self._signed[key] = bool(await super().is_key_signed_by(target, signer))
        return self._signed[key]

    async def drop_signatures_by_key(self, signer: CrossSigner) -> int:
        self._signed.clear()
        return await super().drop_signatures_by_key(signer)


def _bounded(cache: dict[Any, Any]) -> None:
    if len(cache) >= USER_CACHE:
        cache.clear()
