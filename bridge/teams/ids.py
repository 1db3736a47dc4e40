"""Teams ids as the store sees them.

- A portal is one Teams chat, by its Graph id (``19:…@thread.v2``, ``19:…@unq.gbl.spaces``),
  with no receiver: every bridged member sees the same room. A team's channel is a portal too,
  as ``channel:<team id>:<channel id>`` (:func:`channel_key`; chat ids never start so).
- A remote user is an AAD (Entra ID) object id, lowercase; the ghost is ``@teams_<id>``.
- A message id is Graph's chatMessage id (unique within its chat).
- A login id is the AAD object id of the Matrix user's own Teams account.
"""

from __future__ import annotations

import re

from bridge.core import LoginID, NetworkID, PortalKey, RemoteChatID, RemoteMessageID, RemoteUserID

NETWORK = NetworkID("teams")

_RESOURCE = re.compile(r"chats\('(?P<chat>[^']+)'\)/messages\('(?P<message>[^']+)'\)")
_CHANNEL_RESOURCE = re.compile(
    r"^/?teams\('(?P<team>[^'/]+)'\)/channels\('(?P<channel>[^'/]+)'\)"
    r"/messages\('(?P<message>[^'/]+)'\)(?:/replies\('(?P<reply>[^'/]+)'\))?$"
)
CHANNEL_PREFIX = "channel:"


def portal_key(chat_id: str) -> PortalKey:
    return PortalKey(NETWORK, RemoteChatID(chat_id))


def user_id(aad_object_id: str) -> RemoteUserID:
    return RemoteUserID(aad_object_id.strip().lower())


def login_id(aad_object_id: str) -> LoginID:
    return LoginID(aad_object_id.strip().lower())


def message_id(graph_id: str) -> RemoteMessageID:
    return RemoteMessageID(graph_id)


def parse_message_resource(resource: str) -> tuple[str, str] | None:
    """(chat id, message id) of a notification's ``resource``, e.g.
    ``chats('19:…')/messages('1700000000000')``; ``None`` for anything else (channels)."""
    match = _RESOURCE.search(resource)
    if match is None:
        return None
    return match["chat"], match["message"]


def channel_key(team_id: str, channel_id: str) -> PortalKey:
    """The portal of a team's channel (team ids are GUIDs: no ``:`` in them)."""
    return PortalKey(NETWORK, RemoteChatID(f"{CHANNEL_PREFIX}{team_id.lower()}:{channel_id}"))


def parse_channel(remote_id: str) -> tuple[str, str] | None:
    """(team id, channel id) of a channel portal's remote id; ``None`` for a chat's."""
    if not remote_id.startswith(CHANNEL_PREFIX):
        return None
    team, _, channel = remote_id.removeprefix(CHANNEL_PREFIX).partition(":")
    return (team, channel) if team and channel else None


def parse_channel_resource(resource: str) -> tuple[str, str, str, str | None] | None:
    """(team id, channel id, message id, reply id) of a channel notification's ``resource``,
    ``teams('…')/channels('…')/messages('…')[/replies('…')]``; ``None`` for anything else."""
    match = _CHANNEL_RESOURCE.match(resource)
    if match is None:
        return None
    return match["team"].lower(), match["channel"], match["message"], match["reply"]
