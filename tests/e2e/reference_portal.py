"""Portals on the reference network for the hub's end-to-end tests: a management room with
the bot, and a new chat whose first remote message makes a portal room.

Every chat id comes from one counter, so tests in different modules never share a chat on the
session's hub.
"""

from __future__ import annotations

import itertools
from typing import Any

from tests.e2e.conftest import Hub
from tests.e2e.matrix_client import MatrixUser

_chats = itertools.count(1)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


async def _management_room(hub: Hub, user: MatrixUser) -> str:
    room_id = await user.create_room(invite=[hub.bot], is_direct=True)
    await user.wait_for(
        lambda e: e["sender"] == hub.bot and "Pontis bridge bot" in _body(e), room_id=room_id
    )
    return room_id


async def _portal(
    hub: Hub, user: MatrixUser, *, sender: str = "bob", name: str = "Bob Remote"
) -> tuple[str, str, str]:
    """A remote message in a new chat; returns (chat id, portal room id, Matrix event id)."""
    chat = f"chat{next(_chats)}"
    hub.remote.users[sender] = {"name": name}
    hub.remote.chats[chat] = {
        "name": f"Project {chat}",
        "topic": "Bridged",
        "matrix_users": [user.mxid],
    }
    await hub.remote.push(
        {
            "kind": "message",
            "chat": chat,
            "sender": sender,
            "id": f"{chat}-m1",
            "text": "Hello from the remote side",
        }
    )
    room_id = await user.wait_for_invite()
    await user.join(room_id)
    event = await user.wait_for(lambda e: _body(e) == "Hello from the remote side", room_id=room_id)
    return chat, room_id, event["event_id"]
