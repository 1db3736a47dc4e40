"""What a permitted Matrix user does through the provisioning API: who am I, my logins, my
portals, bridge a room, relay mode in it. Every refusal is an :class:`ApiError` raised before
anything changes."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bridge.core.adopt import Refused
from bridge.core.agency_view import AgencyView
from bridge.core.connector import SupportsLogout
from bridge.core.errors import BridgeError, NotFound, TransientError
from bridge.core.ids import LoginID, NetworkID
from bridge.core.portal_commands import switch_relay
from bridge.provision import views
from bridge.provision.admin import origin
from bridge.provision.auth import Actor
from bridge.provision.errors import (
    ApiError,
    bad_request,
    conflict,
    forbidden,
    not_found,
    read_json,
    string_field,
    text,
)
from bridge.provision.networks import network_named
from bridge.provision.parts import ApiParts, Endpoints

ROOM_ID = re.compile(r"^![^:/\u0000-\u0020\u007f]+:[A-Za-z0-9.\-\[\]:]+$")
"""As ``openapi.yaml`` has it: ``!opaque:server``, at most 255 characters."""


def room_id_param(value: str) -> str:
    """``value`` if it is a room id, else the 400 that says so."""
    if len(value) > 255 or not ROOM_ID.fullmatch(value):
        raise bad_request("`room_id` is not a Matrix room id (!room:server).", "M_INVALID_PARAM")
    return value


class UserEndpoints(Endpoints):
    def __init__(self, parts: ApiParts) -> None:
        super().__init__(parts)
        self._view = AgencyView(parts.store)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/whoami", self.whoami)
        app.router.add_get("/logins", self.list_logins)
        app.router.add_delete("/logins/{network}/{login_id}", self.logout)
        app.router.add_get("/portals", self.list_portals)
        app.router.add_post("/portals", self.bridge)
        app.router.add_delete("/portals/{room_id}", self.unbridge)
        app.router.add_put("/portals/{room_id}/relay", self.set_relay)
        app.router.add_delete("/portals/{room_id}/relay", self.unset_relay)

    # --- who am I -------------------------------------------------------------------------------

    async def whoami(self, request: web.Request) -> web.Response:
        actor = await self._auth.actor(request)
        return web.json_response({
            "user_id": actor.mxid,
            "level": actor.level_name,
            "networks": [views.network(c) for c in self._connectors.values()],
            "logins": await self._logins_of(actor.mxid),
        })  # fmt: skip

    # --- logins ---------------------------------------------------------------------------------

    async def list_logins(self, request: web.Request) -> web.Response:
        actor = await self._auth.actor(request)
        return web.json_response({"logins": await self._logins_of(actor.mxid)})

    async def _logins_of(self, mxid: str) -> list[dict[str, Any]]:
        rows = await self._store.list_logins(user_mxid=mxid)
        loaded = dict(self._clients.items())
        return [views.login(row, loaded.get((row.network, row.login_id))) for row in rows]

    async def logout(self, request: web.Request) -> web.Response:
        """Log out of one login: the user's own, or (admins) anyone's."""
        actor = await self._auth.actor(request)
        network = self._network(request.match_info["network"])
        login_id = LoginID(text(request.match_info["login_id"], "login_id", max_length=255))
        row = await self._store.get_login(network, login_id)
        if row is None or (
            row.user_mxid != actor.mxid and not await self._view.has_login(actor.scope, row)
        ):
            # Someone else's login is as unknown to a user as one that does not exist.
            raise not_found(f"You have no {network} login {login_id}.")
        loaded = self._clients.remove(network, login_id)
        if loaded is not None:
            try:
                if isinstance(loaded.client, SupportsLogout):
                    await loaded.client.logout_remote()
                await loaded.client.disconnect()
            except BridgeError as err:  # the login goes anyway, as with the logout command
                self._log.warning("Logging out %s/%s remotely: %s", network, login_id, err)
        await self._store.delete_login(network, login_id)
        owner = "" if row.user_mxid == actor.mxid else f" of {row.user_mxid}"  # an admin's
        await self._audit.record(actor=actor.mxid, action="logout", outcome="ok",
                                 target=f"{network} {login_id}{owner}",
                                 origin=origin(request, actor))  # fmt: skip
        return web.json_response({"network": network, "login_id": login_id, "logged_out": True})

    # --- portals --------------------------------------------------------------------------------

    async def list_portals(self, request: web.Request) -> web.Response:
        actor = await self._auth.actor(request, query=("scope",))
        scope = request.query.get("scope", "mine")
        if scope not in ("mine", "all"):
            raise bad_request("`scope` is `mine` or `all`.", "M_INVALID_PARAM")
        if scope == "all":
            if not actor.scope:
                raise forbidden(
                    "Only bridge admins (and agency admins, for their agency) may list every "
                    "portal."
                )
            rows = await self._view.portals(actor.scope)
            await self._audit.record(actor=actor.mxid, action="list-portals", target="all",
                                     outcome="ok", origin=origin(request, actor))  # fmt: skip
        else:
            rows = await self._store.list_portals_for_user(actor.mxid)
        return web.json_response({"portals": [views.portal(p) for p in rows]})

    async def bridge(self, request: web.Request) -> web.Response:
        """Bridge an existing Matrix room the user is in to a chat of a network, through the
        same core path as ``!pontis bridge`` (:meth:`RoomBridging.bridge_command`)."""
        actor = await self._auth.actor(request)
        body = await read_json(request)
        room_id = room_id_param(string_field(body, "room_id", max_length=255))
        network = self._network(string_field(body, "network", max_length=64))
        chat_id = string_field(body, "chat_id")
        existing = await self._portals.portal_by_room(room_id)
        if existing is not None and existing.mxid == room_id:
            raise conflict("This room is already bridged.")
        await self._check_member(actor, room_id)
        try:
            portal = await self._bridging.bridge_command(room_id, actor.mxid, network, chat_id)
        except Refused as err:
            if "already bridged" in err.user_message:
                raise conflict(err.user_message) from None
            raise forbidden(err.user_message) from None
        except NotFound as err:
            raise not_found(err.user_message) from None
        except TransientError as err:
            raise ApiError(503, "FI.PONTIS.NETWORK_AWAY", err.user_message) from None
        except BridgeError as err:
            raise bad_request(err.user_message, "FI.PONTIS.REFUSED") from None
        return web.json_response(views.portal(portal), status=201)

    async def unbridge(self, request: web.Request) -> web.Response:
        """Stop bridging a room, through the same core path as ``!pontis unbridge``
        (:meth:`RoomBridging.unbridge`): the room stays, the portal is forgotten."""
        actor = await self._auth.actor(request)
        room_id = room_id_param(request.match_info["room_id"])
        existing = await self._portals.portal_by_room(room_id)
        if existing is None or existing.mxid != room_id:
            raise not_found("This room is not bridged.")
        await self._check_member(actor, room_id)
        try:
            portal = await self._bridging.unbridge(room_id, actor.mxid)
        except Refused as err:
            if "not bridged" in err.user_message:
                raise not_found(err.user_message) from None
            raise forbidden(err.user_message) from None
        except TransientError as err:
            raise ApiError(503, "FI.PONTIS.HOMESERVER_AWAY", err.user_message) from None
        except BridgeError as err:
            raise forbidden(err.user_message) from None
        return web.json_response(views.portal(portal))

    # --- relay mode -----------------------------------------------------------------------------

    async def set_relay(self, request: web.Request) -> web.Response:
        """Relay mode on, as ``set-relay``: through the user's own login if they have one."""
        return await self._switch_relay(request, on=True)

    async def unset_relay(self, request: web.Request) -> web.Response:
        return await self._switch_relay(request, on=False)

    async def _switch_relay(self, request: web.Request, *, on: bool) -> web.Response:
        actor = await self._auth.actor(request)
        room_id = room_id_param(request.match_info["room_id"])
        portal = await self._portals.portal_by_room(room_id)
        if portal is None or portal.mxid != room_id:
            raise not_found("This room is not bridged.")
        await self._check_member(actor, room_id)
        try:
            own = await switch_relay(
                portal, actor.mxid, on=on, permissions=self._permissions,
                bridging=self._bridging, store=self._store, portals=self._portals,
            )  # fmt: skip
        except TransientError as err:
            raise ApiError(503, "FI.PONTIS.HOMESERVER_AWAY", err.user_message) from None
        except BridgeError as err:  # relay mode off on this hub, or no power level
            raise forbidden(err.user_message) from None
        action = "set-relay" if on else "unset-relay"
        through = f"login {own.login_id}" if own else ("the bridge" if on else "")
        self._log.info("%s turned relay mode %s in %s", actor.mxid, "on" if on else "off", room_id)
        await self._audit.record(actor=actor.mxid, action=action, outcome="ok",
                                 target=f"{portal.network} {portal.remote_id}",
                                 detail=f"{room_id} {through}".strip(),
                                 origin=origin(request, actor))  # fmt: skip
        return web.json_response(views.portal(portal))

    async def _check_member(self, actor: Actor, room_id: str) -> None:
        """The user must be in the room, which the bot must be in too: through the management
        room that is shown by the command being sent there."""
        try:
            members = await self._matrix.joined_members(room_id)
        except TransientError:
            raise ApiError(503, "FI.PONTIS.HOMESERVER_AWAY", "The homeserver is away.") from None
        except BridgeError:
            raise not_found(
                "The bridge bot is not in this room (or it does not exist): invite it first."
            ) from None
        if actor.mxid not in members:
            raise forbidden(f"{actor.mxid} is not in this room.")

    def _network(self, name: str) -> NetworkID:
        return network_named(self._connectors, name)
