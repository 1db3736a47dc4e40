"""Teams group chats opened from Matrix.

- **A one-on-one chat gets a third person.** Teams never adds anyone to a one-on-one chat, so
  when a Matrix user invites another Teams ghost into a direct-chat portal (or into a room
  where they invited several Teams ghosts at once: the first made it a direct chat), a group
  chat of the acting account, the chat's other member and the new person is created
  (``POST /chats``, ``chatType: group``) and the room becomes its portal
  (``SupportsInvites``). The one-on-one chat stays as it was in Teams.
- **A chat through the relay is the Matrix user's own.** A Matrix user without a Teams login
  writes through the tenant's relay account. Were their direct chat the relay's one-on-one
  chat with the person, every such Matrix user (two people of two federated servers) would
  share it. Each gets a group chat of the relay account and the person instead, named after
  the Matrix user and their Matrix ID (which no Teams display name can imitate), kept per
  (Matrix user, person) so ``start-chat`` twice opens the same one.

The acting account is the inviter's own Teams login, or the relay for a Matrix user without
one. The new person must be of the chat's tenant, and ``bridge.federation`` must let the
inviter reach it.
"""

from __future__ import annotations

import json
import time

from msgraph import GraphServiceClient
from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember
from msgraph.generated.models.chat import Chat
from msgraph.generated.models.chat_type import ChatType
from msgraph.generated.models.conversation_member import ConversationMember

from bridge.core import NotSupported, PermanentError, PortalKey, RemoteUserID
from bridge.teams.errors import graph_call
from bridge.teams.from_matrix import shown_text
from bridge.teams.ids import portal_key, user_id
from bridge.teams.members import chat_tenant_for
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink

RELAY_CHATS_PER_HOUR = 10
"""New Teams chats the relay account opens for one Matrix user in an hour."""
RELAY_CHATS_KEY = "relay-chats-opened:"
MAX_MEMBERS = 250
"""Graph's limit on the members of a group chat."""
NOT_YOURS = (
    "Only a member of this Teams chat can open a group chat with its people: send"
    " `login teams` to the bridge bot, or start a new chat with `start-chat`."
)


def relay_owner_key(chat_id: str) -> str:
    """The kv key naming the Matrix user a relay group chat was opened for."""
    return f"relay-for:{chat_id}"


def _relay_chat_key(link: TenantLink, matrix_user: str, person: str) -> str:
    return f"relay-chat:{link.id}:{matrix_user}:{person}"


def matrix_topic(mxid: str, name: str | None) -> str:
    """A Teams chat topic naming a Matrix user: their name and their Matrix ID."""
    name = shown_text(name or "", 80) if name else ""
    topic = f"{name} · {mxid} (Matrix)" if name and name != mxid else f"{mxid} (Matrix)"
    return topic[:250]


async def _create(
    link: TenantLink,
    graph: GraphServiceClient,
    people: list[str],
    topic: str | None,
    what: str,
    *,
    delegated: bool,
) -> str:
    base = link.graph_url.rstrip("/")  # the tenant's cloud: a national one is not global
    members: list[ConversationMember] = [
        AadUserConversationMember(
            odata_type="#microsoft.graph.aadUserConversationMember",
            roles=["owner"],
            additional_data={"user@odata.bind": f"{base}/users('{member}')"},
        )
        for member in dict.fromkeys(people)
    ]
    chat = await graph_call(
        what,
        graph.chats.post(Chat(chat_type=ChatType.Group, topic=topic, members=members)),
        delegated=delegated,
    )
    if chat is None or not chat.id:
        raise PermanentError(
            "Graph created a chat without an id",
            user_message="Teams did not say which chat it opened; try again.",
        )
    return chat.id


async def admit_relay_chat(net: TeamsNetwork, matrix_user: str) -> None:
    """Refuse a new relay chat beyond :data:`RELAY_CHATS_PER_HOUR` for ``matrix_user``: each is
    a Teams chat in the relay account's name, and people get its notifications."""
    store = net.ctx.store
    now = time.time()
    key = f"{RELAY_CHATS_KEY}{matrix_user}"
    try:
        opened = [float(t) for t in json.loads(await store.kv_get(key) or "[]")]
    except (ValueError, TypeError):
        opened = []
    opened = [t for t in opened if t > now - 3600]
    if len(opened) >= RELAY_CHATS_PER_HOUR:
        raise NotSupported(
            f"{matrix_user} opened {len(opened)} relay chats this hour",
            user_message=f"You opened {RELAY_CHATS_PER_HOUR} Teams chats in the last hour;"
            " try again later, or send `login teams` to open chats as yourself.",
        )
    await store.kv_set(key, json.dumps([*opened, now]))


async def _owner_name(net: TeamsNetwork, mxid: str) -> str | None:
    try:
        name, _, _ = await net.ctx.matrix_profile(mxid)
    except Exception:  # a server away: the Matrix ID alone names them
        return None
    return name


async def relay_chat(
    net: TeamsNetwork, link: TenantLink, person: RemoteUserID, matrix_user: str
) -> str:
    """The relay account's group chat with ``person`` for ``matrix_user`` alone."""
    assert link.relay is not None and link.relay_user_id
    store = net.ctx.store
    known = await store.kv_get(_relay_chat_key(link, matrix_user, person))
    if known:
        return known
    await admit_relay_chat(net, matrix_user)
    topic = matrix_topic(matrix_user, await _owner_name(net, matrix_user))
    chat_id = await _create(
        link,
        link.relay,
        [link.relay_user_id, person],
        topic,
        f"open a chat with {person} for {matrix_user}",
        delegated=True,
    )
    await store.kv_set(relay_owner_key(chat_id), matrix_user)
    await store.kv_set(_relay_chat_key(link, matrix_user, person), chat_id)
    await net.remember_chat(chat_id, link.id)
    return chat_id


async def widen(
    net: TeamsNetwork,
    graph: GraphServiceClient,
    me: str,
    chat_id: str,
    person: RemoteUserID,
    inviter: str,
    *,
    relay: bool,
) -> PortalKey:
    """A group chat of the one-on-one chat ``chat_id``'s members and ``person``, created by
    ``me`` (acting with ``graph``); its key, for the room to become its portal."""
    link = await chat_tenant_for(net, chat_id, person, inviter)
    if relay and await net.ctx.store.kv_get(relay_owner_key(chat_id)) != inviter:
        # Only the Matrix user the relay's chat was opened for speaks in it through the relay.
        raise NotSupported(f"{inviter} does not own relay chat {chat_id}", user_message=NOT_YOURS)
    page = await graph_call(
        f"read members of {chat_id}", link.app.chats.by_chat_id(chat_id).members.get(), reading=True
    )
    accounts = []
    for member in (page.value if page is not None else None) or []:
        raw = getattr(member, "user_id", None) or (member.additional_data or {}).get("userId")
        if raw:
            accounts.append(user_id(str(raw)))
    if user_id(me) not in accounts:
        # The acting account is not in the chat: its people are not the inviter's to gather.
        raise NotSupported(f"{me} is not a member of {chat_id}", user_message=NOT_YOURS)
    others = [a for a in accounts if a not in (user_id(me), person)]
    people = [me, *others, person]
    if len(people) > MAX_MEMBERS:
        raise NotSupported("too many members", user_message="A Teams chat has 250 people at most.")
    if relay:
        await admit_relay_chat(net, inviter)
    topic = matrix_topic(inviter, await _owner_name(net, inviter)) if relay else None
    new = await _create(
        link, graph, people, topic, f"open a group chat with {person}", delegated=True
    )
    if relay:
        await net.ctx.store.kv_set(relay_owner_key(new), inviter)
    await net.remember_chat(new, link.id)
    net.ctx.log.info("%s widened Teams chat %s into group chat %s", inviter, chat_id, new)
    return portal_key(new)
