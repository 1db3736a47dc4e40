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
from bridge.core.ids import LoginID, NetworkID, RemoteUserID
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.models import Portal
from bridge.portal.store import Store

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
        assert portal.mxid is not None
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
            await cast(SupportsInvites, loaded.client).handle_matrix_invite(
                portal, inviter, remote_user
            )
            await self.portals.ensure_ghost(portal.network, remote_user, loaded.client, None)
        except BridgeError as err:
            self._log.info("Refused adding %s to %s: %s", ghost, portal.key, err)
            await self._matrix.leave(portal.mxid, err.user_message, mxid=ghost)
            return
        await self._matrix.join(portal.mxid, mxid=ghost)

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
