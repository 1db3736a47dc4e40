"""``<network> contacts <room> list|add|remove <id>``: who receives a portal's new conversations,
for networks whose chats have no membership of their own (:class:`SupportsContacts`, email).

The room is named, as in the other portal commands, because whatever is said in a portal goes
to the network: the command is sent to the bot in the management room (or with the prefix in a
room that is not a portal). Who may: the portal room's members, and admins whose scope covers
the portal (:mod:`bridge.core.agencies`); anyone else is told the room is not bridged, so
nothing about another agency's portal leaks. The provisioning API
(:mod:`bridge.provision.contacts`) uses :func:`contacts_portal` for the same check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bridge.core.agency_view import AgencyView
from bridge.core.audit import AuditLog
from bridge.core.connector import NetworkConnector, SupportsContacts
from bridge.core.errors import BridgeError, NotFound
from bridge.core.ids import NetworkID
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.models import Portal
from bridge.portal.store import Store

Reply = Callable[[str, str], Awaitable[None]]
USAGE = "Usage: `{network} contacts <room> list`, `… add <address>` or `… remove <address>`."


class NotMember(BridgeError):
    """The user is neither in the portal room nor an admin of the portal."""


async def contacts_portal(
    room_id: str,
    sender: str,
    network: NetworkID | None,
    *,
    portals: PortalManager,
    matrix: MatrixAPI,
    permissions: Permissions,
    view: AgencyView,
) -> Portal:
    """The portal of ``room_id`` (on ``network``, if given) if ``sender`` may manage its
    contacts. :class:`NotFound` if it is not such a portal, :class:`NotMember` if ``sender`` is
    neither in the room nor an admin whose scope covers the portal (another agency's)."""
    portal = await portals.portal_by_room(room_id)
    if portal is None or portal.mxid != room_id or network not in (None, portal.network):
        where = f"bridged to {network}" if network else "bridged"
        raise NotFound(f"{room_id} is no portal", user_message=f"{room_id} is not {where}.")
    if await view.has_portal(permissions.admin_scope(sender), portal):
        return portal
    if sender not in await matrix.joined_members(room_id):
        raise NotMember(f"{sender} not in {room_id}", user_message=f"You are not in {room_id}.")
    return portal


class ContactCommands:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        portals: PortalManager,
        connectors: dict[NetworkID, NetworkConnector],
        permissions: Permissions,
        reply: Reply,
        log: logging.Logger,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self._portals = portals
        self._connectors = connectors
        self._permissions = permissions
        self._reply = reply
        self._log = log
        self._view = AgencyView(store)

    def handlers(self) -> dict[str, Callable[[str, str, str], Awaitable[None]]]:
        """One command per network that has contacts, named after the network."""
        return {
            str(network): self._handler(network)
            for network, connector in self._connectors.items()
            if isinstance(connector, SupportsContacts)
        }

    def _handler(self, network: NetworkID) -> Callable[[str, str, str], Awaitable[None]]:
        async def handle(room_id: str, sender: str, args: str) -> None:
            await self.contacts(network, room_id, sender, args)

        return handle

    async def contacts(self, network: NetworkID, room_id: str, sender: str, args: str) -> None:
        words = args.split()
        usage = USAGE.format(network=network)
        if len(words) < 3 or words[0].lower() != "contacts":
            await self._reply(room_id, usage)
            return
        target, action, rest = words[1], words[2].lower(), words[3:]
        if action not in ("list", "add", "remove") or (action != "list") != (len(rest) == 1):
            await self._reply(room_id, usage)
            return
        if target.startswith("#"):
            target = await self._matrix.resolve_alias(target) or target
        connector = self._connectors[network]
        assert isinstance(connector, SupportsContacts)
        try:
            portal = await contacts_portal(
                target, sender, network, portals=self._portals, matrix=self._matrix,
                permissions=self._permissions, view=self._view,
            )  # fmt: skip
        except (NotFound, NotMember):  # the same answer: whose rooms exist does not leak
            await self._reply(room_id, f"{target} is not bridged to {network}, or you are not "
                              "in it.")  # fmt: skip
            return
        if action == "list":
            contacts = await connector.list_contacts(portal.key)
            if not contacts:
                await self._reply(room_id, f"{target} has no contacts: new conversations reach "
                                  "nobody; answers to mail still go to its senders.")  # fmt: skip
                return
            lines = [f"**Contacts of {target}** ({len(contacts)})"]
            for contact in contacts:
                stopped = f" — stopped: {contact.stopped}" if contact.stopped else ""
                lines.append(f"- `{contact.remote_id}`{stopped}")
            await self._reply(room_id, "\n".join(lines))
            return
        audit = AuditLog(self._store)
        if action == "add":
            try:
                contact = await connector.add_contact(portal.key, rest[0])
            except BridgeError as err:
                await self._reply(room_id, err.user_message)
                return
            await audit.record(actor=sender, action="add-contact", target=str(portal.key),
                               outcome="ok", origin=f"room {room_id}",
                               detail=contact.remote_id)  # fmt: skip
            self._log.info("%s added contact %s to %s", sender, contact.remote_id, portal.mxid)
            await self._reply(room_id, f"`{contact.remote_id}` now receives the new "
                              f"conversations of {target}.")  # fmt: skip
            return
        removed = await connector.remove_contact(portal.key, rest[0])
        if not removed:
            await self._reply(room_id, f"`{rest[0]}` is not a contact of {target}.")
            return
        await audit.record(actor=sender, action="remove-contact", target=str(portal.key),
                           outcome="ok", origin=f"room {room_id}", detail=rest[0])  # fmt: skip
        self._log.info("%s removed contact %s from %s", sender, rest[0], portal.mxid)
        await self._reply(room_id, f"`{rest[0]}` no longer receives the new conversations of "
                          f"{target} (answers to their own mail still reach them).")  # fmt: skip
