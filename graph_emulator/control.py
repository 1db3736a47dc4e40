"""The control API under ``/_emulator/``: not Graph, but what tests and demos drive it with.

It stands in for people using Teams (post, edit, delete, react as a user, which notifies
subscriptions exactly as a Graph call would), for an admin (tenants, apps, users, chats,
teams), for a user approving a device-code login, and for the test harness (faults, request
log, delivered notifications, clock, reset). It has no authentication: bind the emulator to
loopback.
"""

from __future__ import annotations

import base64
import binascii
import html
from typing import Any

from aiohttp import web

from . import seed
from .notifier import LIFECYCLE_EVENTS
from .odata import GraphError, iso, read_json
from .services import Services, services
from .shapes import chat_json, message_json, subscription_json, user_json
from .state import Channel, Conversation, Message
from .teamwork import NewHostedContent


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@web.middleware
async def control_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Control API errors as ``{"error": "..."}``; Graph-style lookups keep their status."""
    if not request.path.startswith("/_emulator/"):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
    except ControlError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    except GraphError as exc:
        return web.json_response({"error": exc.message, "code": exc.code}, status=exc.status)
    except (seed.SeedError, LookupError) as exc:
        return web.json_response({"error": str(exc).strip("'\"")}, status=400)
    return response


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        return await read_json(request)
    except GraphError as exc:
        raise ControlError(400, exc.message) from exc


def _conversation(svc: Services, request: web.Request) -> Conversation:
    info = request.match_info
    if "team_id" in info:
        return svc.state.channel(info["team_id"], info["channel_id"])
    return svc.state.chat(info["chat_id"])


def _message(conversation: Conversation, message_id: str) -> Message:
    """A message or, in a channel, a reply, by its id alone."""
    found = conversation.messages.get(message_id)
    if found is None and isinstance(conversation, Channel):
        found = next(
            (
                r.replies[message_id]
                for r in conversation.messages.values()
                if message_id in r.replies
            ),
            None,
        )
    if found is None:
        raise ControlError(404, f"no message {message_id} in {conversation.id}")
    return found


def _member(svc: Services, conversation: Conversation, key: object) -> str:
    if not isinstance(key, str):
        raise ControlError(400, "'from' / 'as' must name a user (id or userPrincipalName)")
    user = svc.state.find_user(key, conversation.tenant_id)
    if user is None or user.id not in conversation.members:
        raise ControlError(400, f"{key} is not a member of {conversation.id}")
    return user.id


# -- directory ---------------------------------------------------------------------------------


async def apply_seed(request: web.Request) -> web.Response:
    svc = services(request)
    return web.json_response(
        seed.apply(svc, await _json(request), svc.graph_base(request)), status=201
    )


async def add_tenant(request: web.Request) -> web.Response:
    tenant = seed.add_tenant(services(request), await _json(request))
    return web.json_response(
        {"id": tenant.id, "displayName": tenant.display_name, "domain": tenant.domain}, status=201
    )


async def add_app(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = svc.state.tenants.get(request.match_info["tenant_id"])
    if tenant is None:
        raise ControlError(404, f"no tenant {request.match_info['tenant_id']}")
    app = seed.add_app(svc, tenant, await _json(request))
    return web.json_response(
        {
            "clientId": app.client_id,
            "clientSecret": app.client_secret,
            "tenantId": app.tenant_id,
            "displayName": app.display_name,
            "applicationPermissions": sorted(app.application_permissions),
            "delegatedPermissions": sorted(app.delegated_permissions),
        },
        status=201,
    )


async def add_user(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = svc.state.tenants.get(request.match_info["tenant_id"])
    if tenant is None:
        raise ControlError(404, f"no tenant {request.match_info['tenant_id']}")
    return web.json_response(
        user_json(seed.add_user(svc, tenant, await _json(request))), status=201
    )


def _members(svc: Services, data: dict[str, Any]) -> tuple[str, list[str]]:
    """(tenant id, user ids) of the ``members`` of a chat or team to create; the first member
    names the tenant."""
    keys = data.get("members") or []
    first = svc.state.find_user(keys[0]) if keys and isinstance(keys[0], str) else None
    if first is None:
        raise ControlError(400, "'members' must list existing users")
    return first.tenant_id, seed.user_ids(svc, first.tenant_id, keys)


async def add_chat(request: web.Request) -> web.Response:
    svc = services(request)
    data = await _json(request)
    tenant_id, members = _members(svc, data)
    chat, created = svc.teamwork.create_chat(
        tenant_id, str(data.get("chatType", "group")), members, data.get("topic")
    )
    return web.json_response(chat_json(chat, None), status=201 if created else 200)


async def add_team(request: web.Request) -> web.Response:
    svc = services(request)
    data = await _json(request)
    tenant_id, members = _members(svc, data)
    team = svc.teamwork.create_team(
        tenant_id, str(data.get("displayName") or "Team"), members, data.get("description")
    )
    channels = [
        {"id": c, "displayName": svc.state.channels[c].display_name} for c in team.channel_ids
    ]
    return web.json_response(
        {"id": team.id, "displayName": team.display_name, "channels": channels}, status=201
    )


async def add_channel(request: web.Request) -> web.Response:
    svc = services(request)
    team = svc.state.team(request.match_info["team_id"])
    data = await _json(request)
    try:  # a private or shared channel lists its members, who must be in the team
        kind = seed.membership_type(data)
        members = seed.user_ids(svc, team.tenant_id, data.get("members") or [])
    except seed.SeedError as err:
        raise ControlError(400, str(err)) from None
    if any(m not in team.members for m in members):
        raise ControlError(400, "a channel's members must be members of its team")
    channel = svc.teamwork.create_channel(
        team, str(data.get("displayName") or "Channel"), data.get("description"), kind, members
    )
    return web.json_response({"id": channel.id, "displayName": channel.display_name}, status=201)


# -- acting as a Teams user --------------------------------------------------------------------


async def post_message(request: web.Request) -> web.Response:
    """Post as a Teams user (their Teams client would), which notifies subscriptions."""
    svc = services(request)
    conversation = _conversation(svc, request)
    data = await _json(request)
    sender = _member(svc, conversation, data.get("from"))
    hosted = []
    for index, item in enumerate(data.get("hostedContents") or [], start=1):
        try:
            raw = base64.b64decode(str(item.get("contentBytes", "")), validate=True)
        except binascii.Error as exc:
            raise ControlError(400, "hostedContents[].contentBytes must be base64") from exc
        hosted.append(
            NewHostedContent(
                str(item.get("temporaryId", index)), str(item.get("contentType", "image/png")), raw
            )
        )
    content = data.get("content")
    if not isinstance(content, str):
        raise ControlError(400, "'content' (the message HTML or text) is required")
    message = svc.teamwork.post_message(
        conversation,
        sender,
        content,
        "text" if str(data.get("contentType", "html")).lower() == "text" else "html",
        graph_base=svc.graph_base(request),
        subject=data.get("subject"),
        importance=str(data.get("importance") or "normal"),
        attachments=data.get("attachments"),
        mentions=data.get("mentions"),
        hosted=hosted,
        reply_to_id=data.get("replyToId"),
    )
    return web.json_response(message_json(svc.state, message), status=201)


async def edit_message(request: web.Request) -> web.Response:
    svc = services(request)
    conversation = _conversation(svc, request)
    data = await _json(request)
    message = _message(conversation, request.match_info["message_id"])
    if _member(svc, conversation, data.get("as")) != message.sender_id:
        raise ControlError(403, "only the sender can edit a message")
    content_type = data.get("contentType")
    svc.teamwork.edit_message(
        message,
        content=data.get("content"),
        content_type=None
        if content_type is None
        else ("text" if content_type == "text" else "html"),
        subject=data.get("subject"),
        attachments=data.get("attachments"),
        mentions=data.get("mentions"),
    )
    return web.json_response(message_json(svc.state, message))


async def message_action(request: web.Request) -> web.Response:
    svc = services(request)
    conversation = _conversation(svc, request)
    data = await _json(request)
    message = _message(conversation, request.match_info["message_id"])
    actor = _member(svc, conversation, data.get("as"))
    action = request.match_info["action"]
    if action in {"setReaction", "unsetReaction"}:
        reaction = str(data.get("reactionType") or "")
        if action == "setReaction":
            svc.teamwork.set_reaction(message, actor, reaction)
        else:
            svc.teamwork.unset_reaction(message, actor, reaction)
    else:
        if actor != message.sender_id:
            raise ControlError(403, "only the sender can delete a message")
        if action == "softDelete":
            svc.teamwork.soft_delete(message)
        else:
            svc.teamwork.undo_soft_delete(message)
    return web.json_response(message_json(svc.state, message))


# -- sign-in ------------------------------------------------------------------------------------


async def approve_device_code(request: web.Request) -> web.Response:
    svc = services(request)
    data = await _json(request)
    user = svc.state.find_user(str(data.get("user", "")))
    if user is None:
        raise ControlError(400, f"unknown user {data.get('user')!r}")
    decline = request.match_info["verdict"] == "decline"
    code = svc.identity.approve_device_code(str(data.get("userCode", "")), user, decline=decline)
    return web.json_response(
        {"userCode": code.user_code, "user": user.id, "declined": code.declined}
    )


_LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Sign in (Graph emulator)</title></head>
<body style="font-family:sans-serif;max-width:28em;margin:4em auto">
<h1>Sign in to the Graph emulator</h1><p>{notice}</p>
<form method="post"><p><label>Code <input name="user_code" value="{code}" required></label></p>
<p><label>User name <input name="username" required></label></p>
<p><label>Password <input name="password" type="password" required></label></p>
<p><button>Sign in</button></p></form></body></html>"""


async def devicelogin_page(request: web.Request) -> web.Response:
    """The verification_uri of device codes: a demo user approves the login here."""
    notice = "Enter the code shown by the app and your emulator account."
    if request.method == "POST":
        svc = services(request)
        form = await request.post()
        user = svc.state.find_user(str(form.get("username", "")))
        if user is None or str(form.get("password", "")) != user.password:
            notice = "Wrong user name or password."
        else:
            try:
                svc.identity.approve_device_code(str(form.get("user_code", "")), user)
                notice = f"Signed in as {user.display_name}. You can close this page."
            except LookupError as exc:
                notice = f"That did not work: {exc}."
    page = _LOGIN_PAGE.format(
        notice=html.escape(notice), code=html.escape(request.query.get("code", ""))
    )
    return web.Response(text=page, content_type="text/html")


async def mint_token(request: web.Request) -> web.Response:
    """A token without a flow, for tests: ``{"clientId", "user"?, "scopes"?, "lifetimeSeconds"?}``."""
    svc = services(request)
    data = await _json(request)
    app = svc.state.apps.get(str(data.get("clientId", "")))
    if app is None:
        raise ControlError(404, f"no app {data.get('clientId')!r}")
    user = None
    if data.get("user"):
        user = svc.state.find_user(str(data["user"]), app.tenant_id)
        if user is None:
            raise ControlError(404, f"no user {data['user']!r} in the app's tenant")
    default = app.delegated_permissions if user else app.application_permissions
    scopes = frozenset(data.get("scopes") or default)
    grant = svc.identity.mint_access_token(app, user, scopes, data.get("lifetimeSeconds"))
    return web.json_response(
        {"access_token": grant.token, "expires_on": iso(grant.expires)}, status=201
    )


# -- the test harness ---------------------------------------------------------------------------


async def add_fault(request: web.Request) -> web.Response:
    data = await _json(request)
    if not isinstance(data.get("path"), str):
        raise ControlError(400, "'path' (a glob such as /v1.0/chats/*/messages) is required")
    fault = services(request).wire.add_fault(
        data["path"],
        status=int(data.get("status", 429)),
        count=int(data.get("count", 1)),
        method=data.get("method"),
        retry_after=None if data.get("retryAfter") is None else int(data["retryAfter"]),
        delay=float(data.get("delay", 0)),
        code=data.get("code"),
        message=data.get("message"),
    )
    return web.json_response(fault.as_json(), status=201)


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response({"value": [f.as_json() for f in services(request).wire.faults]})


async def clear_faults(request: web.Request) -> web.Response:
    services(request).wire.faults.clear()
    return web.Response(status=204)


async def list_requests(request: web.Request) -> web.Response:
    """Requests received, oldest first; ``?path=<glob>&method=GET`` narrow it down."""
    import fnmatch

    path, method = request.query.get("path"), request.query.get("method")
    entries = [
        e
        for e in services(request).wire.requests
        if (path is None or fnmatch.fnmatchcase(e["path"], path))
        and (method is None or e["method"] == method.upper())
    ]
    return web.json_response({"value": entries})


async def count_requests(request: web.Request) -> web.Response:
    """How many requests matched ``?path=<glob>&method=GET`` since the last reset, counted
    apart from the (bounded) log: ``{"count": n}``."""
    path = request.query.get("path", "*")
    count = services(request).wire.count(path, request.query.get("method"))
    return web.json_response({"path": path, "count": count})


async def clear_requests(request: web.Request) -> web.Response:
    services(request).wire.requests.clear()
    services(request).wire.counts.clear()
    return web.Response(status=204)


async def list_notifications(request: web.Request) -> web.Response:
    """Notification deliveries with every attempt; ``?wait=1`` first lets in-flight ones finish."""
    svc = services(request)
    if request.query.get("wait"):
        await svc.notifier.idle()
    sub_id = request.query.get("subscriptionId")
    values = [
        d.as_json()
        for d in svc.notifier.deliveries
        if sub_id is None or d.subscription_id == sub_id
    ]
    return web.json_response({"value": values})


async def list_subscriptions(request: web.Request) -> web.Response:
    svc = services(request)
    values = [
        {**subscription_json(s), "paused": s.paused, "held": len(s.held)}
        for s in svc.state.subscriptions.values()
    ]
    return web.json_response({"value": values})


async def lifecycle(request: web.Request) -> web.Response:
    """Send a lifecycle event; ``subscriptionRemoved`` also removes the subscription."""
    svc = services(request)
    sub = svc.state.subscriptions.get(request.match_info["subscription_id"])
    if sub is None:
        raise ControlError(404, f"no subscription {request.match_info['subscription_id']}")
    event = (await _json(request)).get("event")
    if event not in LIFECYCLE_EVENTS:
        raise ControlError(400, f"'event' must be one of {', '.join(LIFECYCLE_EVENTS)}")
    delivery = svc.notifier.lifecycle(sub, event)
    if event == "subscriptionRemoved":
        del svc.state.subscriptions[sub.id]
    return web.json_response({"delivery": delivery.id if delivery else None}, status=202)


async def advance_clock(request: web.Request) -> web.Response:
    svc = services(request)
    seconds = (await _json(request)).get("advanceSeconds")
    if not isinstance(seconds, int | float):
        raise ControlError(400, "'advanceSeconds' must be a number")
    svc.state.clock.advance(seconds)
    svc.state.sweep()
    return web.json_response({"now": iso(svc.state.now())})


async def reset(request: web.Request) -> web.Response:
    services(request).reset()
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/_emulator/seed", apply_seed)
    r.add_post("/_emulator/tenants", add_tenant)
    r.add_post("/_emulator/tenants/{tenant_id}/apps", add_app)
    r.add_post("/_emulator/tenants/{tenant_id}/users", add_user)
    r.add_post("/_emulator/chats", add_chat)
    r.add_post("/_emulator/teams", add_team)
    r.add_post("/_emulator/teams/{team_id}/channels", add_channel)
    actions = "{action:setReaction|unsetReaction|softDelete|undoSoftDelete}"
    for prefix in (
        "/_emulator/chats/{chat_id}",
        "/_emulator/teams/{team_id}/channels/{channel_id}",
    ):
        r.add_post(prefix + "/messages", post_message)
        r.add_patch(prefix + "/messages/{message_id}", edit_message)
        r.add_post(prefix + "/messages/{message_id}/" + actions, message_action)
    r.add_post("/_emulator/devicecodes/{verdict:approve|decline}", approve_device_code)
    r.add_get("/_emulator/devicelogin", devicelogin_page)
    r.add_post("/_emulator/devicelogin", devicelogin_page)
    r.add_post("/_emulator/tokens", mint_token)
    r.add_post("/_emulator/faults", add_fault)
    r.add_get("/_emulator/faults", list_faults)
    r.add_delete("/_emulator/faults", clear_faults)
    r.add_get("/_emulator/requests", list_requests)
    r.add_get("/_emulator/requests/count", count_requests)
    r.add_delete("/_emulator/requests", clear_requests)
    r.add_get("/_emulator/notifications", list_notifications)
    r.add_get("/_emulator/subscriptions", list_subscriptions)
    r.add_post("/_emulator/subscriptions/{subscription_id}/lifecycle", lifecycle)
    r.add_post("/_emulator/clock", advance_clock)
    r.add_post("/_emulator/reset", reset)
