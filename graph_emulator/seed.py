"""Build a tenant from a document: the ``--seed`` file and ``POST /_emulator/seed`` share this.

A seed reads like the demo it creates::

    tenants:
      - displayName: Contoso
        cloud: global            # or usgov, usgovdod, china: the Graph its tokens are for
        apps: [{displayName: Pontis, clientId: …, clientSecret: …, certificates: [PEM, …]}]
        users:
          - {displayName: Adele Vance, userPrincipalName: adele@contoso.onmicrosoft.com, password: …}
        chats:
          - chatType: group
            topic: Launch
            members: [adele@contoso.onmicrosoft.com, alex@contoso.onmicrosoft.com]
            messages: [{from: adele@contoso.onmicrosoft.com, content: "<p>Hi!</p>"}]
        teams:
          - displayName: Mark 8
            members: [adele@contoso.onmicrosoft.com]
            channels: [{displayName: General, messages: [...]},
                       {displayName: Board, membershipType: private, members: [adele@…]}]

Every id is optional (generated when missing); the answer lists what was created, ids and
generated secrets included, so a test can seed and then address things by name.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

from .assertions import load_certificate
from .clouds import GRAPH_RESOURCES
from .odata import new_guid
from .permissions import DEFAULT_APPLICATION_PERMISSIONS, DEFAULT_DELEGATED_PERMISSIONS
from .services import Services
from .shapes import user_json
from .state import App, Conversation, Tenant, User


class SeedError(ValueError):
    """The document is wrong; the message says where."""


def _str(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise SeedError(f"'{key}' must be a non-empty string (in {data!r:.120})")
    return value


def add_tenant(svc: Services, data: dict[str, Any]) -> Tenant:
    name = _str(data, "displayName", "Contoso")
    slug = re.sub(r"[^a-z0-9]", "", name.lower()) or "tenant"
    tenant = Tenant(
        str(data.get("id") or new_guid()).lower(),
        name,
        _str(data, "domain", f"{slug}.onmicrosoft.com"),
        cloud=_cloud(data.get("cloud", "global")),
    )
    if tenant.id in svc.state.tenants:
        raise SeedError(f"tenant {tenant.id} exists already")
    svc.state.tenants[tenant.id] = tenant
    return tenant


def _cloud(value: object) -> str:
    if value not in GRAPH_RESOURCES:
        raise SeedError(f"'cloud' must be one of {', '.join(GRAPH_RESOURCES)}, not {value!r}")
    return str(value)


def _certificates(value: object) -> list[str]:
    """PEM certificates, each checked to parse (a typo is a seed error, not a refused login)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SeedError("'certificates' must be a list of PEM certificates")
    for pem in value:
        try:
            load_certificate(pem)
        except ValueError as err:
            raise SeedError(f"'certificates': not a PEM certificate ({err})") from err
    return list(value)


def add_app(svc: Services, tenant: Tenant, data: dict[str, Any]) -> App:
    app = App(
        client_id=str(data.get("clientId") or new_guid()).lower(),
        tenant_id=tenant.id,
        display_name=_str(data, "displayName", "Pontis"),
        client_secret=str(data.get("clientSecret") or "emu~" + secrets.token_urlsafe(30)),
        application_permissions=set(
            data.get("applicationPermissions") or DEFAULT_APPLICATION_PERMISSIONS
        ),
        delegated_permissions=set(
            data.get("delegatedPermissions") or DEFAULT_DELEGATED_PERMISSIONS
        ),
        public_client=bool(data.get("publicClient", True)),
        certificates=_certificates(data.get("certificates")),
    )
    if app.client_id in svc.state.apps:
        raise SeedError(f"app {app.client_id} exists already")
    svc.state.apps[app.client_id] = app
    return app


def add_user(svc: Services, tenant: Tenant, data: dict[str, Any]) -> User:
    name = _str(data, "displayName")
    local = re.sub(r"[^a-z0-9.]", "", name.lower().replace(" ", ".")) or "user"
    upn = _str(data, "userPrincipalName", f"{local}@{tenant.domain}")
    given, _, surname = name.partition(" ")
    user = User(
        id=str(data.get("id") or new_guid()).lower(),
        tenant_id=tenant.id,
        display_name=name,
        user_principal_name=upn,
        mail=data.get("mail", upn),
        password=str(data.get("password") or "Passw0rd!"),
        given_name=data.get("givenName", given or None),
        surname=data.get("surname", surname or None),
        job_title=data.get("jobTitle"),
    )
    if svc.state.find_user(user.id) or svc.state.find_user(upn):
        raise SeedError(f"user {upn} exists already")
    svc.state.users[user.id] = user
    return user


def membership_type(data: dict[str, Any]) -> Literal["standard", "private", "shared"]:
    """A channel's ``membershipType``: ``private`` and ``shared`` ones list their ``members``."""
    kind = data.get("membershipType", "standard")
    if kind not in ("standard", "private", "shared"):
        raise SeedError(f"'membershipType' must be standard, private or shared, not {kind!r}")
    if kind != "standard" and not data.get("members"):
        raise SeedError(f"a {kind} channel needs its 'members'")
    return kind


def user_ids(svc: Services, tenant_id: str, keys: object) -> list[str]:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise SeedError("'members' must be a list of user ids or userPrincipalNames")
    ids = []
    for key in keys:
        user = svc.state.find_user(key, tenant_id)
        if user is None:
            raise SeedError(f"unknown user {key!r} in tenant {tenant_id}")
        ids.append(user.id)
    return ids


def post_messages(
    svc: Services, conversation: Conversation, items: object, graph_base: str
) -> list[str]:
    ids = []
    for item in items if isinstance(items, list) else []:
        sender = svc.state.find_user(_str(item, "from"), conversation.tenant_id)
        if sender is None or sender.id not in conversation.members:
            raise SeedError(f"sender {item.get('from')!r} is not a member of {conversation.id}")
        kind: Literal["html", "text"] = (
            "text" if str(item.get("contentType", "html")).lower() == "text" else "html"
        )
        message = svc.teamwork.post_message(
            conversation, sender.id, _str(item, "content"), kind, graph_base=graph_base
        )
        ids.append(message.id)
    return ids


def apply(svc: Services, document: dict[str, Any], graph_base: str) -> dict[str, Any]:
    """Create everything in ``document``; returns the created ids (and secrets)."""
    created: list[dict[str, Any]] = []
    for tenant_data in document.get("tenants") or []:
        tenant = add_tenant(svc, tenant_data)
        out: dict[str, Any] = {
            "id": tenant.id,
            "domain": tenant.domain,
            "apps": [],
            "users": [],
            "chats": [],
            "teams": [],
        }
        for app_data in tenant_data.get("apps") or [{}]:
            app = add_app(svc, tenant, app_data)
            out["apps"].append(
                {
                    "clientId": app.client_id,
                    "clientSecret": app.client_secret,
                    "displayName": app.display_name,
                }
            )
        for user_data in tenant_data.get("users") or []:
            out["users"].append(user_json(add_user(svc, tenant, user_data)))
        for chat_data in tenant_data.get("chats") or []:
            chat, _ = svc.teamwork.create_chat(
                tenant.id,
                str(chat_data.get("chatType", "group")),
                user_ids(svc, tenant.id, chat_data.get("members")),
                chat_data.get("topic"),
            )
            messages = post_messages(svc, chat, chat_data.get("messages"), graph_base)
            out["chats"].append({"id": chat.id, "topic": chat.topic, "messages": messages})
        for team_data in tenant_data.get("teams") or []:
            team = svc.teamwork.create_team(
                tenant.id,
                _str(team_data, "displayName"),
                user_ids(svc, tenant.id, team_data.get("members")),
                team_data.get("description"),
            )
            channels_out = []
            for channel_data in team_data.get("channels") or []:
                name = _str(channel_data, "displayName")
                channel = next(
                    (
                        svc.state.channels[c]
                        for c in team.channel_ids
                        if svc.state.channels[c].display_name == name
                    ),
                    None,
                ) or svc.teamwork.create_channel(
                    team,
                    name,
                    channel_data.get("description"),
                    membership_type(channel_data),
                    user_ids(svc, tenant.id, channel_data.get("members") or []),
                )
                messages = post_messages(svc, channel, channel_data.get("messages"), graph_base)
                channels_out.append({"id": channel.id, "displayName": name, "messages": messages})
            for channel_id in team.channel_ids:
                channel = svc.state.channels[channel_id]
                if not any(c["id"] == channel_id for c in channels_out):
                    channels_out.append(
                        {"id": channel_id, "displayName": channel.display_name, "messages": []}
                    )
            out["teams"].append(
                {"id": team.id, "displayName": team.display_name, "channels": channels_out}
            )
        created.append(out)
    return {"tenants": created}


# ``--demo``: a small tenant with fixed ids and secrets, so a demo bridge config can name them.
DEMO: dict[str, Any] = {
    "tenants": [
        {
            "id": "6f1c2a5e-0b7d-4f0e-9d43-5a1e2c3b4d5f",
            "displayName": "Contoso",
            "domain": "contoso.onmicrosoft.com",
            "apps": [
                {
                    "clientId": "0e3f5b1a-7c2d-4e8f-a1b2-c3d4e5f60718",
                    "clientSecret": "demo-secret",
                    "displayName": "Pontis bridge",
                }
            ],
            "users": [
                {
                    "id": "a1d2c3b4-0000-4000-8000-000000000001",
                    "displayName": "Adele Vance",
                    "password": "adele",
                },
                {
                    "id": "a1d2c3b4-0000-4000-8000-000000000002",
                    "displayName": "Alex Wilber",
                    "password": "alex",
                },
                {
                    "id": "a1d2c3b4-0000-4000-8000-000000000003",
                    "displayName": "Megan Bowen",
                    "password": "megan",
                },
                {
                    "id": "a1d2c3b4-0000-4000-8000-0000000000b0",
                    "displayName": "Pontis Relay",
                    "password": "relay",
                },
            ],
            "chats": [
                {
                    "chatType": "group",
                    "topic": "Federation pilot",
                    "members": [
                        "adele.vance@contoso.onmicrosoft.com",
                        "alex.wilber@contoso.onmicrosoft.com",
                        "pontis.relay@contoso.onmicrosoft.com",
                    ],
                    "messages": [
                        {
                            "from": "adele.vance@contoso.onmicrosoft.com",
                            "content": "<p>Welcome to the pilot!</p>",
                        }
                    ],
                },
                {
                    "chatType": "oneOnOne",
                    "members": [
                        "adele.vance@contoso.onmicrosoft.com",
                        "megan.bowen@contoso.onmicrosoft.com",
                    ],
                },
            ],
            "teams": [
                {
                    "displayName": "Operations",
                    "members": [
                        "adele.vance@contoso.onmicrosoft.com",
                        "alex.wilber@contoso.onmicrosoft.com",
                    ],
                    "channels": [{"displayName": "General"}, {"displayName": "Incidents"}],
                }
            ],
        }
    ]
}
