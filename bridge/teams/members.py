"""Teams chat members from Matrix: a Matrix user invites a Teams ghost into a portal room, and
the person is added to the Teams chat (Graph's "Add member to a chat"); a moderator kicks a
ghost and the person is removed from the Teams chat, if the moderator's own Teams account may.

A Matrix user's own Teams account joins and leaves group chats with their portal rooms in
:mod:`bridge.teams.matrix_members`.

Graph adds members to group chats only: a one-on-one chat keeps its two people, and a group
chat of them and the new person is made instead (:mod:`bridge.teams.group_chats`). The
person must be of the chat's own tenant (the hub adds no guests), and ``bridge.federation``
must let that tenant and the inviter meet (the core checked the chat's tenant already; a
person found in another tenant is refused here). The acting account adds them: the inviter's
own Teams login, else the relay account, which is a member of every chat it bridges for
Matrix users without one. Removing is never done by the relay account: a kick needs the
moderator's own login.
"""

from __future__ import annotations

from datetime import UTC, datetime

from msgraph import GraphServiceClient
from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember
from msgraph.generated.models.chat_type import ChatType

from bridge.core import BridgeError, NotSupported, RemoteUserID
from bridge.teams import directory
from bridge.teams.errors import graph_call
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink

ONE_ON_ONE = (
    "Teams cannot add people to a one-on-one chat. Start a Matrix room with all of them"
    " instead, or ask a Teams member to start a group chat."
)


async def add_member(
    net: TeamsNetwork,
    graph: GraphServiceClient,
    chat_id: str,
    person: RemoteUserID,
    inviter: str,
    *,
    delegated: bool,
) -> bool:
    """Add ``person`` to the Teams chat ``chat_id``, acting with ``graph``; refuse (a
    :class:`~bridge.core.BridgeError` whose message the inviter reads) what Teams or the
    policy does not allow, before any change. False for a one-on-one chat, which cannot take
    a third person (:mod:`bridge.teams.group_chats` makes a group chat instead)."""
    link = await chat_tenant_for(net, chat_id, person, inviter)
    chat = await graph_call(
        f"read chat {chat_id}", link.app.chats.by_chat_id(chat_id).get(), reading=True
    )
    if chat is not None and chat.chat_type == ChatType.OneOnOne:
        return False
    if chat is None or chat.chat_type != ChatType.Group:
        raise NotSupported(f"chat {chat_id} is not a group chat", user_message=ONE_ON_ONE)
    base = link.graph_url.rstrip("/")  # the tenant's cloud: a national one is not global
    member = AadUserConversationMember(
        odata_type="#microsoft.graph.aadUserConversationMember",
        roles=["owner"],
        # They see the chat from now on, as when someone is added in Teams without history.
        visible_history_start_date_time=datetime.now(UTC),
        additional_data={"user@odata.bind": f"{base}/users('{person}')"},
    )
    await graph_call(
        f"add {person} to {chat_id}",
        graph.chats.by_chat_id(chat_id).members.post(member),
        delegated=delegated,
    )
    return True


NOT_A_MEMBER = (
    "Your Teams account is not a member of this Teams chat, so it cannot remove people from it."
)


async def _membership_id(graph: GraphServiceClient, chat_id: str, person: str, *,
                         delegated: bool) -> str | None:  # fmt: skip
    """The id of ``person``'s membership of ``chat_id`` as ``graph`` sees the chat (a
    delegated token sees only chats its account is in: Graph answers 403 or 404)."""
    page = await graph_call(
        f"read the members of {chat_id}",
        graph.chats.by_chat_id(chat_id).members.get(),
        delegated=delegated,
    )
    for member in (page.value if page is not None else None) or []:
        raw = getattr(member, "user_id", None) or (member.additional_data or {}).get("userId")
        if raw and str(raw).lower() == person.lower() and member.id:
            return member.id
    return None


async def _group_chat(net: TeamsNetwork, chat_id: str) -> bool:
    link = await net.tenant_for_chat(chat_id)
    chat = await graph_call(
        f"read chat {chat_id}", link.app.chats.by_chat_id(chat_id).get(), reading=True
    )
    return chat is not None and chat.chat_type == ChatType.Group


async def remove(
    net: TeamsNetwork, graph: GraphServiceClient, me: str, chat_id: str, person: RemoteUserID
) -> None:
    """``me`` (the kicker's own Teams account) removes ``person`` from the group chat. Teams
    decides whether ``me`` may: a refusal is the kicker's to read."""
    if not await _group_chat(net, chat_id):
        raise NotSupported(
            f"chat {chat_id} is not a group chat",
            user_message="Nobody can be removed from a one-on-one Teams chat; they are still in it.",
        )
    try:
        mine = await _membership_id(graph, chat_id, me, delegated=True)
    except BridgeError as err:
        raise NotSupported(str(err), user_message=NOT_A_MEMBER) from err
    if mine is None:
        raise NotSupported(f"{me} is not in {chat_id}", user_message=NOT_A_MEMBER)
    membership = await _membership_id(graph, chat_id, person, delegated=True)
    if membership is None:
        return  # not (or no longer) in the Teams chat: nothing to do
    await graph_call(
        f"remove {person} from {chat_id}",
        graph.chats.by_chat_id(chat_id).members.by_conversation_member_id(membership).delete(),
        delegated=True,
    )


async def chat_tenant_for(
    net: TeamsNetwork, chat_id: str, person: RemoteUserID, inviter: str
) -> TenantLink:
    """The tenant of chat ``chat_id``, once ``person`` is known to be of it and the federation
    policy lets ``inviter`` reach it; a refusal the inviter reads otherwise."""
    link = await net.tenant_for_chat(chat_id)
    home = await directory.tenant_of(net, person)
    if home is not link:
        raise NotSupported(
            f"{person} is of tenant {home.id}, chat {chat_id} of {link.id}",
            user_message="That person is in another organisation than this Teams chat;"
            " Teams chats across organisations cannot be joined from here.",
        )
    directory.check_policy(net, link, inviter)
    return link
