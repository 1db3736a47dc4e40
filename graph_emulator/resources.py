"""Subscription resources: which message changes a subscription's ``resource`` covers.

Graph accepts these for chatMessage change notifications (with or without a leading slash,
with or without ``()`` after functions, with query options such as ``?model=B``):
``/chats/{id}/messages``, ``/chats/getAllMessages``, ``/users/{id}/chats/getAllMessages``
(``/me/…`` too), ``/teams/{id}/channels/{id}/messages``, ``/teams/{id}/channels/getAllMessages``
and ``/teams/getAllMessages``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from .odata import bad_request
from .state import Channel, Chat, Message

TargetKind = Literal["chat", "all_chats", "user_chats", "channel", "team_channels", "all_channels"]

_KEY = r"(?:\('(?P<{0}q>[^']+)'\)|/(?P<{0}>[^/]+))"
_PATTERNS: list[tuple[TargetKind, re.Pattern[str]]] = [
    ("all_chats", re.compile(r"^chats/getAllMessages$")),
    ("all_channels", re.compile(r"^teams/getAllMessages$")),
    ("chat", re.compile("^chats" + _KEY.format("a") + "/messages$")),
    ("user_chats", re.compile("^users" + _KEY.format("a") + "/chats/getAllMessages$")),
    ("user_chats", re.compile(r"^(?P<me>me)/chats/getAllMessages$")),
    ("team_channels", re.compile("^teams" + _KEY.format("a") + "/channels/getAllMessages$")),
    (
        "channel",
        re.compile("^teams" + _KEY.format("a") + "/channels" + _KEY.format("b") + "/messages$"),
    ),
]


@dataclass(frozen=True, slots=True)
class Target:
    kind: TargetKind
    # chat id, user id, or team id, depending on kind; "me" is resolved by the caller.
    first: str | None = None
    channel_id: str | None = None


def parse_resource(resource: str) -> Target:
    """The target of a resource string, or Graph's 400 for one the emulator does not serve."""
    path = resource.strip().split("?", 1)[0].strip("/")
    path = unquote(path).replace("()", "")
    for kind, pattern in _PATTERNS:
        match = pattern.match(path)
        if match is None:
            continue
        groups = match.groupdict()
        if "me" in groups:
            return Target(kind, "me")
        first = groups.get("aq") or groups.get("a")
        second = groups.get("bq") or groups.get("b")
        return Target(kind, first, second)
    raise bad_request(
        f"Resource '{resource}' is not supported for change notifications by the emulator. "
        "Supported: /chats/{id}/messages, /chats/getAllMessages, /users/{id}/chats/getAllMessages, "
        "/teams/{id}/channels/{id}/messages, /teams/{id}/channels/getAllMessages, /teams/getAllMessages.",
        code="InvalidRequest",
    )


def covers(target: Target, tenant_id: str, message: Message) -> bool:
    """Whether a change to ``message`` is reported to a subscription on ``target``."""
    conversation = message.conversation
    if conversation.tenant_id != tenant_id:
        return False
    if isinstance(conversation, Chat):
        if target.kind == "chat":
            return conversation.id == target.first
        if target.kind == "all_chats":
            return True
        if target.kind == "user_chats":
            return target.first in conversation.members
        return False
    if isinstance(conversation, Channel):
        if target.kind == "channel":
            return conversation.team_id == target.first and conversation.id == target.channel_id
        if target.kind == "team_channels":
            return conversation.team_id == target.first
        return target.kind == "all_channels"
    return False
