"""Matrix → Teams membership of Matrix users with a Teams login of their own: leaving a group
chat's portal room takes their Teams account out of the chat, and joining one (accepting
another Matrix user's invite) puts it in, so both sides agree on who reads the chat.

Only the account of the Matrix user whose own join or leave it is ever changes. The core calls
this for those only, never for a kick: the bridge bot kicking a Matrix user whose account Teams
removed (:mod:`bridge.teams.member_sync`) is not echoed back. A join changes nothing when the
account is already a member (the user accepted the invite member sync sent when Teams added
them), and a leave nothing when it no longer is. Matrix users without a login write through
the relay account and are no member of the chat in Teams: nothing changes for them.

A leave is done with the user's own token (anyone may leave a group chat). A join is not:
Graph adds people only for someone already in the chat, so the inviter's own Teams login adds
the joiner; without one the joiner is told why they are not in the Teams chat. The bridge's
own invites add nobody: it invites a Matrix user whose account Teams added, or one a chat
reaches through the relay account (a service chat, a relay chat of theirs). One-on-one
chats keep their two people in Teams and channels their team's members: their rooms' joins and
leaves change nothing there (but a join of a private or shared channel's room by someone not
among its members removes them, :func:`bridge.teams.channel_members.joined`).

A homeserver makes a deactivated Matrix account leave every room the same way, after deleting
its devices: a leave by an account with no device (with keys) left is not followed in Teams, so
deactivating a Matrix account does not take the person out of their Teams chats. (An account
whose clients never set up encryption looks the same: its leaves stay in Matrix.)
"""

from __future__ import annotations

from msgraph import GraphServiceClient
from msgraph.generated.models.chat_type import ChatType

from bridge.core import (
    AuthExpired,
    BridgeError,
    MatrixMembership,
    NotFound,
    NotSupported,
    RemoteUserID,
    TransientError,
)
from bridge.portal.models import Login
from bridge.teams import channel_members, members
from bridge.teams.errors import graph_call
from bridge.teams.group_chats import relay_owner_key
from bridge.teams.ids import parse_channel, user_id
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink

NO_ADDER = (
    "Your Teams account is not a member of this Teams chat, and {because}, so Teams members"
    " do not see you and what you write does not reach them. Ask someone in the chat who has"
    " a Teams login to invite you, or ask a Teams member to add you in Teams."
)
NOT_ADDED = "Your Teams account could not be added to this Teams chat: {why}"
NOT_LEFT = (
    "{who} left this room, but Teams did not take their Teams account out of the chat ({why})."
    " They are still a member there and keep reading it in Teams: they can leave it in Teams."
)

_WHY = {403: "Teams refused it", 404: "Teams no longer knows that membership"}


async def membership_changed(net: TeamsNetwork, change: MatrixMembership) -> None:
    """``change.sender`` joined or left the portal room of a Teams chat."""
    chat_id = change.portal.remote_id
    if parse_channel(chat_id) is not None:
        if change.membership == "join":  # a private channel's room holds its members only
            await channel_members.joined(net, change)
        return
    if not change.may_use_bridge or change.membership not in ("join", "leave"):
        return
    link = await net.tenant_for_chat(chat_id)
    login = await _login_of(net, link, change.sender)
    if login is None:
        return  # no Teams login of theirs (a relay user): no membership of theirs in Teams
    if await net.ctx.store.kv_get(relay_owner_key(chat_id)) == change.sender:
        return  # the relay account's chat for them (bridge.teams.group_chats): not theirs
    if not await _is_group_chat(link, chat_id):
        net.ctx.log.info(
            "%s %s the room of %s, which is no group chat: Teams keeps its members",
            change.sender, "left" if change.membership == "leave" else "joined", chat_id,
        )  # fmt: skip
        return
    own = user_id(login.login_id)
    membership = await _membership_of(link, chat_id, own)
    if change.membership == "leave":
        if membership is not None:
            await _check_left_by_choice(net, change, chat_id)
            await _leave(net, change, chat_id, login, membership)
    elif membership is None:
        await _join(net, link, change, chat_id, own)


async def _check_left_by_choice(net: TeamsNetwork, change: MatrixMembership, chat_id: str) -> None:
    """A homeserver makes a deactivated account leave every room, after deleting its devices:
    a leave by an account with no device is not taken as its Teams account's leave. The room
    and the leaver (in their management room, should a client without encryption be all they
    use) are told their Teams account stays in the chat."""
    if await net.ctx.matrix_has_devices(change.sender):
        return
    net.ctx.log.warning(
        "%s left the room of %s with no device left (a deactivated account?): their Teams "
        "account stays in the chat", change.sender, chat_id,
    )  # fmt: skip
    raise NotSupported(
        f"{change.sender} left {chat_id} with no device left",
        user_message=NOT_LEFT.format(
            who=change.sender,
            why="their Matrix account has no device with encryption keys, as a deactivated"
            " account has none",
        ),
    )


async def _leave(
    net: TeamsNetwork, change: MatrixMembership, chat_id: str, login: Login, membership: str
) -> None:
    own = login.login_id
    graph = net.login_graphs.get(own)
    if graph is None:
        raise NotSupported(
            f"no loaded Teams login {own} for {change.sender}",
            user_message=NOT_LEFT.format(who=change.sender, why="their Teams login is not active"),
        )
    item = graph.chats.by_chat_id(chat_id).members.by_conversation_member_id(membership)
    try:
        await graph_call(f"remove {own} from {chat_id}", item.delete(), delegated=True)
    except TransientError:
        raise  # Graph away: tried again, in order, when it is back
    except BridgeError as err:
        status = getattr(err.__cause__, "response_status_code", None)
        why = _WHY.get(status, str(err)) if isinstance(status, int) else str(err)
        if isinstance(err, AuthExpired):
            why = "their Teams login has expired; `login teams` renews it"
        net.ctx.log.warning(
            "%s left the room of %s, but Teams kept their account %s in the chat: %s",
            change.sender, chat_id, own, err,
        )  # fmt: skip
        notice = NOT_LEFT.format(who=change.sender, why=why)
        raise NotSupported(str(err), user_message=notice) from err
    net.ctx.log.info(
        "%s left the room of %s: their account %s left it", change.sender, chat_id, own
    )


async def _join(
    net: TeamsNetwork, link: TenantLink, change: MatrixMembership, chat_id: str, own: RemoteUserID
) -> None:
    by_bridge = change.inviter == net.ctx.bot_mxid or net.ctx.parse_ghost_mxid(change.inviter)
    if change.inviter and by_bridge:
        # The bridge invited them: Teams added their account (then it is a member) or the
        # chat reaches them through the relay account (a service chat), not as a member.
        net.ctx.log.info(
            "%s joined the room of %s at the bridge's invite; their account %s stays out of it",
            change.sender, chat_id, own,
        )  # fmt: skip
        return
    adder = await _login_of(net, link, change.inviter) if change.inviter else None
    graph = net.login_graphs.get(adder.login_id) if adder is not None else None
    if graph is None:
        raise NotSupported(
            f"{change.sender} joined {chat_id}; nobody with a Teams login can add {own}",
            user_message=NO_ADDER.format(
                because=f"{change.inviter}, who invited you, has no Teams login here to add it"
                if change.inviter
                else "nobody with a Teams login invited you here to add it"
            ),
        )
    try:
        await members.add_member(net, graph, chat_id, own, change.inviter, delegated=True)
    except TransientError:
        raise
    except BridgeError as err:
        why = err.user_message or str(err)
        if isinstance(err, AuthExpired):  # the inviter's, not the joiner's: tell both
            why = f"the Teams login of {change.inviter} has expired; they can send `login teams`"
            why += " to the bridge bot, then invite you again."
        raise NotSupported(str(err), user_message=NOT_ADDED.format(why=why)) from err
    net.ctx.log.info(
        "%s joined the room of %s: %s's login added their account %s",
        change.sender, chat_id, change.inviter, own,
    )  # fmt: skip


async def _login_of(net: TeamsNetwork, link: TenantLink, mxid: str) -> Login | None:
    """``mxid``'s own Teams login in the chat's tenant, or None."""
    for login in await net.ctx.store.list_logins():
        if login.user_mxid == mxid and net.tenant(str(login.metadata.get("tenant_id", ""))) is link:
            return login
    return None


async def _is_group_chat(link: TenantLink, chat_id: str) -> bool:
    try:
        chat = await graph_call(
            f"read chat {chat_id}", link.app.chats.by_chat_id(chat_id).get(), reading=True
        )
    except NotFound:
        return False  # gone from Teams: no members to change
    return chat is not None and chat.chat_type == ChatType.Group


async def _membership_of(link: TenantLink, chat_id: str, account: RemoteUserID) -> str | None:
    """The id of ``account``'s membership of the chat, as the tenant's app reads it now."""
    app: GraphServiceClient = link.app
    page = await graph_call(
        f"read members of {chat_id}", app.chats.by_chat_id(chat_id).members.get(), reading=True
    )
    for member in (page.value if page is not None else None) or []:
        raw = getattr(member, "user_id", None) or (member.additional_data or {}).get("userId")
        if raw and user_id(str(raw)) == account and member.id:
            return str(member.id)
    return None
