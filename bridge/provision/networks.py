"""What a permitted Matrix user does with a network through the provisioning API: its login
flows, search its people, start a chat. The same core paths as ``search`` and ``start-chat`` in
the management room (:mod:`bridge.core.portal_commands`); every refusal is an :class:`ApiError`
raised before anything changes."""

from __future__ import annotations

import re

from aiohttp import web

from bridge.core.adopt import Refused
from bridge.core.connector import NetworkConnector
from bridge.core.errors import BridgeError, NotFound, NotSupported, TransientError
from bridge.core.ids import NetworkID
from bridge.core.portal_commands import LISTED, NetworkCannot, search_people, start_direct_chat
from bridge.provision import views
from bridge.provision.admin import origin
from bridge.provision.errors import (
    ApiError,
    bad_request,
    forbidden,
    not_found,
    read_json,
    string_field,
)
from bridge.provision.parts import Endpoints

MAX_QUERY = 256
"""Longest search query, in characters; a name or an address is far shorter."""
MAX_REMOTE_ID = 1000
_NETWORK_ID = re.compile(r"^[a-z][a-z0-9]*$")


def network_named(connectors: dict[NetworkID, NetworkConnector], name: str) -> NetworkID:
    """The id of a connector of this hub; 400 if ``name`` cannot be one, 404 if none is."""
    if len(name) > 64 or not _NETWORK_ID.fullmatch(name):
        raise bad_request("`network` is not a network id (xmpp, email, …).", "M_INVALID_PARAM")
    network = NetworkID(name)
    if network not in connectors:
        known = ", ".join(connectors) or "none"
        raise not_found(f"There is no network `{name}` here. Networks: {known}.")
    return network


def network_failure(err: BridgeError) -> ApiError:
    """What the API answers when the core or the network refused or failed."""
    if isinstance(err, Refused):
        return forbidden(err.user_message)
    if isinstance(err, NetworkCannot):
        return ApiError(501, "FI.PONTIS.NOT_SUPPORTED", err.user_message)
    if isinstance(err, NotSupported):  # no client to act with: the user is not logged in
        return ApiError(409, "FI.PONTIS.NOT_LOGGED_IN", err.user_message)
    if isinstance(err, NotFound):
        return not_found(err.user_message)
    if isinstance(err, TransientError):
        return ApiError(503, "FI.PONTIS.NETWORK_AWAY", err.user_message)
    return bad_request(err.user_message, "FI.PONTIS.REFUSED")


class NetworkEndpoints(Endpoints):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/networks/{network}/login-flows", self.login_flows)
        app.router.add_post("/networks/{network}/search", self.search)
        app.router.add_post("/networks/{network}/chats", self.start_chat)

    async def login_flows(self, request: web.Request) -> web.Response:
        await self._auth.actor(request)
        connector = self._connector(request.match_info["network"])
        return web.json_response(
            {"login_flows": [views.login_flow(f) for f in connector.login_flows()]}
        )

    async def search(self, request: web.Request) -> web.Response:
        """People of the network, as ``search <network> <query>`` finds them."""
        actor = await self._auth.actor(request)
        connector = self._connector(request.match_info["network"])
        body = await read_json(request)
        query = string_field(body, "query", max_length=MAX_QUERY)
        try:
            found = await search_people(self._clients, connector, actor.mxid, query)
        except NetworkCannot:
            raise ApiError(501, "FI.PONTIS.NOT_SUPPORTED", (
                f"{connector.info.display_name} cannot be searched; start a chat with the "
                f"person's id (POST /networks/{connector.info.id}/chats)."
            )) from None  # fmt: skip
        except BridgeError as err:
            raise network_failure(err) from None
        return web.json_response({"results": [
            {"id": user, "name": info.name or user} for user, info in found[:LISTED]
        ]})  # fmt: skip

    async def start_chat(self, request: web.Request) -> web.Response:
        """A direct chat with someone of the network, as ``start-chat`` starts it: 201 with a
        new portal, 200 with the one the user already had (and an invitation to it again)."""
        actor = await self._auth.actor(request)
        connector = self._connector(request.match_info["network"])
        body = await read_json(request)
        remote = string_field(body, "id", max_length=MAX_REMOTE_ID)
        try:
            portal, created = await start_direct_chat(
                remote, actor.mxid, connector=connector, entry="provisioning start-chat",
                federation=self._bridging.federation, clients=self._clients,
                portals=self._portals, matrix=self._matrix, store=self._store,
            )  # fmt: skip
        except BridgeError as err:
            raise network_failure(err) from None
        self._log.info("%s started chat %s in %s", actor.mxid, portal.key, portal.mxid)
        await self._audit.record(actor=actor.mxid, action="start-chat", outcome="ok",
                                 target=f"{connector.info.id} {remote}", detail=portal.mxid or "",
                                 origin=origin(request, actor))  # fmt: skip
        return web.json_response(views.portal(portal), status=201 if created else 200)

    def _connector(self, name: str) -> NetworkConnector:
        return self._connectors[network_named(self._connectors, name)]
