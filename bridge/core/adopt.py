"""One way for a Matrix room and a remote chat to become a portal together.

Three ways in, one set of rules:

- ``bridge <network> <chat>`` in an existing room (:meth:`RoomBridging.bridge_command`): a
  permitted Matrix user makes that room the portal of a chat of the network;
- a room alias in a connector's namespace, ``#<network>_<escaped chat id>:<domain>``, that the
  homeserver asks the bridge about (:meth:`RoomBridging.alias_query`): the chat's portal gets
  that alias, and is created with it if the chat has none yet;
- a Matrix room a network offers to its own users under the room's alias, like an XMPP MUC
  hosted by the bridge (:meth:`RoomBridging.adopt_alias`): the bot joins and the room becomes
  the portal.

Who may: ``bridge`` (and ``unbridge``, :meth:`RoomBridging.unbridge`) needs the ``user`` level
and the power level to send the room's ``m.bridge`` state event, as the homeserver has it right
now. A room alias creates a new portal only if the operator made portals public
(``bridge.portals.public``): otherwise portals are invite only, and an alias can only lead to a
room that exists.

The rules: a room is the portal of at most one chat, and a chat has at most one room. A refusal
raises :class:`Refused` (or returns ``None`` where the caller only needs "no") and changes
nothing: no mapping, no state event, no alias. The check and the write happen under one lock, so
two requests at once cannot both pass the check.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from bridge.core.audit import AuditLog
from bridge.core.clients import ClientRegistry, LoadedClient
from bridge.core.connector import (
    NetworkConnector,
    SupportsPolicyDomain,
    SupportsRoomBridging,
    connector_named,
)
from bridge.core.errors import BridgeError, NotSupported
from bridge.core.events import ChatInfo
from bridge.core.federation import FederationPolicy, remote_domain
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID, unescape_localpart
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions, may_send_state
from bridge.core.portals import PortalManager
from bridge.portal.models import Portal
from bridge.portal.store import Store


class Refused(NotSupported):
    """This room and this chat cannot be bridged together; ``user_message`` says why."""


class RoomBridging:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        portals: PortalManager,
        clients: ClientRegistry,
        connectors: dict[NetworkID, NetworkConnector],
        permissions: Permissions,
        domain: str,
        log: logging.Logger,
        federation: FederationPolicy | None = None,
    ) -> None:
        self._federation = federation or FederationPolicy(None, domain)
        self._store = store
        self._matrix = matrix
        self._portals = portals
        self._clients = clients
        self._connectors = connectors
        self._permissions = permissions
        self._domain = domain
        self._log = log
        self._lock = asyncio.Lock()

    @property
    def federation(self) -> FederationPolicy:
        return self._federation

    @property
    def lock(self) -> asyncio.Lock:
        """Held while a chat's portal is given its room: ``bridge-team`` takes it too."""
        return self._lock

    # --- the three ways in ----------------------------------------------------------------------

    async def bridge_command(
        self, room_id: str, sender: str, network: str, remote_id: str
    ) -> Portal:
        """``sender`` asked in ``room_id`` to bridge it to ``remote_id`` on ``network``; a
        refusal is in the audit log too."""
        try:
            return await self._bridge_command(room_id, sender, network, remote_id)
        except Refused as err:
            await AuditLog(self._store).record(actor=sender, action="bridge", target=f"{network} {remote_id}", outcome="refused", origin=f"room {room_id}", detail=str(err))  # fmt: skip
            raise

    async def _bridge_command(
        self, room_id: str, sender: str, network: str, remote_id: str
    ) -> Portal:
        if self._permissions.level(sender) < Permissions.USER:
            raise Refused(
                f"{sender} may not bridge rooms",
                user_message="You may not bridge rooms through this bridge.",
            )
        connector = self._connector(network)
        # A network whose ids do not name their side (a Teams channel link) checks the policy
        # itself once it knows the chat's tenant (SupportsPolicyDomain).
        if not isinstance(connector, SupportsPolicyDomain) and (
            refused := self._federation.refusal(
                connector.info.id, remote_domain(remote_id), sender, entry="bridge command"
            )
        ):
            raise Refused(
                str(refused),
                user_message=refused.user_message,
            )
        await self.check_room_power(room_id, sender, "bridge")
        await self._check_room_free(room_id)
        loaded = self._clients.client_for(connector.info.id, LoginID(""), sender)
        key, info = await self._bridge_room(loaded, remote_id, sender)
        if info.members_only:
            await self._check_room_private(room_id, sender, remote_id)
        async with self._lock:
            await self._check_room_free(room_id)
            existing = await self._portals.find_portal(key)
            if existing is not None and existing.mxid:
                raise Refused(
                    f"{key} is already bridged to {existing.mxid}",
                    user_message=f"`{remote_id}` is already bridged to {existing.mxid}.",
                )
            portal = await self._portals.adopt_room(key, room_id, info)
            await self._store.add_portal_user(sender, key)
        self._log.info("%s bridged %s to %s", sender, room_id, key)
        await AuditLog(self._store).record(actor=sender, action="bridge", target=f"{key.network} {key.remote_id}", outcome="ok", origin=f"room {room_id}")  # fmt: skip
        return portal

    async def _check_room_private(self, room_id: str, sender: str, remote_id: str) -> None:
        """A members-only chat goes only into a room nobody else reads yet: not one anyone may
        join, not one that already holds other people (they would read the chat at once)."""
        join_rule, people = await self._matrix.room_audience(room_id)
        others = sorted(
            p for p in people
            if p not in (sender, self._matrix.bot_mxid)
            and not any(self._portals.ghost_names.owns(n, p) for n in self._connectors)
        )  # fmt: skip
        if join_rule not in ("invite", "private") or others:
            why = f"anyone may join it ({join_rule})" if not others else (
                f"{len(others)} other {'person is' if len(others) == 1 else 'people are'} in it"
            )  # fmt: skip
            raise Refused(
                f"{remote_id} is members-only and {room_id} is not private: {why}",
                user_message=f"Not bridged: only its members may read that chat, and {why}."
                " Make a new invite-only room, bridge it there while you are alone in it, then"
                " invite the people who may read it.",
            )

    async def unbridge(self, room_id: str, sender: str) -> Portal:
        """``sender`` asked in ``room_id`` to stop bridging it: the room stays, the portal (and
        its message mapping) is forgotten, and the bridge's state event in it is emptied.
        Done or refused, it is in the audit log."""
        audit = AuditLog(self._store)
        try:
            portal = await self._unbridge(room_id, sender)
        except Refused as err:
            await audit.record(actor=sender, action="unbridge", target=room_id, outcome="refused", origin=f"room {room_id}", detail=str(err))  # fmt: skip
            raise
        await audit.record(actor=sender, action="unbridge", target=f"{portal.network} {portal.remote_id}", outcome="ok", origin=f"room {room_id}")  # fmt: skip
        return portal

    async def _unbridge(self, room_id: str, sender: str) -> Portal:
        if self._permissions.level(sender) < Permissions.USER:
            raise Refused(f"{sender} may not unbridge rooms",
                          user_message="You may not unbridge rooms through this bridge.")  # fmt: skip
        await self.check_room_power(room_id, sender, "unbridge")
        async with self._lock:
            portal = await self._portals.portal_by_room(room_id)
            if portal is None or portal.mxid != room_id:
                raise Refused(
                    f"{room_id} is not a portal", user_message="This room is not bridged."
                )
            await self._portals.forget(portal)
        self._log.info("%s unbridged %s from %s", sender, room_id, portal.key)
        return portal

    async def check_room_power(self, room_id: str, sender: str, command: str) -> None:
        """Refuse ``command`` unless ``sender`` may change the room's state (send ``m.bridge``)."""
        levels, creators = await self._matrix.power_levels(room_id)
        if not may_send_state(levels, sender, "m.bridge", creators):
            raise Refused(
                f"{sender} lacks the power level for m.bridge in {room_id}",
                user_message=f"You need the power level to change this room's settings to "
                f"`{command}` it; ask a room admin or moderator.",
            )

    async def alias_query(self, alias: str) -> Portal | None:
        """The homeserver asks for ``alias``: the portal of the chat it names, which now has
        that alias; ``None`` if it names no chat the bridge can reach."""
        parsed = self._parse_alias(alias)
        if parsed is None:
            return None
        network, remote_id, localpart = parsed
        domain = remote_domain(remote_id)
        if not self._federation.open_to_every_server(network, domain):
            # The homeserver does not say who asks, and anyone on any server may: only a chat
            # every Matrix server may reach can be found by its alias.
            self._federation.refusal(network, domain, "*", entry="room alias query")
            self._log.info("Room alias query for %s: the federation policy does not open %s "
                           "to every Matrix server", alias, domain)  # fmt: skip
            return None
        try:
            if not self._permissions.public_portals:
                # Portals are private: an alias only leads to the room of a chat bridged already,
                # and the network is not even asked.
                key = PortalKey(network, RemoteChatID(remote_id))
                async with self._lock:
                    portal = await self._portals.find_portal(key)
                    if portal is not None and portal.mxid:
                        await self._matrix.add_alias(portal.mxid, localpart)
                        return portal
                self._log.info("Room alias query for %s: no portal yet, and portals are private "
                               "(bridge.portals.public is off)", alias)  # fmt: skip
                return None
            loaded = self._clients.client_for(network, LoginID(""), None)
            key, info = await self._bridge_room(loaded, remote_id, "")
            async with self._lock:
                portal = await self._portals.find_portal(key)
                if portal is not None and portal.mxid:
                    await self._matrix.add_alias(portal.mxid, localpart)
                    return portal
            # Not under the lock: it waits on the network and the homeserver, and a portal the
            # network creates meanwhile is found by ensure_portal itself.
            return await self._portals.ensure_portal(
                key, loaded.client, info, alias_localpart=localpart
            )
        except BridgeError as err:
            self._log.info("Room alias query for %s: %s", alias, err)
            return None

    async def adopt_alias(self, key: PortalKey, alias: str) -> Portal | None:
        """Make the Matrix room ``alias`` names the portal of ``key``, a room the network offers
        to its users; the bot joins it. ``None`` if the alias names no room, the bot cannot join
        it, or it is already the portal of another chat."""
        room_id = await self._matrix.resolve_alias(alias)
        if room_id is None:
            return None
        existing = await self._portals.find_portal(key)
        if existing is not None and existing.mxid == room_id:
            return existing
        try:
            await self._check_room_free(room_id)
            await self._matrix.join(room_id)
            name, topic = await self._matrix.room_name_and_topic(room_id)
            async with self._lock:
                await self._check_room_free(room_id)
                existing = await self._portals.find_portal(key)
                if existing is not None and existing.mxid and existing.mxid != room_id:
                    # The alias decides: it was moved to another room, and the chat follows it.
                    self._log.info("%s moves from %s to %s (%s)", key, existing.mxid, room_id,
                                   alias)  # fmt: skip
                    self._portals.room_keys.pop(existing.mxid, None)
                return await self._portals.adopt_room(
                    key, room_id, ChatInfo(name=name or alias, topic=topic)
                )
        except BridgeError as err:
            self._log.info("Cannot offer %s (%s) on %s: %s", alias, room_id, key.network, err)
            return None

    # --- the checks -----------------------------------------------------------------------------

    def _connector(self, network: str) -> NetworkConnector:
        try:
            return connector_named(self._connectors, network)
        except NotSupported as err:
            raise Refused(str(err), user_message=err.user_message) from None

    async def _check_room_free(self, room_id: str) -> None:
        portal = await self._portals.portal_by_room(room_id)
        if portal is not None and portal.mxid == room_id:
            raise Refused(
                f"{room_id} is already the portal of {portal.key}",
                user_message="This room is already bridged.",
            )

    async def _bridge_room(
        self, loaded: LoadedClient, remote_id: str, matrix_user: str
    ) -> tuple[PortalKey, ChatInfo]:
        if not loaded.features.room_bridging:
            name = self._connectors[loaded.network].info.display_name
            raise Refused(
                f"{loaded.network} has no room bridging",
                user_message=f"{name} chats cannot be bridged into existing rooms.",
            )
        client = cast(SupportsRoomBridging, loaded.client)
        key, info = await client.bridge_room(remote_id, matrix_user)
        if key.network != loaded.network:
            raise Refused(f"{loaded.network} answered {remote_id} with a portal of {key.network}")
        return key, info

    def _parse_alias(self, alias: str) -> tuple[NetworkID, str, str] | None:
        """(network, chat id, alias localpart) of ``#<network>_<escaped id>:<domain>``."""
        suffix = f":{self._domain}"
        if not (alias.startswith("#") and alias.endswith(suffix)):
            return None
        localpart = alias[1 : -len(suffix)]
        for network in self._connectors:
            escaped = localpart.removeprefix(f"{network}_")
            if escaped == localpart or not escaped:
                continue
            try:
                return network, unescape_localpart(escaped), localpart
            except (ValueError, UnicodeDecodeError) as err:
                self._log.info("Room alias query for %s: %s", alias, err)
                return None
        return None
