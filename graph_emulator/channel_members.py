"""Who is in a channel: ``GET /teams/{id}/channels/{id}/members``, and its changes.

A standard channel's members are its team's; a private or shared channel has a roster of its
own, and only its members read it (a delegated token of anyone else is refused the channel and
its messages, as Graph does). When people are added or removed, Teams writes a system message
into the channel (``membersAddedEventMessageDetail``/``membersDeletedEventMessageDetail``),
which the channel's subscriptions see like any new message.

The control API stands in for a Teams owner's client: ``POST
/_emulator/teams/{team}/channels/{channel}/members`` ``{"as": owner, "user": added}`` and
``DELETE /_emulator/teams/{team}/channels/{channel}/members/{user}?as=remover``. For a standard
channel they change the team's members (there is no other roster).
"""

from __future__ import annotations

from aiohttp import web

from . import chat_members
from . import permissions as perm
from .odata import GraphError, collection, forbidden, odata_key
from .services import Services, services
from .shapes import member_json
from .state import Channel, TokenGrant


def readable(grant: TokenGrant, channel: Channel) -> None:
    """A private or shared channel is refused to a delegated token of a non-member."""
    if channel.membership_type == "standard" or grant.user_id is None:
        return
    if grant.user_id not in channel.members:
        raise forbidden(f"User '{grant.user_id}' is not a member of channel '{channel.id}'.")


def _channel(request: web.Request) -> tuple[Services, Channel, TokenGrant]:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    info = request.match_info
    channel = svc.state.channel(info["team_id"], info["channel_id"])
    team = svc.state.team(channel.team_id)
    if team.tenant_id != grant.tenant_id:
        raise forbidden("The caller's tenant does not own this team.")
    if grant.user_id is not None and grant.user_id not in team.members:
        raise forbidden(f"User '{grant.user_id}' is not a member of team '{team.id}'.")
    readable(grant, channel)
    return svc, channel, grant


async def list_members(request: web.Request) -> web.Response:
    svc, channel, grant = _channel(request)
    perm.require(grant, perm.READ_CHANNEL_MEMBERS)
    values = [member_json(svc.state, channel.id, m, r) for m, r in channel.members.items()]
    context = f"teams({odata_key(channel.team_id)})/channels({odata_key(channel.id)})/members"
    start = int(request.query.get("$skiptoken", "0") or 0) if _is_offset(request) else 0
    end = start + svc.config.members_page_size
    following = str(end) if end < len(values) else None
    return collection(request, svc.config.public_url, context, values[start:end], following)


def _is_offset(request: web.Request) -> bool:
    token = request.query.get("$skiptoken", "")
    if token and not token.isdigit():
        raise GraphError(400, "BadRequest", f"Invalid $skiptoken {token!r}")
    return bool(token)


def _people(
    svc: Services, channel: Channel, actor_key: str, user_key: str
) -> tuple[str, str] | None:
    actor = svc.state.find_user(actor_key, channel.tenant_id)
    user = svc.state.find_user(user_key, channel.tenant_id)
    if actor is None or actor.id not in channel.members or user is None:
        return None
    return actor.id, user.id


async def control_add(request: web.Request) -> web.Response:
    svc = services(request)
    info = request.match_info
    channel = svc.state.channel(info["team_id"], info["channel_id"])
    data = await request.json()
    people = _people(svc, channel, str(data.get("as", "")), str(data.get("user", "")))
    if people is None:
        return web.json_response({"error": "'as' must be a member, 'user' of the tenant"}, status=400)  # fmt: skip
    actor, user = people
    team = svc.state.team(channel.team_id)
    if channel.membership_type != "standard" and user not in team.members:
        return web.json_response({"error": "add them to the team first"}, status=400)
    if user not in channel.members:
        channel.members[user] = ["member"]
        chat_members.announce(svc, channel, chat_members.ADDED, actor, [user])
    return web.json_response({"members": sorted(channel.members)}, status=201)


async def control_remove(request: web.Request) -> web.Response:
    svc = services(request)
    info = request.match_info
    channel = svc.state.channel(info["team_id"], info["channel_id"])
    people = _people(svc, channel, request.query.get("as", ""), info["user_id"])
    if people is None or people[1] not in channel.members:
        return web.json_response({"error": "'as' and the user must be members"}, status=400)
    actor, user = people
    del channel.members[user]
    chat_members.announce(svc, channel, chat_members.DELETED, actor, [user])
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1.0/teams/{team_id}/channels/{channel_id}/members", list_members)
    control = "/_emulator/teams/{team_id}/channels/{channel_id}/members"
    app.router.add_post(control, control_add)
    app.router.add_delete(control + "/{user_id}", control_remove)
