"""chatMessage operations, shared by chats (``/chats/{id}/messages``, also under
``/users/{id}`` and ``/me``) and channels (``/teams/{id}/channels/{id}/messages`` and replies).

The route decides the conversation; this module decides what the caller may do there and
answers in Graph's shapes and status codes (201 on create, 204 on PATCH and on actions).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from . import permissions as perm
from .drives import check_attachment_placeholders
from .odata import (
    bad_request,
    collection,
    entity,
    not_found,
    odata_key,
    page_of,
    parse_iso,
    read_json,
)
from .services import Services, services
from .shapes import message_json
from .state import Channel, Conversation, Message, TokenGrant, find_message
from .teamwork import NewHostedContent


@dataclass(frozen=True, slots=True)
class Rules:
    read: perm.Need
    send: perm.Need
    edit: perm.Need
    react: perm.Need
    delete: perm.Need


CHAT_RULES = Rules(
    perm.READ_CHAT_MESSAGES,
    perm.SEND_CHAT_MESSAGE,
    perm.EDIT_CHAT_MESSAGE,
    perm.REACT_CHAT_MESSAGE,
    perm.DELETE_CHAT_MESSAGE,
)
CHANNEL_RULES = Rules(
    perm.READ_CHANNEL_MESSAGES,
    perm.SEND_CHANNEL_MESSAGE,
    perm.EDIT_CHANNEL_MESSAGE,
    perm.REACT_CHANNEL_MESSAGE,
    perm.EDIT_CHANNEL_MESSAGE,
)


@dataclass(slots=True)
class Where:
    """The conversation a request addresses, who asks, and the rules that apply there."""

    svc: Services
    grant: TokenGrant
    conversation: Conversation
    rules: Rules

    @property
    def context(self) -> str:
        conv = self.conversation
        if isinstance(conv, Channel):
            return f"teams({odata_key(conv.team_id)})/channels({odata_key(conv.id)})/messages"
        return f"chats({odata_key(conv.id)})/messages"


def where(request: web.Request) -> Where:
    """Authenticate and resolve the conversation in the path, with membership checked."""
    svc = services(request)
    grant = svc.identity.authenticate(request)
    info = request.match_info
    if "team_id" in info:
        conversation: Conversation = svc.state.channel(info["team_id"], info["channel_id"])
        rules = CHANNEL_RULES
    else:
        chat = svc.state.chat(info["chat_id"])
        owner = path_user(request, grant)
        if owner is not None and owner not in chat.members:
            raise not_found(f"Chat '{chat.id}' not found for user '{owner}'.")
        conversation, rules = chat, CHAT_RULES
    perm.require_member(grant, conversation)
    return Where(svc, grant, conversation, rules)


def path_user(request: web.Request, grant: TokenGrant) -> str | None:
    """The user a ``/users/{id}/…`` or ``/me/…`` path is about (None for other paths)."""
    if request.path.startswith("/v1.0/me/") or request.path == "/v1.0/me":
        return perm.require_delegated(
            grant, "/me request is only valid with delegated authentication flow."
        )
    key = request.match_info.get("user_id")
    if key is None:
        return None
    return services(request).state.user(key, grant.tenant_id).id


def _message(here: Where, request: web.Request) -> Message:
    info = request.match_info
    if "reply_id" in info:
        return find_message(here.conversation, info["message_id"], info["reply_id"])
    return find_message(here.conversation, info["message_id"])


def _parent(here: Where, request: web.Request) -> Message | None:
    """For ``…/messages/{id}/replies`` routes, the root message."""
    if request.path.rstrip("/").endswith("/replies"):
        return find_message(here.conversation, request.match_info["message_id"])
    return None


# -- listing ---------------------------------------------------------------------------------

_FILTER = re.compile(
    r"^\s*(lastModifiedDateTime|createdDateTime)\s+(gt|ge|lt|le)\s+(\S+)\s*$", re.IGNORECASE
)


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000)


async def list_messages(request: web.Request) -> web.Response:
    """Newest first, ``$top`` ≤ 50, ``@odata.nextLink`` paging; ``$orderby`` and a simple
    ``$filter`` on lastModifiedDateTime/createdDateTime as Graph supports them for chats."""
    here = where(request)
    perm.require(here.grant, here.rules.read)
    parent = _parent(here, request)
    messages = list((parent.replies if parent else here.conversation.messages).values())
    order = request.query.get("$orderby", "createdDateTime desc").strip()
    if order.lower() not in {"createddatetime desc", "lastmodifieddatetime desc"}:
        raise bad_request(
            f"$orderby '{order}' is not supported; use createdDateTime desc or lastModifiedDateTime desc."
        )
    by_modified = order.lower().startswith("lastmodified")

    def key(m: Message) -> tuple[int, int]:
        return (_ms(m.last_modified if by_modified else m.created), int(m.id))

    for clause in filter(
        None, re.split(r"\s+and\s+", request.query.get("$filter", ""), flags=re.IGNORECASE)
    ):
        match = _FILTER.match(clause)
        moment = parse_iso(match.group(3)) if match else None
        if match is None or moment is None:
            raise bad_request(f"Invalid filter clause '{clause}'.")
        prop, op = match.group(1).lower(), match.group(2).lower()
        bound = _ms(moment)

        def value(m: Message, prop: str = prop) -> int:
            return _ms(m.last_modified if prop == "lastmodifieddatetime" else m.created)

        messages = [m for m in messages if _compare(value(m), op, bound)]
    messages.sort(key=key, reverse=True)
    cfg = here.svc.config
    page, token = page_of(
        request, messages, key, default=cfg.default_page_size, maximum=cfg.max_page_size
    )
    context = here.context + (f"({odata_key(parent.id)})/replies" if parent else "")
    values = [message_json(here.svc.state, m) for m in page]
    return collection(request, cfg.public_url, context, values, token)


def _compare(left: int, op: str, right: int) -> bool:
    return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op]


async def get_message(request: web.Request) -> web.Response:
    here = where(request)
    perm.require(here.grant, here.rules.read)
    message = _message(here, request)
    context = here.context + ("/replies" if message.reply_to_id else "") + "/$entity"
    return entity(
        request, here.svc.config.public_url, context, message_json(here.svc.state, message)
    )


# -- writing ---------------------------------------------------------------------------------


def _body(
    data: dict[str, Any], *, required: bool
) -> tuple[str | None, Literal["html", "text"] | None]:
    body = data.get("body")
    if body is None:
        if required:
            raise bad_request("The message body is required.")
        return None, None
    if not isinstance(body, dict) or not isinstance(body.get("content"), str):
        raise bad_request("body.content must be a string.")
    kind = str(body.get("contentType") or "text").lower()
    if kind not in {"html", "text"}:
        raise bad_request(f"body.contentType '{kind}' is not valid; use html or text.")
    content_type: Literal["html", "text"] = "html" if kind == "html" else "text"
    return body["content"], content_type


def _list_of_objects(data: dict[str, Any], name: str) -> list[dict[str, Any]] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise bad_request(f"'{name}' must be an array of objects.")
    return value


def _hosted(data: dict[str, Any]) -> list[NewHostedContent]:
    items = _list_of_objects(data, "hostedContents") or []
    hosted = []
    for item in items:
        temp_id = item.get("@microsoft.graph.temporaryId")
        try:
            raw = base64.b64decode(str(item.get("contentBytes", "")), validate=True)
        except binascii.Error as exc:
            raise bad_request("hostedContents contentBytes must be base64.") from exc
        if not temp_id or not raw:
            raise bad_request(
                "Each hostedContent needs @microsoft.graph.temporaryId and contentBytes."
            )
        hosted.append(
            NewHostedContent(str(temp_id), str(item.get("contentType") or "image/png"), raw)
        )
    return hosted


async def post_message(request: web.Request) -> web.Response:
    here = where(request)
    perm.require(here.grant, here.rules.send)
    parent = _parent(here, request)
    data = await read_json(request)
    content, content_type = _body(data, required=True)
    assert content is not None and content_type is not None
    sender = perm.require_delegated(here.grant, "A message can only be sent by a user.")
    check_attachment_placeholders(content, _list_of_objects(data, "attachments") or [])
    message = here.svc.teamwork.post_message(
        here.conversation,
        sender,
        content,
        content_type,
        graph_base=here.svc.graph_base(request),
        subject=data.get("subject"),
        importance=str(data.get("importance") or "normal"),
        attachments=_list_of_objects(data, "attachments"),
        mentions=_list_of_objects(data, "mentions"),
        hosted=_hosted(data),
        reply_to_id=parent.id if parent else None,
    )
    context = here.context + ("/replies" if parent else "") + "/$entity"
    return entity(
        request, here.svc.config.public_url, context, message_json(here.svc.state, message), 201
    )


async def patch_message(request: web.Request) -> web.Response:
    here = where(request)
    perm.require(here.grant, here.rules.edit)
    message = _message(here, request)
    perm.require_sender(here.grant, message.sender_id)
    data = await read_json(request)
    content, content_type = _body(data, required=False)
    here.svc.teamwork.edit_message(
        message,
        content=content,
        content_type=content_type,
        subject=data.get("subject"),
        importance=data.get("importance"),
        attachments=_list_of_objects(data, "attachments"),
        mentions=_list_of_objects(data, "mentions"),
    )
    return web.Response(status=204)


async def message_action(request: web.Request) -> web.Response:
    """setReaction, unsetReaction, softDelete, undoSoftDelete: all answer 204 No Content."""
    here = where(request)
    action = request.match_info["action"]
    message = _message(here, request)
    teamwork = here.svc.teamwork
    if action in {"setReaction", "unsetReaction"}:
        perm.require(here.grant, here.rules.react)
        user = perm.require_delegated(here.grant, "Reactions need a signed-in user.")
        reaction = (await read_json(request)).get("reactionType")
        if not isinstance(reaction, str) or not reaction:
            raise bad_request("reactionType is required.")
        if action == "setReaction":
            teamwork.set_reaction(message, user, reaction)
        else:
            teamwork.unset_reaction(message, user, reaction)
    else:
        perm.require(here.grant, here.rules.delete)
        perm.require_sender(here.grant, message.sender_id)
        if action == "softDelete":
            teamwork.soft_delete(message)
        else:
            teamwork.undo_soft_delete(message)
    return web.Response(status=204)


# -- hosted contents -------------------------------------------------------------------------


async def list_hosted(request: web.Request) -> web.Response:
    here = where(request)
    perm.require(here.grant, here.rules.read)
    message = _message(here, request)
    values = [
        {"id": h.id, "contentBytes": None, "contentType": None} for h in message.hosted.values()
    ]
    context = f"{here.context}({odata_key(message.id)})/hostedContents"
    return collection(request, here.svc.config.public_url, context, values)


async def get_hosted(request: web.Request) -> web.Response:
    here = where(request)
    perm.require(here.grant, here.rules.read)
    message = _message(here, request)
    hosted = message.hosted.get(request.match_info["hosted_id"])
    if hosted is None:
        raise not_found("Hosted content not found.")
    if request.path.endswith("/$value"):
        return web.Response(body=hosted.data, content_type=hosted.content_type)
    context = f"{here.context}({odata_key(message.id)})/hostedContents/$entity"
    data = {"id": hosted.id, "contentBytes": None, "contentType": None}
    return entity(request, here.svc.config.public_url, context, data)


def add_message_routes(app: web.Application, prefix: str) -> None:
    """Register the message routes under ``prefix`` (a chat or a channel path)."""
    msg = prefix + "/messages/{message_id}"
    actions = "{action:setReaction|unsetReaction|softDelete|undoSoftDelete}"
    app.router.add_get(prefix + "/messages", list_messages)
    app.router.add_post(prefix + "/messages", post_message)
    app.router.add_get(msg, get_message)
    app.router.add_patch(msg, patch_message)
    app.router.add_post(msg + "/" + actions, message_action)
    app.router.add_get(msg + "/hostedContents", list_hosted)
    app.router.add_get(msg + "/hostedContents/{hosted_id}", get_hosted)
    app.router.add_get(msg + "/hostedContents/{hosted_id}/$value", get_hosted)
    if "{team_id}" in prefix:
        reply = msg + "/replies/{reply_id}"
        app.router.add_get(msg + "/replies", list_messages)
        app.router.add_post(msg + "/replies", post_message)
        app.router.add_get(reply, get_message)
        app.router.add_patch(reply, patch_message)
        app.router.add_post(reply + "/" + actions, message_action)
        app.router.add_get(reply + "/hostedContents/{hosted_id}", get_hosted)
        app.router.add_get(reply + "/hostedContents/{hosted_id}/$value", get_hosted)
