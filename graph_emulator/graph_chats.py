"""Users and chats: ``/users/{id}``, ``/me``, chat lists, chat creation and members."""

from __future__ import annotations

import re
import zlib
from typing import Any

from aiohttp import web

from . import chat_members
from . import permissions as perm
from .graph_messages import add_message_routes, path_user, where
from .odata import bad_request, collection, entity, forbidden, odata_key, page_of, read_json
from .services import services
from .shapes import chat_json, member_json, user_json
from .state import Chat

_BIND = re.compile(r"users(?:\('(?P<q>[^']+)'\)|/(?P<p>[^/?]+))\s*$")


async def get_user(request: web.Request) -> web.Response:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    perm.require(grant, perm.READ_USER)
    key = path_user(request, grant)
    assert key is not None
    user = svc.state.user(key, grant.tenant_id)
    if grant.user_id is not None and grant.scopes <= {"User.Read"} and user.id != grant.user_id:
        raise forbidden("User.Read allows reading the signed-in user only.")
    return entity(request, svc.config.public_url, "users/$entity", user_json(user))


async def list_chats(request: web.Request) -> web.Response:
    """``/chats`` (all of the tenant's for apps, the user's for delegated tokens),
    ``/me/chats`` and ``/users/{id}/chats``; ``$expand=members`` and ``$top`` paging."""
    svc = services(request)
    grant = svc.identity.authenticate(request)
    perm.require(grant, perm.READ_CHAT)
    owner = path_user(request, grant) or grant.user_id
    if owner is not None and grant.user_id is not None and owner != grant.user_id:
        raise forbidden("A delegated token can list only the signed-in user's chats.")
    chats = [
        c
        for c in svc.state.chats.values()
        if c.tenant_id == grant.tenant_id and (owner is None or owner in c.members)
    ]

    def key(chat: Chat) -> tuple[int, int]:
        moment = chat.last_updated or chat.created
        return (int(moment.timestamp() * 1000), zlib.crc32(chat.id.encode()))

    chats.sort(key=key, reverse=True)
    page, token = page_of(request, chats, key, default=50, maximum=50)
    expand = {e.strip().lower() for e in request.query.get("$expand", "").split(",") if e.strip()}
    values = []
    for chat in page:
        data = chat_json(chat, grant.user_id)
        if "members" in expand:
            data["members"] = [
                member_json(svc.state, chat.id, m, r) for m, r in chat.members.items()
            ]
        values.append(data)
    context = (
        "chats"
        if owner is None or request.path == "/v1.0/chats"
        else f"users({odata_key(owner)})/chats"
    )
    if "members" in expand:
        context += "(members())"
    return collection(request, svc.config.public_url, context, values, token)


async def get_chat(request: web.Request) -> web.Response:
    here = where(request)
    perm.require(here.grant, perm.READ_CHAT)
    assert isinstance(here.conversation, Chat)
    data = chat_json(here.conversation, here.grant.user_id)
    if "members" in request.query.get("$expand", ""):
        data["members"] = [
            member_json(here.svc.state, here.conversation.id, m, r)
            for m, r in here.conversation.members.items()
        ]
    return entity(request, here.svc.config.public_url, "chats/$entity", data)


async def list_members(request: web.Request) -> web.Response:
    here = where(request)
    perm.require(here.grant, perm.READ_MEMBERS)
    conv = here.conversation
    values = [member_json(here.svc.state, conv.id, m, r) for m, r in conv.members.items()]
    return collection(
        request, here.svc.config.public_url, f"chats({odata_key(conv.id)})/members", values
    )


async def add_member(request: web.Request) -> web.Response:
    """``POST /chats/{id}/members`` (Graph's "Add member to a chat"): group chats only; the
    person must be of the chat's tenant (guests are not emulated)."""
    here = where(request)
    perm.require(here.grant, perm.ADD_MEMBER)
    chat = here.conversation
    assert isinstance(chat, Chat)
    data = await read_json(request)
    bind = data.get("user@odata.bind")
    match = _BIND.search(bind) if isinstance(bind, str) else None
    if match is None:
        raise bad_request(
            "A member needs a 'user@odata.bind' of the form https://graph.microsoft.com/v1.0/users('{id}')."
        )
    if chat.chat_type != "group":
        raise bad_request("Members can be added to group chats only.")
    user = here.svc.state.find_user(match.group("q") or match.group("p"))
    if user is None or user.tenant_id != chat.tenant_id:
        raise bad_request("The member could not be found in the chat's tenant.")
    roles = data.get("roles")
    chat_members.add(
        here.svc,
        chat,
        here.grant.user_id,
        user.id,
        [str(r) for r in roles] if isinstance(roles, list) else ["owner"],
    )
    body = member_json(here.svc.state, chat.id, user.id, chat.members[user.id])
    context = f"chats({odata_key(chat.id)})/members/$entity"
    return entity(request, here.svc.config.public_url, context, body, 201)


def _member_ids(data: dict[str, Any]) -> list[str]:
    members = data.get("members")
    if not isinstance(members, list) or not members:
        raise bad_request("The members collection is required to create a chat.")
    ids = []
    for member in members:
        bind = member.get("user@odata.bind") if isinstance(member, dict) else None
        match = _BIND.search(bind) if isinstance(bind, str) else None
        if match is None:
            raise bad_request(
                "Each member needs a 'user@odata.bind' of the form https://graph.microsoft.com/v1.0/users('{id}')."
            )
        ids.append(match.group("q") or match.group("p"))
    return ids


async def create_chat(request: web.Request) -> web.Response:
    svc = services(request)
    grant = svc.identity.authenticate(request)
    perm.require(grant, perm.CREATE_CHAT)
    data = await read_json(request)
    members = [svc.state.find_user(key) for key in _member_ids(data)]
    if any(m is None for m in members):
        raise bad_request("One or more members could not be found.")
    member_ids = [m.id for m in members if m is not None]
    if any(m.tenant_id != grant.tenant_id for m in members if m is not None):
        raise bad_request("Members from other tenants are not supported by the emulator.")
    if grant.user_id is not None and grant.user_id not in member_ids:
        raise forbidden("The signed-in user must be one of the chat's members.")
    chat, _ = svc.teamwork.create_chat(
        grant.tenant_id, str(data.get("chatType", "")), member_ids, data.get("topic")
    )
    return entity(
        request, svc.config.public_url, "chats/$entity", chat_json(chat, grant.user_id), 201
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1.0/me", get_user)
    app.router.add_get("/v1.0/users/{user_id}", get_user)
    app.router.add_get("/v1.0/chats", list_chats)
    app.router.add_post("/v1.0/chats", create_chat)
    app.router.add_get("/v1.0/me/chats", list_chats)
    app.router.add_get("/v1.0/users/{user_id}/chats", list_chats)
    for prefix in ("/v1.0", "/v1.0/me", "/v1.0/users/{user_id}"):
        chat = prefix + "/chats/{chat_id}"
        app.router.add_get(chat, get_chat)
        app.router.add_get(chat + "/members", list_members)
        app.router.add_post(chat + "/members", add_member)
        add_message_routes(app, chat)
    chat_members.add_routes(app)
