"""Through the bridge to the reference network, in both directions.

The reference network is the in-process test network of ``tests/reference``: it answers at once,
so these paths measure the hub core alone (appservice, inbox, router, portal store, Matrix API),
not any real network's protocol stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.harness import BenchHub
from bench.timing import Arrivals, TimedMatrixUser, TimedRemoteNetwork

NOTE = "reference network (in-process test network; measures the hub core alone)"


@dataclass(frozen=True, slots=True)
class OpenPortal:
    chat: str
    room_id: str
    sender: str
    """The remote user who speaks in it (a ghost on the Matrix side)."""


def _body_is(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("content", {}).get("body") == text


async def open_portals(
    hub: BenchHub, user: TimedMatrixUser, prefix: str, count: int, wait_seconds: float = 120
) -> list[OpenPortal]:
    """``count`` new remote chats, each opened by a remote message; ``user`` joins them all."""
    chats = [hub.chat_id(prefix) for _ in range(count)]
    for chat in chats:
        sender = f"{chat}-sender"
        hub.remote.users[sender] = {"name": f"Sender of {chat}"}
        hub.remote.chats[chat] = {"name": f"Bench {chat}", "matrix_users": [user.mxid]}
        await hub.remote.push(
            {
                "kind": "message",
                "chat": chat,
                "sender": sender,
                "id": "open",
                "text": f"open {chat}",
            }
        )
    rooms = [await user.wait_for_invite(timeout=wait_seconds) for _ in chats]
    await asyncio.gather(*(user.join(room_id) for room_id in rooms))
    portals = []
    for chat in chats:
        opened = await user.wait_for(_body_is(f"open {chat}"), timeout=wait_seconds)
        portals.append(OpenPortal(chat, opened["room_id"], f"{chat}-sender"))
    return portals


async def push_message(remote: TimedRemoteNetwork, portal: OpenPortal, text: str) -> None:
    await remote.push(
        {"kind": "message", "chat": portal.chat, "sender": portal.sender, "id": text, "text": text}
    )


@dataclass
class RemoteToMatrix:
    remote: TimedRemoteNetwork
    portal: OpenPortal
    arrivals: Arrivals
    key: str = "reference-in"
    label: str = "Reference network → Matrix user"

    async def send(self, token: str) -> None:
        await push_message(self.remote, self.portal, token)


@dataclass
class MatrixToRemote:
    user: TimedMatrixUser
    portal: OpenPortal
    arrivals: Arrivals
    key: str = "reference-out"
    label: str = "Matrix user → reference network"

    async def send(self, token: str) -> None:
        await self.user.send_text(self.portal.room_id, token)


async def reference_paths(
    hub: BenchHub, user: TimedMatrixUser
) -> tuple[RemoteToMatrix, MatrixToRemote]:
    (portal,) = await open_portals(hub, user, "bench-chat-", 1)
    return (
        RemoteToMatrix(hub.remote, portal, user.arrivals),
        MatrixToRemote(user, portal, hub.remote.arrivals),
    )
