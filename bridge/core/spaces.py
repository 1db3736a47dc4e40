"""Matrix spaces for remote groups of chats (a Teams team and its channels).

A connector names a chat's group in :attr:`ChatInfo.space`; when the chat's portal room is
created or adopted, the core makes sure the group has a space (one per network and
``SpaceInfo.key``, created once by the bot and remembered in the store), invites the portal's
Matrix users to it, and links the two rooms both ways: ``m.space.child`` in the space (which the
bot owns) and ``m.space.parent`` in the portal room. An adopted room may not let the bot send
state; the parent link is then left out (the child link alone puts the room in the space).

Best effort throughout: a space that cannot be made or linked is logged and the portal works
without it (it is tried again the next time a portal of the group is made).
"""

from __future__ import annotations

import asyncio
import logging

from bridge.core.errors import BridgeError
from bridge.core.events import ChatInfo, SpaceInfo
from bridge.core.ids import NetworkID
from bridge.core.matrix import MatrixAPI
from bridge.portal.store import Store

_KEY = "core.space:"


class Spaces:
    def __init__(self, store: Store, matrix: MatrixAPI, domain: str, log: logging.Logger) -> None:
        self._store = store
        self._matrix = matrix
        self._domain = domain
        self._log = log
        self._lock = asyncio.Lock()

    async def space_of(self, network: NetworkID, key: str) -> str | None:
        """The room id of the space for group ``key`` of ``network``, if it was made."""
        return await self._store.kv_get(network, _KEY + key)

    async def place(self, network: NetworkID, room_id: str, info: ChatInfo) -> str | None:
        """Put portal room ``room_id`` in the space of ``info.space`` (made if needed) and
        invite ``info.matrix_users`` to the space. Returns the space's room id; ``None`` if the
        chat has no group, or its space could not be made."""
        space, users = info.space, info.matrix_users or []
        if space is None:
            return None
        try:
            space_id = await self._ensure(network, space, users)
        except BridgeError as err:
            self._log.warning("No space for %s %s: %s", network, space.key, err)
            return None
        bot = self._matrix.bot_mxid
        via = {"via": [self._domain]}
        try:
            await self._matrix.set_state(bot, space_id, "m.space.child", via, room_id)
        except BridgeError as err:
            self._log.warning("Could not add %s to space %s: %s", room_id, space_id, err)
            return space_id
        try:
            await self._matrix.set_state(
                bot, room_id, "m.space.parent", {**via, "canonical": True}, space_id
            )
        except BridgeError as err:  # an adopted room whose owner gave the bot no state power
            self._log.info("No m.space.parent in %s: %s", room_id, err)
        for mxid in users:
            try:
                await self._matrix.invite(space_id, mxid)
            except BridgeError as err:  # already in it, or left it on purpose
                self._log.debug("Not inviting %s to space %s: %s", mxid, space_id, err)
        return space_id

    async def _ensure(self, network: NetworkID, space: SpaceInfo, users: list[str]) -> str:
        async with self._lock:  # two portals of one new group at once: one space
            found = await self.space_of(network, space.key)
            if found:
                return found
            space_id = await self._matrix.create_room(
                name=space.name,
                topic=space.topic,
                is_direct=False,
                invite=list(users),
                initial_state=[],
                creation_content={"type": "m.space"},
            )
            await self._store.kv_set(network, _KEY + space.key, space_id)
            self._log.info("Created space %s for %s %s", space_id, network, space.key)
            return space_id
