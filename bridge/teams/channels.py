"""Team channels as portals: ``bridge teams <channel link>``, and Matrix → channel.

Bridging a channel takes a Matrix user logged in to Teams with an account of the channel's
tenant that can read the channel itself (Graph answers a non-member's delegated token 403):
the hub never shows a Matrix room a channel its user could not read in Teams. The channel's
portal goes into a Matrix space for its team (:mod:`bridge.core.spaces`), and the channel gets
its own Graph subscription (:mod:`bridge.teams.channel_subscriptions`).

Matrix → Teams: a message is a top-level channel message; a thread event (or a reply) is a
reply under the thread's root, as Teams channels have no other kind of reply.
"""

from __future__ import annotations

from typing import Any

from msgraph import GraphServiceClient

from bridge.core import (
    BridgeError,
    ChatInfo,
    MatrixMessage,
    NotFound,
    NotSupported,
    PermanentError,
    PortalKey,
    RemoteMessageID,
    RemoteUserID,
    SpaceInfo,
    TransientError,
)
from bridge.teams import channel_members
from bridge.teams.channel_files import share_to_channel
from bridge.teams.channel_link import BadChannelLink, ChannelLink, parse_channel_link
from bridge.teams.channel_subscriptions import ChannelSubscriptions
from bridge.teams.errors import graph_call
from bridge.teams.files import Call, read_within
from bridge.teams.from_matrix import as_posted, body_html, chat_message
from bridge.teams.ids import NETWORK, channel_key, parse_channel
from bridge.teams.mentions import Resolve, has_pills, pill_mxids, teams_mentions
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink

MAX_MENTIONS = 20
"""People looked up for one message's pills; more stay links (each is a Graph read)."""
NEEDS_LOGIN = (
    "Bridging a Teams channel needs your own Teams login (so the bridge knows you can read the"
    " channel): send `login teams` to the bridge bot, then try again."
)


def _refuse(why: str, user_message: str) -> NotSupported:
    return NotSupported(why, user_message=user_message)


async def bridge_channel(
    net: TeamsNetwork,
    subscriptions: ChannelSubscriptions,
    own: tuple[TenantLink, GraphServiceClient] | None,
    link_text: str,
    matrix_user: str,
) -> tuple[PortalKey, ChatInfo]:
    """``bridge teams <channel link>`` by ``matrix_user``; ``own`` is their Teams login's
    tenant and Graph client (``None`` without a login)."""
    try:
        link = parse_channel_link(link_text)
    except BadChannelLink as err:
        raise _refuse(f"bad channel link: {err}", str(err)) from None
    if own is None:
        raise _refuse("channel bridging without a Teams login", NEEDS_LOGIN)
    tenant, graph = own
    check_tenant(net, tenant, link.tenant_id, matrix_user, "channel")
    key = channel_key(link.team_id, link.channel_id)
    try:
        channel, team, ghosts = await _read_and_subscribe(net, subscriptions, tenant, graph, link)
    except TransientError as err:
        raise BridgeError(
            f"bridging {key.remote_id}: {err}",
            user_message="Teams is not reachable right now, so nothing was bridged: try again"
            " in a few minutes.",
        ) from None
    except (PermanentError, NotFound) as err:
        raise _refuse(
            f"{matrix_user} cannot read {link.channel_id}: {err}",
            "Teams does not let your account read that channel: check the link, and that you"
            " are a member of its team (and of the channel itself, if it is private or shared).",
        ) from None
    team_name = team.display_name or "Team"
    return key, ChatInfo(
        name=f"{team_name} · {channel.display_name or link.name or 'Channel'}",
        topic=channel.description,
        matrix_users=[matrix_user],
        members=ghosts,
        space=SpaceInfo(key=f"team:{link.team_id}", name=team_name, topic=team.description),
        members_only=True,  # the team's: no room of strangers reads it
    )


def check_tenant(
    net: TeamsNetwork, tenant: TenantLink, tenant_id: str, matrix_user: str, what: str
) -> None:
    """Refuse a ``what`` ("channel", "team") of tenant ``tenant_id`` unless it is the tenant of
    the user's login, ``tenant``, and the federation policy lets ``matrix_user`` meet it."""
    if net.tenant(tenant_id) is not tenant:
        raise _refuse(
            f"{what} of tenant {tenant_id}, login of {tenant.id}",
            f"That {what} is in another organisation than your Teams account; only {what}s of"
            " your own organisation can be bridged.",
        )
    refused = net.ctx.federation.refusal(
        NETWORK, tenant.tenant.tenant_id, matrix_user, entry=f"bridge teams {what}"
    )
    if refused is not None:
        raise _refuse(str(refused), refused.user_message)


async def _read_and_subscribe(
    net: TeamsNetwork,
    subscriptions: ChannelSubscriptions,
    tenant: TenantLink,
    graph: GraphServiceClient,
    link: ChannelLink,
) -> tuple[Any, Any, list[RemoteUserID]]:
    """The channel, read with the user's own token (Graph refuses it to anyone outside the
    team, and a private or shared channel to anyone outside the channel), its team and the
    ghosts of its members (bridge.teams.channel_members); then the channel's subscription.
    Raises what ``graph_call`` raises."""
    item = graph.teams.by_team_id(link.team_id).channels.by_channel_id(link.channel_id)
    channel = await graph_call(f"read channel {link.channel_id}", item.get(), delegated=True)
    team = await graph_call(
        f"read team {link.team_id}", tenant.app.teams.by_team_id(link.team_id).get(), reading=True
    )
    if channel is None or team is None:
        raise NotFound(f"Graph answered without channel {link.channel_id} or its team")
    key = channel_key(link.team_id, link.channel_id)
    await net.remember_chat(key.remote_id, tenant.id)
    ghosts = await _members(net, tenant, key.remote_id, channel)
    try:
        await graph_call(
            f"subscribe to {key.remote_id}", subscriptions.subscribe(tenant, key.remote_id)
        )
    except (PermanentError, NotFound) as err:
        raise BridgeError(
            str(err),
            user_message="Teams refused the bridge's app a subscription to that channel, so"
            " nothing was bridged: an administrator must grant it `ChannelMessage.Read.All`.",
        ) from None
    return channel, team, ghosts


async def _members(
    net: TeamsNetwork, tenant: TenantLink, portal_id: str, channel: Any
) -> list[RemoteUserID]:
    """The ghosts the room starts with. A private or shared channel is not bridged without
    its members (the room must hold no one else); a standard one is, without ghosts."""
    try:
        return await channel_members.at_bridging(net, tenant, portal_id)
    except (PermanentError, NotFound) as err:
        kind = channel.membership_type.value if channel.membership_type else "standard"
        if kind not in channel_members.MEMBERS_ONLY:
            net.ctx.log.warning("Members of %s not read, no ghosts join: %s", portal_id, err)
            return []
        raise BridgeError(
            str(err),
            user_message=f"Teams refused the bridge's app the members of that {kind} channel,"
            " so nothing was bridged: an administrator must grant it `ChannelMember.Read.All`.",
        ) from None


async def channel_info(net: TeamsNetwork, portal: PortalKey) -> ChatInfo:
    """A bridged channel's name and topic, read with the tenant's app token."""
    parsed = parse_channel(portal.remote_id)
    assert parsed is not None, portal
    link = await net.tenant_for_chat(portal.remote_id)
    builder = link.app.teams.by_team_id(parsed[0]).channels.by_channel_id(parsed[1])
    channel = await graph_call(f"read channel {parsed[1]}", builder.get(), reading=True)
    team = await graph_call(
        f"read team {parsed[0]}", link.app.teams.by_team_id(parsed[0]).get(), reading=True
    )
    team_name = (team.display_name if team else None) or "Team"
    return ChatInfo(
        name=f"{team_name} · {(channel.display_name if channel else None) or 'Channel'}",
        topic=channel.description if channel else None,
        space=SpaceInfo(key=f"team:{parsed[0]}", name=team_name),
    )


# --- Matrix → channel ------------------------------------------------------------------------


def _ids(portal_id: str) -> tuple[str, str]:
    parsed = parse_channel(portal_id)
    assert parsed is not None, portal_id
    return parsed


def _channel(graph: GraphServiceClient, portal_id: str) -> Any:
    team_id, channel_id = _ids(portal_id)
    return graph.teams.by_team_id(team_id).channels.by_channel_id(channel_id)


def _thread_root(msg: MatrixMessage) -> str | None:
    """The root message a Matrix thread event (or reply) answers in Teams."""
    target = msg.thread_root or msg.reply_to
    if target is None:
        return None
    return target.thread_root_id or target.remote_id


def mention_resolver(net: TeamsNetwork, portal_id: str, content: str) -> Any:
    """Who a Matrix pill names in the channel: a ghost's account or a logged-in Matrix user's,
    if the tenant has that person (read with the app token), under their Teams name."""

    async def build() -> Resolve:
        if not has_pills(content):
            return lambda mxid: None
        link = await net.tenant_for_chat(portal_id)
        logins = {mxid: account for account, mxid in (await net.logged_in()).items()}
        names: dict[str, str] = {}
        for mxid in pill_mxids(content)[:MAX_MENTIONS]:
            account = net.ctx.parse_ghost_mxid(mxid) or logins.get(mxid)
            if account is None or str(account) in names:
                continue
            try:
                user = await graph_call(
                    f"read user {account}", link.app.users.by_user_id(str(account)).get()
                )
            except Exception:
                continue  # not a person of this tenant: the pill stays a link
            if user is not None and user.display_name:
                names[str(account)] = user.display_name

        def resolve(mxid: str) -> tuple[str, str] | None:
            account = net.ctx.parse_ghost_mxid(mxid) or logins.get(mxid)
            if account is None or str(account) not in names:
                return None
            return str(account), names[str(account)]

        return resolve

    return build()


async def send_to_channel(
    net: TeamsNetwork, graph: GraphServiceClient, relay: bool, msg: MatrixMessage, call: Call
) -> tuple[str, Any]:
    """(what, the SDK call) that posts ``msg`` in its channel, as a reply under its thread's
    root if it is in a thread. A file other than a picture is uploaded first, into the
    channel's files folder (:mod:`bridge.teams.channel_files`)."""
    portal_id = msg.portal.remote_id
    content = body_html(msg.body, msg.html) if msg.media is None else ""
    image = file = None
    limit = net.cfg.max_file_mb * 1024 * 1024
    if msg.media is not None and msg.media.mimetype.startswith("image/"):
        image = (await read_within(msg.media, limit), msg.media.mimetype)
    elif msg.media is not None:  # a retry of the same event posts the file uploaded before
        team_id, channel_id = _ids(portal_id)
        file = await share_to_channel(
            graph, call, team_id, channel_id, msg.media, limit, net.ctx.store, msg.event_id
        )
    content, mentions = teams_mentions(content, await mention_resolver(net, portal_id, content))
    body = chat_message(
        as_posted(msg, content, relay=relay), image=image, mentions=mentions, file=file
    )
    messages = _channel(graph, portal_id).messages
    root = _thread_root(msg)
    if root is not None:
        return f"reply to {root} in {portal_id}", messages.by_chat_message_id(root).replies.post(
            body
        )
    return f"send to {portal_id}", messages.post(body)


def sent_id(portal_id: str, sent: Any) -> RemoteMessageID:
    if sent is None or not sent.id:
        raise PermanentError(
            f"Graph accepted a message in {portal_id} without an id",
            user_message="Teams took this message but did not say which it is: edits and"
            " replies to it will not reach Teams.",
        )
    return RemoteMessageID(sent.id)
