"""Adding Teams people to a bridged chat from Matrix: a Matrix user invites a Teams ghost into
a portal room, and the person is added to the Teams chat (Graph's "Add member to a chat").

Graph adds members to group chats only: a one-on-one chat keeps its two people, so the
invite is refused with a way forward. The person must be of the chat's own tenant (the hub
adds no guests), and ``bridge.federation`` must let that tenant and the inviter meet (the
core checked the chat's tenant already; a person found in another tenant is refused here).
The acting account adds them: the inviter's own Teams login, else the relay account, which
is a member of every chat it bridges for Matrix users without one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from msgraph import GraphServiceClient
from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember
from msgraph.generated.models.chat_type import ChatType

from bridge.core import NotSupported, RemoteUserID
from bridge.teams import directory
from bridge.teams.errors import graph_call
from bridge.teams.network import TeamsNetwork

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
) -> None:
    """Add ``person`` to the Teams chat ``chat_id``, acting with ``graph``; refuse (a
    :class:`~bridge.core.BridgeError` whose message the inviter reads) what Teams or the
    policy does not allow, before any change."""
    link = await net.tenant_for_chat(chat_id)
    home = await directory.tenant_of(net, person)
    if home is not link:
        raise NotSupported(
            f"{person} is of tenant {home.id}, chat {chat_id} of {link.id}",
            user_message="That person is in another organisation than this Teams chat;"
            " Teams chats across organisations cannot be joined from here.",
        )
    directory.check_policy(net, link, inviter)
    chat = await graph_call(
        f"read chat {chat_id}", link.app.chats.by_chat_id(chat_id).get(), reading=True
    )
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
