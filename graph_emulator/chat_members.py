"""Who is in a chat, as it changes: Graph's "Remove member from chat", and the system messages
Teams writes into a chat when people are added or removed (``membersAddedEventMessageDetail``,
``membersDeletedEventMessageDetail``), which subscriptions see like any new message.

The control API stands in for a Teams person's client: ``POST /_emulator/chats/{id}/members``
``{"as": adder, "user": added}`` and ``DELETE /_emulator/chats/{id}/members/{user}?as=remover``.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from . import permissions as perm
from .graph_messages import where
from .odata import bad_request, iso, not_found
from .services import Services, services
from .shapes import user_identity
from .state import Chat, Conversation, Message

ADDED = "#microsoft.graph.membersAddedEventMessageDetail"
DELETED = "#microsoft.graph.membersDeletedEventMessageDetail"


def _member_identity(svc: Services, user_id: str) -> dict[str, object]:
    user = svc.state.users.get(user_id)
    return {
        "id": user_id,
        "displayName": None,
        "userIdentityType": "aadUser",
        "tenantId": user.tenant_id if user else None,
    }


def announce(
    svc: Services, chat: Conversation, kind: str, initiator: str | None, ids: list[str]
) -> None:
    """The system message Teams writes when ``initiator`` added or removed ``ids`` (in a chat,
    or in a channel)."""
    now = svc.state.now()
    detail: dict[str, object] = {
        "@odata.type": kind,
        "members": [_member_identity(svc, i) for i in ids],
        "initiator": user_identity(svc.state, initiator, with_name=False) if initiator else None,
    }
    if kind == ADDED:
        detail["visibleHistoryStartDateTime"] = iso(now)
    message = Message(
        id=svc.state.new_message_id(),
        conversation=chat,
        sender_id=None,
        created=now,
        content="<systemEventMessage/>",
        content_type="html",
        last_modified=now,
        message_type="systemEventMessage",
        event_detail=detail,
    )
    chat.messages[message.id] = message
    chat.last_updated = now
    for listener in svc.teamwork.listeners:
        listener("created", message)


def add(svc: Services, chat: Chat, initiator: str | None, user_id: str, roles: list[str]) -> bool:
    """Add ``user_id``; whether they were new (a second add changes nothing)."""
    if user_id in chat.members:
        return False
    chat.members[user_id] = roles
    announce(svc, chat, ADDED, initiator, [user_id])
    return True


def remove(svc: Services, chat: Chat, initiator: str | None, user_id: str) -> None:
    if chat.chat_type != "group":
        raise bad_request("Members can be removed from group chats only.")
    if user_id not in chat.members:
        raise not_found(f"Member '{user_id}' not found in chat '{chat.id}'.")
    del chat.members[user_id]
    announce(svc, chat, DELETED, initiator, [user_id])


def _user_of_membership(membership_id: str, chat_id: str) -> str:
    """The user of a membership id (``shapes.member_id``: base64 of ``1#user#chat``)."""
    try:
        raw = base64.b64decode(membership_id, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise not_found(f"Member '{membership_id}' not found.") from None
    parts = raw.split("#", 2)
    if len(parts) != 3 or parts[2] != chat_id:
        raise not_found(f"Member '{membership_id}' not found.")
    return parts[1]


async def remove_member(request: web.Request) -> web.Response:
    """``DELETE /chats/{id}/members/{membership-id}``: a member (delegated) or the tenant's app
    (``ChatMember.ReadWrite.All``) removes someone from a group chat."""
    here = where(request)
    perm.require(here.grant, perm.ADD_MEMBER)
    chat = here.conversation
    assert isinstance(chat, Chat)
    user_id = _user_of_membership(request.match_info["membership_id"], chat.id)
    remove(here.svc, chat, here.grant.user_id, user_id)
    return web.Response(status=204)


async def control_add(request: web.Request) -> web.Response:
    svc = services(request)
    chat = svc.state.chat(request.match_info["chat_id"])
    data = await request.json()
    actor = svc.state.find_user(str(data.get("as", "")), chat.tenant_id)
    user = svc.state.find_user(str(data.get("user", "")), chat.tenant_id)
    if actor is None or actor.id not in chat.members or user is None:
        return web.json_response(
            {"error": "'as' must be a member, 'user' of the tenant"}, status=400
        )
    if chat.chat_type != "group":
        return web.json_response({"error": "group chats only"}, status=400)
    add(svc, chat, actor.id, user.id, ["owner"])
    return web.json_response({"members": sorted(chat.members)}, status=201)


async def control_remove(request: web.Request) -> web.Response:
    svc = services(request)
    chat = svc.state.chat(request.match_info["chat_id"])
    actor = svc.state.find_user(request.query.get("as", ""), chat.tenant_id)
    user = svc.state.find_user(request.match_info["user_id"], chat.tenant_id)
    if actor is None or actor.id not in chat.members or user is None:
        return web.json_response(
            {"error": "'as' must be a member, the user of the tenant"}, status=400
        )
    remove(svc, chat, actor.id, user.id)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_delete("/v1.0/chats/{chat_id}/members/{membership_id}", remove_member)
    app.router.add_post("/_emulator/chats/{chat_id}/members", control_add)
    app.router.add_delete("/_emulator/chats/{chat_id}/members/{user_id}", control_remove)
