"""Room state the crypto engine needs: which rooms are encrypted, and who is in them.

mautrix's ``PgStateStore`` keeps it in ``mx_room_state``/``mx_user_profile`` in the *same*
database as the portal store and the crypto tables: mautrix's ``async_db`` carries the current
transaction's connection in a ContextVar, so a state store on another database, called inside a
crypto transaction, would silently run on the wrong connection.

What is known for certain to be unencrypted is kept in memory only (the table has no way to say
"checked, not encrypted"): after a restart the first send to such a room asks the homeserver once.
"""

from __future__ import annotations

from mautrix.client.state_store.asyncpg import PgStateStore
from mautrix.crypto import StateStore as CryptoStateStore
from mautrix.types import Membership, RoomID, UserID

ROOM_CACHE = 50_000


class RoomStateStore(PgStateStore, CryptoStateStore):  # type: ignore[misc]
    """Both a client state store (fed from transactions and ``get_state``) and the three
    questions ``OlmMachine`` asks."""

    async def members_for_keys(self, room_id: RoomID) -> list[UserID]:
        """Joined and invited members: the people whose devices get the room's keys."""
        return await self.get_members(room_id, memberships=(Membership.JOIN, Membership.INVITE))


class EncryptedRooms:
    """Memory in front of :class:`RoomStateStore` for the question every send asks."""

    def __init__(self, store: RoomStateStore) -> None:
        self._store = store
        self._known: dict[str, bool] = {}

    def remember(self, room_id: str, encrypted: bool) -> None:
        if len(self._known) >= ROOM_CACHE:
            self._known.clear()
        self._known[room_id] = encrypted

    def cached(self, room_id: str) -> bool | None:
        return self._known.get(room_id)

    async def stored(self, room_id: str) -> bool | None:
        if (known := self._known.get(room_id)) is not None:
            return known
        encrypted = await self._store.is_encrypted(RoomID(room_id))
        if encrypted:  # "not encrypted" in the table only means "not seen yet"
            self.remember(room_id, True)
            return True
        return None
