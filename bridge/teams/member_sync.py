"""Teams → Matrix membership: people added to or removed from a bridged chat in Teams.

Teams writes a system message into the chat when its members change
(``membersAddedEventMessageDetail``, ``membersDeletedEventMessageDetail``, and the
``membersJoined``/``membersLeft`` variants), and the subscriptions report it like any message.
The message's list is not trusted on its own (a replayed or reordered notification could name
anyone): the chat's members are read again from Graph, and the portal is made to match them.
People now in the chat join as ghosts (logged-in Matrix users the event added are invited,
if ``bridge.federation`` lets the chat's tenant reach them); a ghost the event names that is no
longer a member leaves the room, with the reason shown (a ghost needs no power to leave); a
Matrix user whose own Teams account was removed is removed from the room by the bridge bot, so
they stop reading a chat Teams no longer lets them read.

Every catch-up does the same (:func:`reconcile`): removals made while the bridge was down
reached it in no notification. Who left is what Graph's list lacks of what the bridge saw in
it last time (kept per chat, also when the portal is made), so a chat first read after an
upgrade loses nobody that time. The list is saved with the input that read it (its token)
and the list it replaced: that input converted again after a crash, before its removals reached
Matrix, compares with the same earlier list and finds the same removals.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_type import ChatMessageType
from msgraph.generated.models.members_added_event_message_detail import (
    MembersAddedEventMessageDetail,
)
from msgraph.generated.models.members_deleted_event_message_detail import (
    MembersDeletedEventMessageDetail,
)
from msgraph.generated.models.members_joined_event_message_detail import (
    MembersJoinedEventMessageDetail,
)
from msgraph.generated.models.members_left_event_message_detail import (
    MembersLeftEventMessageDetail,
)

from bridge.core import (
    ChatInfo,
    RemoteChatID,
    RemoteChatInfo,
    RemoteEvent,
    RemoteKick,
    RemoteUserID,
)
from bridge.teams.errors import graph_call
from bridge.teams.group_chats import relay_owner_key
from bridge.teams.ids import NETWORK, portal_key, user_id
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink

_DETAILS = (
    MembersAddedEventMessageDetail,
    MembersDeletedEventMessageDetail,
    MembersJoinedEventMessageDetail,
    MembersLeftEventMessageDetail,
)
_ADDED = (MembersAddedEventMessageDetail, MembersJoinedEventMessageDetail)
REMOVED = "Removed from the chat in Teams"


def is_member_change(msg: ChatMessage | None) -> bool:
    return (
        msg is not None
        and msg.message_type == ChatMessageType.SystemEventMessage
        and isinstance(msg.event_detail, _DETAILS)
    )


def named(msg: ChatMessage) -> set[RemoteUserID]:
    """The AAD ids a member-change message names."""
    detail = msg.event_detail
    people = getattr(detail, "members", None) or []
    return {user_id(str(p.id)) for p in people if getattr(p, "id", None)}


async def member_events(
    net: TeamsNetwork, link: TenantLink, chat_id: str, msg: ChatMessage, token: str = ""
) -> list[RemoteEvent]:
    """The portal made to match the chat's members as Graph has them now."""
    added = named(msg) if isinstance(msg.event_detail, _ADDED) else set()
    return await reconcile(net, link, chat_id, added=added, named_gone=named(msg), token=token)


async def reconcile(
    net: TeamsNetwork,
    link: TenantLink,
    chat_id: str,
    *,
    added: set[RemoteUserID] | None = None,
    named_gone: set[RemoteUserID] | None = None,
    token: str = "",
) -> list[RemoteEvent]:
    """The portal made to match the chat's members as Graph has them now: on a member-change
    message (``added``: the accounts it says joined, ``named_gone``: all it names) and on
    every catch-up (removals made while the bridge was down are in no notification).

    Who is removed is decided from Graph's member list and what the bridge saw last time
    (:func:`_seen_key`), never from a message's list alone. A Matrix user is removed only when
    their presence comes from their own Teams account: their login's account was a member and
    is no longer (the Matrix user a relay chat was opened for is there through the relay).
    ``token`` names the input being converted: converted again, it finds the same removals."""
    portal = await net.ctx.store.get_portal(RemoteChatID(chat_id))
    if portal is None or not portal.mxid:
        return []  # not bridged: the first message makes the portal with its members
    key = portal_key(chat_id)
    page = await graph_call(
        f"read members of {chat_id}", link.app.chats.by_chat_id(chat_id).members.get(), reading=True
    )
    accounts: set[RemoteUserID] = set()
    for member in (page.value if page is not None else None) or []:
        raw = getattr(member, "user_id", None) or (member.additional_data or {}).get("userId")
        if raw:
            accounts.add(user_id(str(raw)))
    store = net.ctx.store
    before = await remember(net, chat_id, accounts, token)
    logins = await net.logged_in()
    relays = net.relay_ids()
    ghosts = sorted(a for a in accounts if a not in logins and a not in relays)
    # Matrix users are invited only when a member-change message added their own Teams account
    # (and it is still in the chat): someone who left the room on purpose is not pulled back
    # by another member change, by one that raced with their leaving, nor by a catch-up.
    in_room = await net.ctx.matrix_members(portal.mxid)
    invite = invitees(net, link, (added or set()) & accounts, logins, in_room)
    events: list[RemoteEvent] = [
        RemoteChatInfo(portal=key, info=ChatInfo(members=ghosts, matrix_users=invite))
    ]
    owner = await store.kv_get(relay_owner_key(chat_id))
    was = (before or set()) | (named_gone or set())
    for gone in sorted(p for p in was - accounts if p not in relays):
        mxid = logins.get(gone)
        if mxid is None:
            kick = RemoteKick(portal=key, target=gone, reason=REMOVED, leave=True)
        elif mxid in in_room and mxid != owner:
            # Their own account was removed: they no longer read the chat.
            kick = RemoteKick(portal=key, target=gone, reason=REMOVED, matrix_user=mxid)
        else:
            continue
        events.append(kick)
    return events


def invitees(
    net: TeamsNetwork,
    link: TenantLink,
    accounts: set[RemoteUserID],
    logins: dict[str, str],
    in_room: Collection[str],
) -> list[str]:
    """The Matrix users to invite for ``accounts`` just added in Teams: those logged in to
    one, not in the room yet, whom the federation policy lets the tenant reach."""
    tenant = link.tenant.tenant_id
    return [
        logins[account]
        for account in sorted(accounts)
        if account in logins
        and logins[account] not in in_room
        and not net.ctx.federation.refusal(NETWORK, tenant, logins[account], entry="teams member")
    ]


async def remember(
    net: TeamsNetwork, chat_id: str, accounts: set[RemoteUserID], token: str
) -> set[RemoteUserID] | None:
    """Keep ``accounts`` as the chat's (or channel's) members just read; returns the list a
    removal is measured against: the one read before, or for the same input ``token``
    converted again, the one that input compared with (None: never read)."""
    record = _load(await net.ctx.store.kv_get(_seen_key(chat_id)))
    before = record.before if token and record.token == token else record.members
    await _save(net, chat_id, accounts, before, token)
    return before


async def last_seen(net: TeamsNetwork, chat_id: str) -> set[RemoteUserID] | None:
    """The members as last read (None: never read)."""
    return _load(await net.ctx.store.kv_get(_seen_key(chat_id))).members


async def seen(net: TeamsNetwork, chat_id: str, accounts: list[RemoteUserID]) -> None:
    """Record the chat's members as just read (the portal is made from them)."""
    await _save(net, chat_id, set(accounts), None, "")


async def _save(
    net: TeamsNetwork,
    chat_id: str,
    accounts: set[RemoteUserID],
    before: set[RemoteUserID] | None,
    token: str,
) -> None:
    record = {
        "members": sorted(accounts),
        "before": sorted(before) if before is not None else None,
        "token": token,
    }
    await net.ctx.store.kv_set(_seen_key(chat_id), json.dumps(record))


def _seen_key(chat_id: str) -> str:
    """The accounts a bridged chat had when its members were last read."""
    return f"chat-members:{chat_id}"


@dataclass(frozen=True, slots=True)
class _Seen:
    members: set[RemoteUserID] | None = None
    """The accounts last read (None: never read, or not readable)."""
    before: set[RemoteUserID] | None = None
    """What ``members`` replaced: the list the input ``token`` compared with."""
    token: str = ""


def _load(raw: str | None) -> _Seen:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return _Seen()
    if isinstance(value, list):  # written by an older version: the members alone
        return _Seen(_ids(value))
    if not isinstance(value, dict):
        return _Seen()
    return _Seen(_ids(value.get("members")), _ids(value.get("before")), str(value.get("token", "")))


def _ids(value: object) -> set[RemoteUserID] | None:
    return {RemoteUserID(str(v)) for v in value} if isinstance(value, list) else None
