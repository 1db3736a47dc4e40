"""Teams channel → Matrix membership: who reads a bridged channel, as Teams has it now.

A standard channel's members are its team's; a private or shared channel (``membershipType``
``private``/``shared``) has a roster of its own, and only those people may read it (a shared
channel's may hold people of other tenants). Graph lists both at
``GET /teams/{id}/channels/{id}/members`` (``ChannelMember.Read.All``, with the app token).

When people are added or removed, Teams writes a system message into the channel, which the
channel's subscription reports like any message. As for chats (:mod:`bridge.teams.member_sync`)
the message's list is never trusted: a member-change message, and every catch-up, read the
channel's members again from Graph and the room is made to match them. Members join as ghosts
(Matrix users a change added with their own Teams account are invited); the ghost of someone no
longer a member leaves; a Matrix user whose own Teams account left is removed by the bot.

A private or shared channel's room holds only the channel's people: the bot, ghosts, and
Matrix users whose Teams login is a member. Anyone else in the room (invited by a member, or
whose account left while the bridge was down) is removed before the channel's next message,
edit or member change reaches the room (:func:`outsiders`, from the members last read); if
the bot may not remove them, nothing of the channel reaches the room. Someone who joins such
a room is checked at once (:func:`joined`): one who is not a logged-in member is removed then.
"""

from __future__ import annotations

from msgraph.generated.models.chat_message import ChatMessage

from bridge.core import (
    ChatInfo,
    MatrixMembership,
    PermanentError,
    PortalKey,
    RemoteChatID,
    RemoteChatInfo,
    RemoteEvent,
    RemoteKick,
    RemoteUserID,
)
from bridge.teams import member_sync
from bridge.teams.errors import graph_call
from bridge.teams.graph_links import on_graph
from bridge.teams.ids import NETWORK, parse_channel, user_id
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink

MEMBERS_ONLY = frozenset({"private", "shared"})
"""Channel kinds only their own members may read."""
MAX_GHOSTS = 1000
"""A team larger than this is not put into a standard channel's room as ghosts up front
(each is a Matrix join): its people appear as they write."""
MAX_MEMBER_PAGES = 50
"""Pages of a channel's members read (a shared channel may hold 5,000 people)."""
REMOVED = "Removed from the channel in Teams"
CANNOT_REMOVE = (
    "this room holds people who are not members of its private Teams channel, and the bridge"
    " bot may not remove them: give the bot moderator power in this room (or remove them"
    " yourself), then ask the bridge's operator to retry it."
)
NOT_A_MEMBER = (
    "Only the members of this private Teams channel may read it. Log in to Teams with your"
    " account of the channel (`login teams` to the bridge bot), then ask to be invited again."
)


def _kind_key(portal_id: str) -> str:
    return f"channel-kind:{portal_id}"


def _whole_key(portal_id: str) -> str:
    """Set while the members last read were all of them (no page left unread)."""
    return f"channel-members-whole:{portal_id}"


async def kind(net: TeamsNetwork, portal_id: str) -> str:
    """The channel's ``membershipType`` as last read (``standard`` if never read)."""
    return await net.ctx.store.kv_get(_kind_key(portal_id)) or "standard"


async def read(
    net: TeamsNetwork, link: TenantLink, portal_id: str
) -> tuple[str, set[RemoteUserID], bool]:
    """(membership type, member accounts, whether the list is whole), read with the app token
    and kept. A list Graph pages is not whole: nobody is removed on it."""
    team_id, channel_id = _ids(portal_id)
    item = link.app.teams.by_team_id(team_id).channels.by_channel_id(channel_id)
    channel = await graph_call(f"read channel {channel_id}", item.get(), reading=True)
    found = channel.membership_type if channel is not None else None
    membership = str(found.value) if found is not None else "standard"
    await net.ctx.store.kv_set(_kind_key(portal_id), membership)
    what = f"read members of {channel_id}"
    page = await graph_call(what, item.members.get(), reading=True)
    accounts: set[RemoteUserID] = set()
    for pages in range(1, MAX_MEMBER_PAGES + 1):
        for member in (page.value if page is not None else None) or []:
            raw = getattr(member, "user_id", None) or (member.additional_data or {}).get("userId")
            if raw:
                accounts.add(user_id(str(raw)))
        following = page.odata_next_link if page is not None else None
        if not following or not on_graph(following, link.graph_url) or pages == MAX_MEMBER_PAGES:
            break
        page = await graph_call(what, item.members.with_url(following).get(), reading=True)
    whole = page is not None and not page.odata_next_link
    if not whole:
        net.ctx.log.warning(
            "Members of %s did not all come (over %d pages): nobody is removed",
            portal_id, MAX_MEMBER_PAGES,
        )  # fmt: skip
    await net.ctx.store.kv_set(_whole_key(portal_id), "1" if whole else "")
    return membership, accounts, whole


async def at_bridging(net: TeamsNetwork, link: TenantLink, portal_id: str) -> list[RemoteUserID]:
    """The ghosts a newly bridged channel's room starts with; its members kept as seen, so a
    later removal is found. Raises what ``graph_call`` raises."""
    _, accounts, _ = await read(net, link, portal_id)
    await member_sync.remember(net, portal_id, accounts, "")
    return _ghosts(net, accounts, await net.logged_in())


def _ghosts(
    net: TeamsNetwork, accounts: set[RemoteUserID], logins: dict[str, str]
) -> list[RemoteUserID]:
    relays = net.relay_ids()
    ghosts = sorted(a for a in accounts if a not in logins and a not in relays)
    return ghosts if len(ghosts) <= MAX_GHOSTS else []


async def member_events(
    net: TeamsNetwork, link: TenantLink, portal_id: str, msg: ChatMessage, token: str
) -> list[RemoteEvent]:
    """A member-change message: the room made to match the channel's members as Graph has
    them now (the message only says whom to invite, if Graph agrees they are members)."""
    added = member_sync.named(msg) if _adds(msg) else set()
    return await reconcile(
        net, link, portal_id, added=added, named_gone=member_sync.named(msg), token=token
    )


def _adds(msg: ChatMessage) -> bool:
    name = type(msg.event_detail).__name__
    return name in ("MembersAddedEventMessageDetail", "MembersJoinedEventMessageDetail")


async def reconcile(
    net: TeamsNetwork,
    link: TenantLink,
    portal_id: str,
    *,
    added: set[RemoteUserID] | None = None,
    named_gone: set[RemoteUserID] | None = None,
    token: str = "",
) -> list[RemoteEvent]:
    """The room made to match the channel's members: on a member-change message and on every
    catch-up. Who left is what Graph's list lacks of what the bridge saw last time (and of
    whom the message names); ``token`` names the input, so converting it again after a crash
    finds the same removals (:func:`bridge.teams.member_sync.remember`)."""
    portal = await net.ctx.store.get_portal(RemoteChatID(portal_id))
    if portal is None or not portal.mxid:
        return []
    key = PortalKey(NETWORK, RemoteChatID(portal_id))
    membership, accounts, whole = await read(net, link, portal_id)
    before = await member_sync.remember(net, portal_id, accounts, token)
    logins = await net.logged_in()
    in_room = await net.ctx.matrix_members(portal.mxid)
    invite = member_sync.invitees(net, link, (added or set()) & accounts, logins, in_room)
    events: list[RemoteEvent] = [
        RemoteChatInfo(
            portal=key, info=ChatInfo(members=_ghosts(net, accounts, logins), matrix_users=invite)
        )
    ]
    kicked: set[str] = set()
    if whole:
        relays = net.relay_ids()
        for gone in sorted(((before or set()) | (named_gone or set())) - accounts - relays):
            mxid = logins.get(gone)
            if mxid is None:
                events.append(RemoteKick(portal=key, target=gone, reason=REMOVED, leave=True))
            elif mxid in in_room:  # their own account left: they no longer read the channel
                events.append(RemoteKick(portal=key, target=gone, reason=REMOVED, matrix_user=mxid))
                kicked.add(mxid)
    if membership in MEMBERS_ONLY and whole:
        events += await _outsiders(net, key, portal.mxid, in_room, accounts, logins, kicked)
    return events


async def outsiders(net: TeamsNetwork, key: PortalKey, room_id: str) -> list[RemoteEvent]:
    """Before a private or shared channel's message reaches its room: the removal of every
    Matrix user there who is not one of its members (as last read). Nothing for a standard
    channel, whose room's readers are the bridging user's to answer for."""
    if await kind(net, key.remote_id) not in MEMBERS_ONLY:
        return []
    accounts = await member_sync.last_seen(net, key.remote_id)
    if accounts is None:
        raise PermanentError(f"members of private channel {key.remote_id} never read")
    if not await net.ctx.store.kv_get(_whole_key(key.remote_id)):
        raise PermanentError(
            f"members of private channel {key.remote_id} not all read: nothing is shown"
        )
    in_room = await net.ctx.matrix_members(room_id)
    return await _outsiders(net, key, room_id, in_room, accounts, await net.logged_in(), set())


async def joined(net: TeamsNetwork, change: MatrixMembership) -> None:
    """``change.sender`` joined a channel's room (anyone: the connector ``guards_joins``, so
    the core passes even those who may not use the bridge). In a private or shared channel's
    room, someone whose own Teams login is not among the members Graph lists now is removed at
    once, as :func:`outsiders` would remove them before the next message (which still
    happens if this removal comes later: the messages queued before it). A Graph that cannot
    answer raises :class:`TransientError`: the join is tried again, the joiner neither removed
    nor taken for a member meanwhile. A list Graph pages removes nobody, as in
    :func:`reconcile`. If the bot may not remove them, the room is told (the core's
    removals) and the channel's messages stop until they are gone (:func:`outsiders`)."""
    portal_id, room_id = change.portal.remote_id, change.portal.mxid
    if not room_id or change.sender == net.ctx.bot_mxid or net.ctx.parse_ghost_mxid(change.sender):
        return
    if await kind(net, portal_id) not in MEMBERS_ONLY:
        return  # a standard channel's room: its readers are the bridging user's to answer for
    logins = await net.logged_in()
    if change.sender not in logins.values():  # no page of members can hold them: no Graph
        net.ctx.log.info("%s joined the room of %s with no Teams login: removing them",
                         change.sender, portal_id)  # fmt: skip
        await net.ctx.queue_remote_event(
            RemoteKick(
                portal=change.portal.key,
                target=RemoteUserID(""),
                reason=NOT_A_MEMBER,
                matrix_user=change.sender,
            )
        )
        return
    link = await net.tenant_for_chat(portal_id)
    membership, accounts, whole = await read(net, link, portal_id)
    if any(logins.get(account) == change.sender for account in accounts):
        return
    if not whole:
        net.ctx.log.warning(
            "%s joined the room of %s; its members come in pages, so they stay",
            change.sender, portal_id,
        )  # fmt: skip
        return
    # Their own account was a member when last seen: Teams removed it, and the member-change
    # message saying so is still on its way (it finds them gone).
    own = {account for account, mxid in logins.items() if mxid == change.sender}
    removed = bool(own & (await member_sync.last_seen(net, portal_id) or set()))
    net.ctx.log.info(
        "%s joined the room of %s and is no logged-in member of that %s channel: removing them",
        change.sender, portal_id, membership,
    )  # fmt: skip
    await net.ctx.queue_remote_event(
        RemoteKick(
            portal=change.portal.key,
            target=RemoteUserID(""),
            reason=REMOVED if removed else NOT_A_MEMBER,
            matrix_user=change.sender,
        )
    )


async def _outsiders(
    net: TeamsNetwork,
    key: PortalKey,
    room_id: str,
    in_room: dict[str, str],
    accounts: set[RemoteUserID],
    logins: dict[str, str],
    kicked: set[str],
) -> list[RemoteEvent]:
    """The removal of the room's Matrix users who are not the channel's. Fails closed: if the
    bot may not remove them (a room of a user's own, where it has no moderator power), nothing
    of the channel is shown (PermanentError: the core sets the input aside and says so)."""
    members = {logins[a] for a in accounts if a in logins}
    strangers = sorted(set(in_room) - members - kicked - {net.ctx.bot_mxid})
    if (strangers or kicked) and not await _may_remove(net, room_id, [*strangers, *kicked]):
        raise PermanentError(
            f"{len(strangers) + len(kicked)} non-member(s) of {key.remote_id} in {room_id},"
            " and the bot may not remove them",
            user_message=CANNOT_REMOVE,
        )
    return [
        RemoteKick(portal=key, target=RemoteUserID(""), reason=NOT_A_MEMBER, matrix_user=mxid)
        for mxid in strangers
    ]


async def _may_remove(net: TeamsNetwork, room_id: str, mxids: list[str]) -> bool:
    """Whether the bot may kick all of ``mxids`` from the room."""
    levels, creators = await net.ctx.matrix_power_levels(room_id)
    bot = net.ctx.bot_mxid
    if bot in creators:
        return True
    users = levels.get("users") or {}
    default = int(levels.get("users_default", 0))
    mine = int(users.get(bot, default))
    if mine < int(levels.get("kick", 50)):
        return False
    return all(m not in creators and int(users.get(m, default)) < mine for m in mxids)


def _ids(portal_id: str) -> tuple[str, str]:
    parsed = parse_channel(portal_id)
    assert parsed is not None, portal_id
    return parsed
