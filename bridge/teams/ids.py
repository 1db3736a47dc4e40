"""Teams ids as the store sees them.

- A portal is one Teams chat, by its Graph id (``19:…@thread.v2``, ``19:…@unq.gbl.spaces``),
  with no receiver: every bridged member sees the same room.
- A remote user is an AAD (Entra ID) object id, lowercase; the ghost is ``@teams_<id>``.
- A message id is Graph's chatMessage id (unique within its chat).
- A login id is the AAD object id of the Matrix user's own Teams account.
"""

from __future__ import annotations

import re

from bridge.core import LoginID, NetworkID, PortalKey, RemoteChatID, RemoteMessageID, RemoteUserID

NETWORK = NetworkID("teams")

_RESOURCE = re.compile(r"chats\('(?P<chat>[^']+)'\)/messages\('(?P<message>[^']+)'\)")


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
