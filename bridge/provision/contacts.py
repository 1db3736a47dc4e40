"""Contacts of a portal through the provisioning API: who receives its new conversations, on
networks whose chats have no membership of their own (:class:`SupportsContacts`, email). The
same checks as ``<network> contacts`` (:func:`contacts_portal`): the room's members, or an admin
whose scope covers the portal; a room of another agency is refused before anything changes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.core.agency_view import AgencyView
from bridge.core.connector import Contact, SupportsContacts
from bridge.core.contact_commands import contacts_portal
from bridge.core.errors import BridgeError, TransientError
from bridge.portal.models import Portal
from bridge.provision.admin import origin
from bridge.provision.auth import Actor
from bridge.provision.errors import ApiError, bad_request, not_found, text
from bridge.provision.parts import ApiParts, Endpoints
from bridge.provision.user import room_id_param

MAX_CONTACT_LENGTH = 320


def _contact(contact: Contact) -> dict[str, Any]:
    return {"id": contact.remote_id, "stopped": contact.stopped}


NO_SUCH_PORTAL = (
    "This room is not bridged, or you are not in it (nor an admin of its agency); if it is"
    " bridged and you are, invite the bridge bot."
)


class ContactEndpoints(Endpoints):
    def __init__(self, parts: ApiParts) -> None:
        super().__init__(parts)
        self._view = AgencyView(parts.store)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/portals/{room_id}/contacts", self.list_contacts)
        app.router.add_put("/portals/{room_id}/contacts/{contact}", self.add_contact)
        app.router.add_delete("/portals/{room_id}/contacts/{contact}", self.remove_contact)

    async def _portal(self, request: web.Request) -> tuple[Actor, Portal, SupportsContacts]:
        actor = await self._auth.actor(request)
        room_id = room_id_param(request.match_info["room_id"])
        try:
            portal = await contacts_portal(
                room_id, actor.mxid, None, portals=self._portals, matrix=self._matrix,
                permissions=self._permissions, view=self._view,
            )  # fmt: skip
        except TransientError:
            raise ApiError(503, "FI.PONTIS.HOMESERVER_AWAY", "The homeserver is away.") from None
        except BridgeError:  # NotFound, NotMember and the rest: one answer, as the chat
            # command gives, so that nobody learns which rooms of other agencies are portals.
            raise not_found(NO_SUCH_PORTAL) from None
        connector = self._connectors.get(portal.network)
        if not isinstance(connector, SupportsContacts):
            raise not_found(f"{portal.network} portals have no contacts.")
        return actor, portal, connector

    async def list_contacts(self, request: web.Request) -> web.Response:
        _, portal, connector = await self._portal(request)
        contacts = await connector.list_contacts(portal.key)
        return web.json_response({"contacts": [_contact(c) for c in contacts]})

    async def add_contact(self, request: web.Request) -> web.Response:
        remote = text(request.match_info["contact"], "contact", max_length=MAX_CONTACT_LENGTH)
        actor, portal, connector = await self._portal(request)
        try:
            contact = await connector.add_contact(portal.key, remote)
        except BridgeError as err:
            raise bad_request(err.user_message, "M_INVALID_PARAM") from None
        await self._audit.record(actor=actor.mxid, action="add-contact", outcome="ok",
                                 target=f"{portal.network} {portal.remote_id}",
                                 detail=contact.remote_id, origin=origin(request, actor))  # fmt: skip
        return web.json_response(_contact(contact))

    async def remove_contact(self, request: web.Request) -> web.Response:
        remote = text(request.match_info["contact"], "contact", max_length=MAX_CONTACT_LENGTH)
        actor, portal, connector = await self._portal(request)
        if not await connector.remove_contact(portal.key, remote):
            raise not_found(f"{remote} is not a contact of this portal.")
        await self._audit.record(actor=actor.mxid, action="remove-contact", outcome="ok",
                                 target=f"{portal.network} {portal.remote_id}", detail=remote,
                                 origin=origin(request, actor))  # fmt: skip
        return web.json_response({"id": remote, "removed": True})
