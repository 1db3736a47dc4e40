"""The dead-letter commands of the management room: admins only, in their management room."""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from bridge.core.commands import CommandProcessor
from bridge.core.permissions import Permissions
from bridge.portal.models import BridgeUser
from bridge.portal.store import Store
from tests.test_dead_letters import matrix_letter, remote_letter

ADMIN, USER = "@admin:hub.test", "@user:hub.test"
ADMIN_ROOM, USER_ROOM, PORTAL_ROOM = "!admin-dm:hub.test", "!user-dm:hub.test", "!portal:hub.test"


class Room:
    def __init__(self, store: Store) -> None:
        self.replies: list[tuple[str, str]] = []
        matrix = MagicMock(bot_mxid="@pontis:hub.test")

        async def send(sender: str, room_id: str, content: dict[str, Any], **_: Any) -> str:
            self.replies.append((room_id, content["body"]))
            return "$reply"

        matrix.send = send
        self.router = MagicMock()
        self.router.remote.poll = AsyncMock(return_value=1)
        self.commands = CommandProcessor(
            store=store, matrix=matrix, router=self.router, connectors={},
            permissions=Permissions({"hub.test": "user", ADMIN: "admin"}), prefix="!pontis",
            load_login=AsyncMock(), log=logging.getLogger("test.commands"),
        )  # fmt: skip

    async def say(self, room_id: str, sender: str, text: str) -> str:
        before = len(self.replies)
        event = {"type": "m.room.message", "event_id": "$cmd", "sender": sender,
                 "content": {"msgtype": "m.text", "body": text}}  # fmt: skip
        await self.commands.handle(room_id, sender, event)
        ((room, reply),) = self.replies[before:]
        assert room == room_id
        return reply


@pytest.fixture
async def room(store: Store) -> Room:
    await store.save_user(BridgeUser(mxid=ADMIN, management_room=ADMIN_ROOM))
    await store.save_user(BridgeUser(mxid=USER, management_room=USER_ROOM))
    return Room(store)


async def test_an_admin_lists_retries_and_drops(room: Room, store: Store) -> None:
    assert await room.say(ADMIN_ROOM, ADMIN, "dead-letters") == (
        "No dead letters: everything was bridged."
    )
    first = await matrix_letter(store, "$refused", error="refused `by` policy")
    second = await remote_letter(store, "hello")
    listing = await room.say(ADMIN_ROOM, ADMIN, "dead-letters")
    assert listing.startswith("**Dead letters** (2)\n\n```\n")
    assert f"\n{first}  Matrix → network  -  !portal:hub.test  " in listing
    assert "refused 'by' policy" in listing  # cannot end the code block
    assert f"\n{second}  network → Matrix  reference  portal chat-1  " in listing

    reply = await room.say(ADMIN_ROOM, ADMIN, f"retry {first}")
    assert reply.startswith(f"Dead letter {first}: back in the inbox (Matrix → network)")
    room.router.notify_inbox.assert_called_once_with()
    room.router.remote.poll.assert_awaited_once()
    assert [r.event_id for r in await store.pending_inbox()] == ["$refused"]
    assert await room.say(ADMIN_ROOM, ADMIN, f"retry {first}") == (
        f"There is no dead letter {first}."
    )
    assert await room.say(ADMIN_ROOM, ADMIN, "retry soon") == "Usage: `retry <id>|all`"
    assert await room.say(ADMIN_ROOM, ADMIN, f"drop {second}") == f"Dropped dead letter {second}."
    await remote_letter(store, "a")
    await remote_letter(store, "b")
    assert await room.say(ADMIN_ROOM, ADMIN, "!pontis drop all") == "Dropped 2 dead letters."
    assert await store.dead_letters.count() == 0


@pytest.mark.parametrize("command", ["dead-letters", "retry 1", "drop all", "Retry all"])
async def test_others_are_refused_clearly(room: Room, store: Store, command: str) -> None:
    letter = await matrix_letter(store, "$kept")
    reply = await room.say(USER_ROOM, USER, command)
    assert reply.startswith("Only bridge admins may use `") and "`admin` level" in reply
    # An admin, but in a room other people read:
    reply = await room.say(PORTAL_ROOM, ADMIN, f"!pontis {command}")
    assert "management room" in reply
    assert await store.dead_letters.get(letter) is not None
    room.router.remote.poll.assert_not_awaited()
