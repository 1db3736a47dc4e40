"""Management commands about portals, relay mode, logins and new chats.

They are sent to the bot (in the management room, or with the prefix in a room it is in) and
name the portal room they act on (``!room:server`` or ``#alias:server``), since whatever is
said in a portal goes to the network. Who may: every command needs the ``user`` level (the
command processor checks that first); ``set-relay``, ``unset-relay`` and ``unbridge`` also need
the power level to change the portal room's state; ``delete-portal`` and listing every portal
are for bridge admins and, for what belongs to their agency, agency admins
(:mod:`bridge.core.agencies`); ``sync`` is for the portal room's members.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, cast, runtime_checkable

from bridge.core.adopt import Refused, RoomBridging
from bridge.core.agency_view import AgencyView
from bridge.core.audit import AuditLog
from bridge.core.clients import ClientRegistry
from bridge.core.connector import (
    NetworkConnector,
    SupportsDirectChats,
    SupportsPolicyDomain,
    connector_named,
)
from bridge.core.errors import BridgeError, NotSupported
from bridge.core.events import RemoteChatInfo, UserInfo
from bridge.core.federation import FederationPolicy, remote_domain
from bridge.core.group_bridging import bridge_group
from bridge.core.ids import LoginID, NetworkID, RemoteUserID
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.core.router import Router
from bridge.portal.models import BridgeUser, Login, Portal
from bridge.portal.store import Store

Reply = Callable[[str, str], Awaitable[None]]

ADMIN_REFUSAL = (
    "Only bridge admins may use `{command}`: it needs the `admin` level in `bridge.permissions`"
    " (or, for an agency's own portals and messages, to be one of its `admins` in"
    " `bridge.agencies`)."
)
LISTED = 50
"""Portals (and people found) listed in one reply."""
RELAY_OFF = "Relay mode is turned off on this hub (`bridge.relay.enabled`); ask its operator."


@runtime_checkable
class SupportsSearch(Protocol):
    """Optional on a network client: find people for ``search <network> <query>``."""

    async def search_users(
        self, query: str, matrix_user: str
    ) -> list[tuple[RemoteUserID, UserInfo]]:
        """People ``matrix_user`` may find: only where ``bridge.federation`` lets them meet."""
        ...


class NetworkCannot(NotSupported):
    """The network cannot do this at all (be searched, have chats started from Matrix): no
    login or permission would change that."""


# --- what the commands and the provisioning API share -------------------------------------------


async def switch_relay(
    portal: Portal,
    sender: str,
    *,
    on: bool,
    permissions: Permissions,
    bridging: RoomBridging,
    store: Store,
    portals: PortalManager,
) -> Login | None:
    """Turn relay mode on or off in ``portal``'s room for ``sender`` (``set-relay`` and
    ``unset-relay``). :class:`Refused`, with nothing changed, unless relay mode exists on this
    hub (to turn it on) and ``sender`` may change the room's state. It relays through the
    sender's own login of the network if they have one (returned), else the bridge."""
    assert portal.mxid is not None
    if on and not permissions.relay_enabled:
        raise Refused("relay is off in the config", user_message=RELAY_OFF)
    await bridging.check_room_power(portal.mxid, sender, "set-relay" if on else "unset-relay")
    own = await store.list_logins(network=portal.network, user_mxid=sender) if on else []
    portal.relay_login = (own[0].login_id if own else LoginID("")) if on else None
    await portals.save_portal(portal)
    return own[0] if own else None


async def search_people(
    clients: ClientRegistry, connector: NetworkConnector, sender: str, query: str
) -> list[tuple[RemoteUserID, UserInfo]]:
    """People of the network found for ``query`` through the client ``sender`` acts with."""
    loaded = clients.client_for(connector.info.id, LoginID(""), sender)
    if not isinstance(loaded.client, SupportsSearch):
        raise NetworkCannot("no search", user_message=f"{connector.info.display_name} cannot be "
                            f"searched; start a chat with `start-chat {connector.info.id} <id>`.")  # fmt: skip
    return await loaded.client.search_users(query, sender)


async def start_direct_chat(
    remote: str,
    sender: str,
    *,
    connector: NetworkConnector,
    entry: str,
    federation: FederationPolicy,
    clients: ClientRegistry,
    portals: PortalManager,
    matrix: MatrixAPI,
    store: Store,
) -> tuple[Portal, bool]:
    """Start a direct chat of ``sender`` with ``remote`` (``start-chat``): the portal and
    whether it is new. An existing one invites ``sender`` again. The federation policy comes
    first (:class:`Refused`, reported as refused at ``entry``); then the client to act with
    (:class:`NotSupported` without one) and whether the network can (:class:`NetworkCannot`)."""
    # A network whose ids do not name the remote side (Teams: the tenant) checks it itself,
    # once it has found the person (SupportsPolicyDomain).
    if not isinstance(connector, SupportsPolicyDomain) and (
        refused := federation.refusal(connector.info.id, remote_domain(remote), sender, entry=entry)
    ):
        raise Refused(str(refused),
                      user_message=refused.user_message)  # fmt: skip
    loaded = clients.client_for(connector.info.id, LoginID(""), sender)
    if not loaded.features.direct_chats:
        raise NetworkCannot("no direct chats", user_message=f"{connector.info.display_name} "
                            "chats cannot be started from Matrix.")  # fmt: skip
    user = RemoteUserID(remote)
    key = await cast(SupportsDirectChats, loaded.client).start_direct_chat(user, sender)
    existing = await portals.find_portal(key)
    if existing is not None and existing.mxid:
        await matrix.invite(existing.mxid, sender)
        await store.add_portal_user(sender, key)
        return existing, False
    info = await loaded.client.get_chat_info(key)
    info.is_direct = True
    info.matrix_users = list(dict.fromkeys([*(info.matrix_users or []), sender]))
    if user not in (info.members or []):
        info.members = [*(info.members or []), user]
    return await portals.ensure_portal(key, loaded.client, info), True


class PortalCommands:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        router: Router,
        connectors: dict[NetworkID, NetworkConnector],
        permissions: Permissions,
        reply: Reply,
        log: logging.Logger,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self._router = router
        self._connectors = connectors
        self._permissions = permissions
        self._reply = reply
        self._log = log
        self._view = AgencyView(store)
        # One bridge-team at a time: the same command sent twice while the first still runs
        # (50 channels take a while) must find the first one's portals, not make its own.
        self._group_lock = asyncio.Lock()

    def handlers(self) -> dict[str, Callable[[str, str, str], Awaitable[None]]]:
        return {
            "set-relay": self.set_relay,
            "unset-relay": self.unset_relay,
            "unbridge": self.unbridge,
            "list-portals": self.list_portals,
            "delete-portal": self.delete_portal,
            "list-logins": self.list_logins,
            "start-chat": self.start_chat,
            "bridge-team": self.bridge_team,
            "search": self.search,
            "set-management-room": self.set_management_room,
            "sync": self.sync,
        }

    # --- helpers --------------------------------------------------------------------------------

    async def _portal(self, args: str, command: str) -> Portal:
        """The portal of the room named in ``args`` (a room id or alias)."""
        target = args.strip()
        if not target or " " in target or target[0] not in "!#":
            raise BridgeError(
                f"bad {command} argument",
                user_message=f"Usage: `{command} <room>`, the room as `!id:server` or "
                "`#alias:server`.",
            )
        room_id = target if target.startswith("!") else await self._matrix.resolve_alias(target)
        portal = await self._router.portals.portal_by_room(room_id) if room_id else None
        if portal is None or not portal.mxid:
            raise BridgeError(f"{target} is no portal", user_message=f"{target} is not bridged.")
        return portal

    def _connector(self, network: str) -> NetworkConnector:
        return connector_named(self._connectors, network)

    # --- relay mode -----------------------------------------------------------------------------

    async def set_relay(self, room_id: str, sender: str, args: str) -> None:
        if not self._permissions.relay_enabled:
            await self._reply(room_id, RELAY_OFF)
            return
        portal = await self._portal(args, "set-relay")
        own = await switch_relay(
            portal, sender, on=True, permissions=self._permissions,
            bridging=self._router.bridging, store=self._store, portals=self._router.portals,
        )  # fmt: skip
        self._log.info("%s turned relay mode on in %s", sender, portal.mxid)
        through = f"your login {own.remote_name or own.login_id}" if own else "the bridge"
        await self._reply(
            room_id,
            f"Relay mode is on in {portal.mxid}: messages of people without a login are sent "
            f"by {through}, with their name in front.",
        )

    async def unset_relay(self, room_id: str, sender: str, args: str) -> None:
        portal = await self._portal(args, "unset-relay")
        await switch_relay(
            portal, sender, on=False, permissions=self._permissions,
            bridging=self._router.bridging, store=self._store, portals=self._router.portals,
        )  # fmt: skip
        self._log.info("%s turned relay mode off in %s", sender, portal.mxid)
        await self._reply(room_id, f"Relay mode is off in {portal.mxid}.")

    # --- portals --------------------------------------------------------------------------------

    async def unbridge(self, room_id: str, sender: str, args: str) -> None:
        portal = await self._portal(args or room_id, "unbridge")
        assert portal.mxid is not None
        await self._router.bridging.unbridge(portal.mxid, sender)
        await self._reply(
            room_id, f"{portal.mxid} is no longer bridged to {portal.network} `{portal.remote_id}`."
        )

    async def list_portals(self, room_id: str, sender: str, args: str) -> None:
        every = args.strip().lower() == "all"
        scope = self._permissions.admin_scope(sender)
        if every and not scope:
            await self._reply(room_id, ADMIN_REFUSAL.format(command="list-portals all"))
            return
        if every:
            portals = await self._view.portals(scope)
        else:
            portals = await self._store.list_portals_for_user(sender)
        portals = [p for p in portals if p.mxid]
        if not portals:
            await self._reply(room_id, "No portals.")
            return
        lines = [f"**Portals** ({len(portals)})"]
        for p in portals[:LISTED]:
            relay = ", relay on" if p.relay_login is not None else ""
            lines.append(f"- {p.network} `{p.remote_id}`: {p.name or '-'} ({p.mxid}{relay})")
        if len(portals) > LISTED:
            lines.append(f"- … and {len(portals) - LISTED} more")
        await self._reply(room_id, "\n".join(lines))

    async def delete_portal(self, room_id: str, sender: str, args: str) -> None:
        scope = self._permissions.admin_scope(sender)
        if not scope:
            await self._reply(room_id, ADMIN_REFUSAL.format(command="delete-portal"))
            return
        portal = await self._portal(args, "delete-portal")
        audit = AuditLog(self._store)
        if not await self._view.has_portal(scope, portal):
            await audit.record(actor=sender, action="delete-portal", target=str(portal.key),
                               outcome="refused", origin=f"room {room_id}",
                               detail=f"not in {scope.describe()}")  # fmt: skip
            # As if it were not bridged: another agency's portals are none of their business.
            await self._reply(room_id, f"{args.strip()} is not bridged.")
            return
        if others := await self._view.shared_with(scope, portal, self._permissions.agencies):
            await audit.record(actor=sender, action="delete-portal", target=str(portal.key),
                               outcome="refused", origin=f"room {room_id}",
                               detail=f"shared with {', '.join(others)}")  # fmt: skip
            await self._reply(room_id, f"{args.strip()} is shared with {', '.join(others)}: "
                              "deleting it would cut them off too, so only a bridge admin "
                              "may. Ask one, or unbridge it from the room instead.")  # fmt: skip
            return
        room = portal.mxid
        assert room is not None
        await self._router.portals.forget(portal)
        members = await self._matrix.joined_members(room)
        for mxid in members:
            if self._router.is_any_puppet(mxid) and mxid != self._matrix.bot_mxid:
                await self._quietly_leave(room, mxid)
        await self._quietly_leave(room, self._matrix.bot_mxid)
        await audit.record(actor=sender, action="delete-portal", target=str(portal.key),
                           outcome="ok", origin=f"room {room_id}", detail=room)  # fmt: skip
        await self._reply(room_id, f"Deleted the portal of {portal.network} `{portal.remote_id}` "
                          f"({room}): the bridge left the room.")  # fmt: skip

    async def _quietly_leave(self, room: str, mxid: str) -> None:
        try:
            await self._matrix.leave(room, "the portal was deleted", mxid=mxid)
        except BridgeError as err:
            self._log.info("%s could not leave %s: %s", mxid, room, err)

    async def sync(self, room_id: str, sender: str, args: str) -> None:
        """Fetch the chat's name, topic and members from the network again, in the portal's
        turn; for the portal's members and admins."""
        portal = await self._portal(args, "sync")
        assert portal.mxid is not None
        scope = self._permissions.admin_scope(sender)
        if not await self._view.has_portal(scope, portal) and sender not in (
            await self._matrix.joined_members(portal.mxid)
        ):
            await self._reply(room_id, f"You are not in {portal.mxid}.")
            return
        loaded = self._router.client_for(portal.network, portal.receiver, sender)
        info = await loaded.client.get_chat_info(portal.key)
        info.matrix_users = None  # a sync invites nobody new
        await self._router.submit_remote_event(
            portal.network, RemoteChatInfo(portal=portal.key, login=loaded.client.login_id,
                                           info=info, create_portal=False), wait=True,
        )  # fmt: skip
        await self._reply(
            room_id, f"Synced {portal.mxid} with {portal.network} `{portal.remote_id}`."
        )

    # --- logins and chats -----------------------------------------------------------------------

    async def list_logins(self, room_id: str, sender: str, args: str) -> None:
        every = args.strip().lower() == "all"
        scope = self._permissions.admin_scope(sender)
        if every and not scope:
            await self._reply(room_id, ADMIN_REFUSAL.format(command="list-logins all"))
            return
        if every:
            logins = await self._view.logins(scope)
        else:
            logins = await self._store.list_logins(user_mxid=sender)
        if not logins:
            await self._reply(room_id, "No logins.")
            return
        lines = ["**Logins**"]
        for login in logins:
            loaded = dict(self._router.clients.items()).get((login.network, login.login_id))
            if loaded is None:
                state = "not loaded"
            else:
                state = "connected" if loaded.connected else loaded.state_message
            who = f" of {login.user_mxid}" if every else ""
            lines.append(f"- {login.network}: {login.remote_name or login.login_id}{who} ({state})")
        await self._reply(room_id, "\n".join(lines))

    async def start_chat(self, room_id: str, sender: str, args: str) -> None:
        network, _, remote = args.partition(" ")
        remote = remote.strip()
        connector = self._connector(network)
        if not remote:
            await self._reply(room_id, f"Usage: `start-chat {network} <id>`")
            return
        router = self._router
        portal, created = await start_direct_chat(
            remote, sender, connector=connector, entry="start-chat command",
            federation=router.bridging.federation, clients=router.clients,
            portals=router.portals, matrix=self._matrix, store=self._store,
        )  # fmt: skip
        if not created:
            await self._reply(room_id, f"You already have that chat: {portal.mxid} (invited).")
            return
        self._log.info("%s started chat %s in %s", sender, portal.key, portal.mxid)
        await self._reply(room_id, f"Started a chat with `{remote}`: {portal.mxid} (invited).")

    async def bridge_team(self, room_id: str, sender: str, args: str) -> None:
        network, _, group = args.partition(" ")
        connector = self._connector(network)
        if not group.strip():
            await self._reply(room_id, f"Usage: `bridge-team {network} <team link>`")
            return
        user = await self._store.get_user_by_management_room(room_id)
        if user is None or user.mxid != sender:  # the answer names private channels
            await self._reply(room_id, "Send `bridge-team` in your management room.")
            return
        router = self._router
        async with self._group_lock:
            done = await bridge_group(
                group.strip(), sender, connector=connector, permissions=self._permissions,
                federation=router.bridging.federation, clients=router.clients,
                portals=router.portals, store=self._store, log=self._log,
                origin=f"room {room_id}", lock=router.bridging.lock,
            )  # fmt: skip
        await self._reply(room_id, done.answer(network))

    async def search(self, room_id: str, sender: str, args: str) -> None:
        network, _, query = args.partition(" ")
        connector = self._connector(network)
        if not query.strip():
            await self._reply(room_id, f"Usage: `search {network} <query>`")
            return
        found = await search_people(self._router.clients, connector, sender, query.strip())
        if not found:
            await self._reply(room_id, "Nobody found.")
            return
        lines = [f"- `{user}`: {info.name or user}" for user, info in found[:LISTED]]
        await self._reply(room_id, "**Found**\n" + "\n".join(lines))

    async def set_management_room(self, room_id: str, sender: str, args: str) -> None:
        members = await self._matrix.joined_members(room_id)
        others = set(members) - {sender, self._matrix.bot_mxid}
        if others:
            await self._reply(
                room_id,
                "A management room is only for you and the bot: this room has other members.",
            )
            return
        await self._store.save_user(BridgeUser(mxid=sender, management_room=room_id))
        self._log.info("Management room for %s is now %s", sender, room_id)
        await self._reply(room_id, "This is now your management room.")
