"""``bridge-team teams <team link>``: the channels of a team, listed for the core to bridge.

The team is read with the acting user's own Teams token, so Graph itself refuses anyone who is
not a member of the team (403), and its list holds the private and shared channels only of
which the user is a member; a shared channel another organisation hosts is left out. Nothing
is subscribed here: the core bridges each channel through ``bridge_room`` with a channel link
made from the list (:func:`bridge.teams.channels.bridge_channel`, which reads the channel
again with the user's token), so a channel bridged with its team is bridged exactly as one
bridged alone.
"""

from __future__ import annotations

from urllib.parse import quote

from msgraph import GraphServiceClient

from bridge.core import (
    BridgeError,
    GroupChat,
    NotFound,
    NotSupported,
    PermanentError,
    TransientError,
)
from bridge.teams.channel_link import BadChannelLink, parse_team_link
from bridge.teams.channels import check_tenant
from bridge.teams.errors import graph_call
from bridge.teams.ids import channel_key
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink

NEEDS_LOGIN = (
    "Bridging a Teams team needs your own Teams login (so the bridge knows which channels you"
    " can read): send `login teams` to the bridge bot, then try again."
)


async def team_channels(
    net: TeamsNetwork,
    own: tuple[TenantLink, GraphServiceClient] | None,
    text: str,
    matrix_user: str,
) -> list[GroupChat]:
    """The channels of the team ``text`` names that ``matrix_user`` (whose Teams login is
    ``own``, ``None`` without one) may read, General first as Teams lists them."""
    try:
        link = parse_team_link(text)
    except BadChannelLink as err:
        raise NotSupported(f"bad team link: {err}", user_message=str(err)) from None
    if own is None:
        raise NotSupported("team bridging without a Teams login", user_message=NEEDS_LOGIN)
    tenant, graph = own
    tenant_id = link.tenant_id or tenant.id.lower()
    check_tenant(net, tenant, tenant_id, matrix_user, "team")
    try:
        page = await graph_call(
            f"list channels of team {link.team_id}",
            graph.teams.by_team_id(link.team_id).channels.get(),
            delegated=True,
        )
    except TransientError as err:
        raise BridgeError(
            f"listing channels of {link.team_id}: {err}",
            user_message="Teams is not reachable right now, so nothing was bridged: try again"
            " in a few minutes.",
        ) from None
    except (PermanentError, NotFound) as err:
        raise NotSupported(
            f"{matrix_user} cannot read team {link.team_id}: {err}",
            user_message="Teams does not let your account read that team: check the link, and"
            " that you are a member of the team.",
        ) from None
    chats = []
    for channel in (page.value if page is not None else None) or []:
        if not channel.id or (channel.tenant_id and channel.tenant_id.lower() != tenant_id):
            continue  # a shared channel hosted by another organisation
        name = channel.display_name or "Channel"
        bridge_id = (
            f"https://teams.microsoft.com/l/channel/{quote(channel.id, safe='')}/"
            f"{quote(name[:100], safe='')}?groupId={link.team_id}&tenantId={tenant_id}"
        )
        chats.append(GroupChat(channel_key(link.team_id, channel.id), bridge_id, name))
    return chats
