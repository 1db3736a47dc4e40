"""Through the bridge's Teams connector to the Graph emulator, in both directions, over a chat.

Microsoft Graph cannot be reached from the benchmark machine, so the project's Graph emulator
stands in for it (:class:`~bench.graph.TimedGraphEmulator`: ``graph_emulator`` on a
loopback port in the benchmark process, seeded as in ``tests/e2e/graph.py``). The connector talks
to it over HTTP exactly as to Graph, through the unmodified msgraph-sdk; Graph's own latency and
its notification delays are not part of these figures.

The chat opens as in ``tests/e2e/test_teams.py``: the Matrix user logs in as the Teams user
Adele with ``login teams`` (device code, approved through the emulator's control API), then Alex
writes in a new group chat of Adele, Alex and the relay account; the Matrix user is invited to
its portal and joins.

- **Teams → Matrix.** Alex posts through the control API (his Teams client); the emulator sends
  the change notification to the bridge's webhook, the bridge stores it, answers ``202``, fetches
  the message with the app token and puts it on Matrix. Arrival: the Matrix user's ``/sync``.
- **Matrix → Teams.** The bridge posts the Matrix user's message as Adele with her delegated
  token. Arrival: the moment the emulator creates the message (before its ``201``). The change
  notification of that message then comes back to the bridge, which recognises its own echo and
  drops it; that work falls in the measured phase and counts in the bridge's CPU and database
  round trips, as it would against Graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bench.config import DOMAIN
from bench.graph import TimedGraphEmulator
from bench.harness import BenchHub
from bench.timing import Arrivals, TimedMatrixUser

NOTE = (
    "the bridge's Teams connector against the project's Graph emulator (Microsoft Graph cannot "
    "be reached from here), which runs in the benchmark process on loopback: the Teams user "
    "posts through its control API, the bridge's posts are timestamped where the emulator "
    "creates them; the emulator's own CPU is the benchmark's and is not metered"
)
BOT = f"@pontis:{DOMAIN}"
"""The bridge bot (``bot_username`` in ``tests/e2e/hub.py``'s config)."""


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


@dataclass
class TeamsToMatrix:
    graph: TimedGraphEmulator
    chat_id: str
    arrivals: Arrivals
    key: str = "teams-in"
    label: str = "Teams emulator → Matrix user"

    async def send(self, token: str) -> None:
        await self.graph.post_as("alex", self.chat_id, f"<p>{token}</p>")


@dataclass
class MatrixToTeams:
    user: TimedMatrixUser
    room_id: str
    arrivals: Arrivals
    key: str = "teams-out"
    label: str = "Matrix user → Teams emulator"

    async def send(self, token: str) -> None:
        await self.user.send_text(self.room_id, token)


async def teams_login(
    graph: TimedGraphEmulator, user: TimedMatrixUser, first_name: str, wait_seconds: float = 60
) -> None:
    """``login teams`` in a new management room; the device code is approved in the emulator
    as the person would in their browser."""
    room = await user.create_room(invite=[BOT], is_direct=True)
    await user.wait_for(
        lambda e: "Pontis bridge bot" in _body(e), room_id=room, timeout=wait_seconds
    )
    mark = user.mark()
    await user.send_text(room, "login teams")
    prompt = await user.wait_for(
        lambda e: "enter the code" in _body(e), room_id=room, after=mark, timeout=wait_seconds
    )
    code = re.search(r"\*\*(\S+)\*\*", _body(prompt))
    if code is None:
        raise RuntimeError(f"no device code in the bot's answer: {_body(prompt)!r}")
    await graph.control(
        "POST",
        "/devicecodes/approve",
        {"userCode": code.group(1), "user": graph.user(first_name)["id"]},
    )
    mark = user.mark()
    await user.send_text(room, "done")
    await user.wait_for(
        lambda e: "Logged in to Teams as" in _body(e),
        room_id=room,
        after=mark,
        timeout=wait_seconds,
    )


async def teams_paths(
    hub: BenchHub, user: TimedMatrixUser, wait_seconds: float = 60
) -> tuple[TeamsToMatrix, MatrixToTeams]:
    """``user`` logs in to Teams as Adele; Alex opens a new chat with her, ``user`` joins its
    portal.

    Bridges started earlier on other databases (the scale runs) left their subscriptions in the
    emulator, which would deliver every notification once more to this bridge, to be refused
    (wrong clientState) and retried. Those the opening message's notification shows refused are
    dropped, as Graph would drop them on expiry.
    """
    graph = hub.graph
    await teams_login(graph, user, "adele", wait_seconds)
    chat_id = await graph.new_chat(f"Bench {hub.chat_id('teams-')}", "adele", "alex")
    notifier = graph.services.notifier
    mark = len(notifier.deliveries)
    opening = f"open teams chat {chat_id}"
    await graph.post_as("alex", chat_id, f"<p>{opening}</p>")
    room_id = await user.wait_for_invite(timeout=wait_seconds)
    await user.join(room_id)
    await user.wait_for(lambda e: _body(e) == opening, room_id=room_id, timeout=wait_seconds)
    await notifier.idle()
    graph.drop_subscriptions(
        {d.subscription_id for d in notifier.deliveries[mark:] if d.state == "failed"}
    )
    return (
        TeamsToMatrix(graph, chat_id, user.arrivals),
        MatrixToTeams(user, room_id, graph.arrivals),
    )
