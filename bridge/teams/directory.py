"""Finding Teams people and opening chats with them from Matrix: ``search teams <name or
mail>`` and ``start-chat teams <person>`` (and the provisioning API's equivalents).

Search reads the tenants' directories with their app tokens (``User.Read.All``), as Graph's
advanced query ``$search`` (``ConsistencyLevel: eventual``); the relay accounts are left out.
A chat is opened by the account the Matrix user acts with: their own Teams login (the
one-on-one chat of the pair; Graph returns the existing one if there is one), or, for a user
without one, the tenant's relay account, in a group chat of that Matrix user's own
(:func:`bridge.teams.group_chats.relay_chat`; their messages carry their name). ``bridge.federation`` must
let the person's tenant and the Matrix user reach each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember
from msgraph.generated.models.chat import Chat
from msgraph.generated.models.chat_type import ChatType
from msgraph.generated.models.conversation_member import ConversationMember
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from bridge.core import BridgeError, NotFound, PermanentError, RemoteUserID, UserInfo
from bridge.teams.errors import graph_call
from bridge.teams.ids import NETWORK, user_id
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink

MAX_QUERY = 100
RESULTS = 20
_UNSAFE = re.compile(r'["\\\x00-\x1f]')


def search_phrase(query: str) -> str:
    """Graph's ``$search`` for people whose name or mail begins with ``query``; quotes and
    control characters cannot break out of the phrase."""
    text = " ".join(_UNSAFE.sub(" ", query).split())[:MAX_QUERY]
    if not text:
        raise BridgeError("empty search", user_message="Say whom to look for.")
    return f'"displayName:{text}" OR "mail:{text}"'


async def search(
    net: TeamsNetwork, links: Iterable[TenantLink], query: str
) -> list[tuple[RemoteUserID, UserInfo]]:
    phrase = search_phrase(query)
    relays = net.relay_ids()
    found: list[tuple[RemoteUserID, UserInfo]] = []
    for link in links:
        params = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            search=phrase, top=RESULTS, select=["id", "displayName", "mail", "userPrincipalName"]
        )
        config = RequestConfiguration(query_parameters=params)
        config.headers.add("ConsistencyLevel", "eventual")
        page = await graph_call(
            f"search the people of tenant {link.id}", link.app.users.get(config), reading=True
        )
        for user in (page.value if page is not None else None) or []:
            if not user.id or user_id(user.id) in relays:
                continue
            address = user.mail or user.user_principal_name
            name = f"{user.display_name} ({address})" if address else user.display_name
            found.append((user_id(user.id), UserInfo(name=name)))
    return found[:RESULTS]


async def tenant_of(net: TeamsNetwork, person: RemoteUserID) -> TenantLink:
    """The tenant whose directory holds ``person``; NotFound if none does."""
    for link in net.tenants.values():
        try:
            user = await graph_call(
                f"read user {person}", link.app.users.by_user_id(person).get(), reading=True
            )
        except PermanentError:
            continue  # 404 (another tenant's person) or no right to read: not this tenant
        if user is not None and user.id:
            return link
    raise NotFound(f"no Teams user {person}", user_message=f"No Teams user `{person}` here.")


def check_policy(net: TeamsNetwork, link: TenantLink, matrix_user: str) -> None:
    if refused := net.ctx.federation.refusal(
        NETWORK, link.tenant.tenant_id, matrix_user, entry="start-chat"
    ):
        raise PermanentError(str(refused), user_message=refused.user_message)


async def open_chat(
    link: TenantLink, graph: GraphServiceClient, me: str, person: RemoteUserID, delegated: bool
) -> str:
    """The one-on-one chat of ``me`` and ``person`` (created, or Graph's existing one). The
    members are bound on the tenant's own Graph (a national cloud's, not the global one)."""
    base = link.graph_url.rstrip("/")
    members: list[ConversationMember] = [
        AadUserConversationMember(
            odata_type="#microsoft.graph.aadUserConversationMember",
            roles=["owner"],
            additional_data={"user@odata.bind": f"{base}/users('{member}')"},
        )
        for member in (me, person)
    ]
    chat = await graph_call(
        f"start a chat with {person}",
        graph.chats.post(Chat(chat_type=ChatType.OneOnOne, members=members)),
        delegated=delegated,
    )
    if chat is None or not chat.id:
        raise PermanentError("Graph created a chat without an id",
                             user_message="Teams did not say which chat it opened; try again.")  # fmt: skip
    return chat.id
