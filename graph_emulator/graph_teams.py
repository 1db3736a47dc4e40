"""Teams and channels: ``/teams/{id}``, its channels, and channel messages with replies."""

from __future__ import annotations

from aiohttp import web

from . import channel_members
from . import permissions as perm
from .channel_members import readable
from .graph_delta import add_delta_routes
from .graph_messages import add_message_routes
from .odata import collection, entity, forbidden, odata_key
from .services import services
from .shapes import channel_json, team_json
from .state import Team, TokenGrant


def _team(request: web.Request) -> tuple[Team, TokenGrant]:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    team = svc.state.team(request.match_info["team_id"])
    if team.tenant_id != grant.tenant_id:
        raise forbidden("The caller's tenant does not own this team.")
    if grant.user_id is not None and grant.user_id not in team.members:
        raise forbidden(f"User '{grant.user_id}' is not a member of team '{team.id}'.")
    return team, grant


async def get_team(request: web.Request) -> web.Response:
    team, grant = _team(request)
    perm.require(grant, perm.READ_TEAM)
    return entity(request, services(request).config.public_url, "teams/$entity", team_json(team))


async def list_channels(request: web.Request) -> web.Response:
    team, grant = _team(request)
    perm.require(grant, perm.READ_CHANNELS)
    state = services(request).state
    channels = [state.channels[c] for c in team.channel_ids]
    values = [
        channel_json(c)
        for c in channels
        if c.membership_type == "standard" or grant.user_id is None or grant.user_id in c.members
    ]
    return collection(
        request,
        services(request).config.public_url,
        f"teams({odata_key(team.id)})/channels",
        values,
    )


async def get_channel(request: web.Request) -> web.Response:
    team, grant = _team(request)
    perm.require(grant, perm.READ_CHANNELS)
    channel = services(request).state.channel(team.id, request.match_info["channel_id"])
    readable(grant, channel)
    context = f"teams({odata_key(team.id)})/channels/$entity"
    return entity(request, services(request).config.public_url, context, channel_json(channel))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1.0/teams/{team_id}", get_team)
    app.router.add_get("/v1.0/teams/{team_id}/channels", list_channels)
    app.router.add_get("/v1.0/teams/{team_id}/channels/{channel_id}", get_channel)
    add_delta_routes(app, "/v1.0/teams/{team_id}/channels/{channel_id}")
    add_message_routes(app, "/v1.0/teams/{team_id}/channels/{channel_id}")
    channel_members.add_routes(app)
