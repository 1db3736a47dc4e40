"""A Matrix user invites a ghost: into a portal room, the person is added to the chat; into any
other room, a direct chat with them starts there. Both checked against the user's permission
level and the federation policy before the network is asked."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import cast

from bridge.core.clients import LoadedClient
from bridge.core.connector import (
    NetworkConnector,
    SupportsDirectChats,
    SupportsInvites,
    SupportsPolicyDomain,
)
from bridge.core.errors import BridgeError, NotSupported
from bridge.core.federation import FederationPolicy, remote_domain
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteUserID
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.models import Portal
from bridge.portal.store import Store

MODERATOR = 50
_INVITE_REFUSAL = "Only users of this bridge (the `user` level) may add people to its chats."


class GhostInvites:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        portals: PortalManager,
        connectors: dict[NetworkID, NetworkConnector],
        permissions: Permissions,
        federation: FederationPolicy,
        client_for: Callable[[NetworkID, LoginID, str | None], LoadedClient],
        policy_domain: Callable[[Portal, RemoteUserID | None], Awaitable[str]],
        log: logging.Logger,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self.portals = portals
        self._connectors = connectors
        self._permissions = permissions
        self._federation = federation
        self._client_for = client_for
        self._policy_domain = policy_domain
        self._log = log

    async def to_portal(self, portal: Portal, inviter: str, remote_user: RemoteUserID) -> None:
        """A Matrix user invited a ghost into a portal room: add that person to the chat."""
        room_id = portal.mxid
        assert room_id is not None
        ghost = self.portals.ghost_names.mxid(portal.network, remote_user)
        try:
            if self._permissions.level(inviter) < Permissions.USER:  # adds a recipient
                raise NotSupported("relay-level invite", user_message=_INVITE_REFUSAL)
            if refused := self._federation.refusal(
                portal.network,
                await self._policy_domain(portal, remote_user),
                inviter,
                entry="matrix invite",
            ):
                raise NotSupported(str(refused), user_message=refused.user_message)
            loaded = self._client_for(portal.network, portal.receiver, inviter)
            if not loaded.features.invites:
                name = self._connectors[portal.network].info.display_name
                raise NotSupported(
                    "no invites",
                    user_message=f"People cannot be added to {name} chats from Matrix.",
                )
            moved = await cast(SupportsInvites, loaded.client).handle_matrix_invite(
                portal, inviter, remote_user
            )
            if moved is not None and moved != portal.key:
                if await self._has_history(portal):
                    await self._open_elsewhere(portal, moved, inviter, ghost, loaded)
                    return
                # Nothing bridged here yet (a new room several people were invited into at
                # once: the first invite made it a direct chat): the room serves the new chat.
                self._log.info("%s moves from %s to %s", portal.mxid, portal.key, moved)
                await self.portals.move_room(portal, moved)
                await self._store.add_portal_user(inviter, moved)
            await self.portals.ensure_ghost(portal.network, remote_user, loaded.client, None)
        except BridgeError as err:
            self._log.info("Refused adding %s to %s: %s", ghost, portal.key, err)
            await self._matrix.leave(room_id, err.user_message, mxid=ghost)
            return
        await self._matrix.join(room_id, mxid=ghost)

    async def _has_history(self, portal: Portal) -> bool:
        """Whether messages of the chat were bridged into its room: people added there later
        would read them."""
        last = await self._store.get_last_message(portal.key)
        return last is not None and last.room_id == portal.mxid

    async def _open_elsewhere(
        self, portal: Portal, key: PortalKey, inviter: str, ghost: str, loaded: LoadedClient
    ) -> None:
        """The network made a new chat ``key`` instead of adding the person to ``portal``'s:
        it gets a room of its own (the inviter and its members), the old room and its history
        stay as they were, the ghost declines there and the inviter is told where to go."""
        room_id = portal.mxid
        assert room_id is not None
        info = await loaded.client.get_chat_info(key)
        if inviter not in (info.matrix_users or []):
            info.matrix_users = [*(info.matrix_users or []), inviter]
        new = await self.portals.ensure_portal(key, loaded.client, info)
        await self._store.add_portal_user(inviter, key)
        self._log.info("%s: new chat %s opened in %s for %s", room_id, key, new.mxid, inviter)
        assert new.mxid is not None
        await self._moderator(new.mxid, inviter)
        link = f"https://matrix.to/#/{new.mxid}"
        text = (
            "This chat cannot take more people, so a new group chat was opened with them,"
            f" without this room's history: {link}"
        )
        await self._matrix.leave(room_id, text, mxid=ghost)
        try:
            await self._matrix.send(
                self._matrix.bot_mxid,
                room_id,
                {
                    "msgtype": "m.notice",
                    "body": text,
                    "format": "org.matrix.custom.html",
                    "formatted_body": "This chat cannot take more people, so a new group chat"
                    f' was opened with them, <a href="{link}">here</a>, without this room\'s'
                    " history.",
                },
            )
        except BridgeError as err:  # the bot is not in the room: the ghost's reason says it
            self._log.info("No notice in %s about %s: %s", room_id, new.mxid, err)

    async def _moderator(self, room_id: str, mxid: str) -> None:
        """``mxid`` opened the chat of the bot's new room: they moderate it (kick as in their
        own room; the network still decides what a kick does there)."""
        try:
            levels, _ = await self._matrix.power_levels(room_id)
            users = dict(levels.get("users") or {})
            if users.get(mxid, levels.get("users_default", 0)) >= MODERATOR:
                return
            users[mxid] = MODERATOR
            await self._matrix.set_state(
                self._matrix.bot_mxid, room_id, "m.room.power_levels", {**levels, "users": users}
            )
        except BridgeError as err:
            self._log.info("%s stays without moderator power in %s: %s", mxid, room_id, err)

    async def to_room(
        self, room_id: str, inviter: str, network: NetworkID, ghost: str, remote_user: RemoteUserID
    ) -> None:
        """A Matrix user invited a ghost to a room: start a direct chat with that person."""
        try:
            if self._permissions.level(inviter) < Permissions.USER:
                raise NotSupported(
                    "not permitted", user_message="You may not start chats through this bridge."
                )
            # A network whose ids do not name their side (Teams) checks when it finds the person.
            connector = self._connectors.get(network)
            if not isinstance(connector, SupportsPolicyDomain) and (
                refused := self._federation.refusal(
                    network, remote_domain(remote_user), inviter, entry="matrix direct chat"
                )
            ):
                raise NotSupported(str(refused), user_message=refused.user_message)
            loaded = self._client_for(network, LoginID(""), inviter)
            if not loaded.features.direct_chats:
                name = self._connectors[network].info.display_name
                raise NotSupported(
                    "no direct chats", user_message=f"{name} chats cannot be started from Matrix."
                )
            key = await cast(SupportsDirectChats, loaded.client).start_direct_chat(
                remote_user, inviter
            )
            await self.portals.ensure_ghost(network, remote_user, loaded.client, None)
        except BridgeError as err:
            self._log.info("Refused chat with %s for %s: %s", ghost, inviter, err)
            await self._matrix.leave(room_id, err.user_message, mxid=ghost)
            return
        await self._matrix.join(room_id, mxid=ghost)
        # The bot joins right behind the ghost, before anything else: in an encrypted DM it holds
        # the keys, and what the user sends before it is in the room cannot be read by the hub.
        await self._matrix.invite(room_id, self._matrix.bot_mxid, inviter=ghost)
        await self._matrix.join(room_id)
        portal = await self.portals.find_portal(key) or Portal(
            network=key.network, remote_id=key.remote_id, receiver=key.receiver
        )
        if portal.mxid and portal.mxid != room_id:
            self._log.info("DM %s moves from %s to %s", key, portal.mxid, room_id)
            self.portals.room_keys.pop(portal.mxid, None)
        portal.mxid, portal.is_direct = room_id, True
        await self.portals.save_portal(portal)
        await self._store.add_portal_user(inviter, key)
        self.portals.room_keys[room_id] = key
        self._log.info("Started DM portal %s for %s in %s", key, inviter, room_id)
        await self.portals.announce_encryption(portal)
