"""Nothing Teams hands the hub is lost: a bridge killed in the middle of a burst. Each message
arrives once, in order, and nobody is told of a loss. The homeserver and Graph outages are in
test_outages.py, together with the other networks'; it uses the helpers here.

One Matrix user logs in as the Teams user Megan Bowen (test_teams.py has Adele); each test makes
a fresh chat of Megan, Alex and the relay account. The hub is shared by the session: what a test
stops or breaks is restored in a ``finally``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_teams import Teams, _body, ghost, teams_login

pytestmark = pytest.mark.e2e
_chats = itertools.count(1)


@pytest_asyncio.fixture(scope="module")
async def megan(hub: Hub) -> AsyncIterator[Teams]:
    user = await hub.user("megan")
    room = await teams_login(hub, user, "megan")
    yield Teams(user, room)


async def _portal(hub: Hub, megan: Teams) -> tuple[str, str]:
    """Alex writes in a new chat with Megan; returns (chat id, room id) once it is bridged."""
    chat = await hub.graph.new_chat(f"Durable {next(_chats)}", "megan", "alex")
    await hub.graph.post_as("alex", chat, "<p>Opening</p>")
    room_id = await megan.user.wait_for_invite(timeout=30)
    await megan.user.join(room_id)
    await megan.user.wait_for(lambda e: _body(e) == "Opening", room_id=room_id, timeout=30)
    return chat, room_id


async def _timeline(user: MatrixUser, room_id: str) -> list[dict[str, Any]]:
    """The room's messages, oldest first, as the homeserver has them (not as sync saw them)."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/messages"
    page = await user.request("GET", path, params={"dir": "b", "limit": "200"})
    return [e for e in reversed(page["chunk"]) if e["type"] == "m.room.message"]


async def _arrived_once_in_order(
    hub: Hub, megan: Teams, room_id: str, texts: list[str], timeout: float
) -> None:
    """Every one of ``texts`` from Alex's ghost, once, in order, and no notice of a loss."""
    alex = ghost(hub, "alex")
    deadline = time.monotonic() + timeout
    while True:
        events = await _timeline(megan.user, room_id)
        got = [_body(e) for e in events if e["sender"] == alex and _body(e) in texts]
        if len(got) >= len(texts) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert got == texts, f"expected each once, in order; Matrix has {got}\n{hub.bridge.tail()}"
    lost = [_body(e) for e in events if "could not be bridged" in _body(e)]
    assert lost == [], lost


def _deliveries(hub: Hub, chat: str) -> list[Any]:
    """The emulator's change notifications about ``chat`` through Megan's subscription, oldest
    first (the relay account's subscription reports the same changes once more)."""
    megan = hub.graph.user("megan")["id"].lower()
    subscriptions = hub.graph.services.state.subscriptions.values()
    hers = {s.id for s in subscriptions if megan in s.resource.lower()}
    return [
        d
        for d in hub.graph.services.notifier.deliveries
        if d.kind == "change" and d.subscription_id in hers and chat in json.dumps(d.payload)
    ]


async def test_bridge_killed_after_its_202_loses_nothing(hub: Hub, megan: Teams) -> None:
    chat, room_id = await _portal(hub, megan)
    texts = [f"Burst {n}" for n in range(1, 11)]
    wire = hub.graph.services.wire
    # Reading a message is slow, so notifications answered 202 are still waiting in the remote
    # inbox, not on Matrix, when the bridge dies.
    slow = wire.add_fault(f"/v1.0/chats/{chat}/messages/*", method="GET", status=200,
                          delay=1.0, count=1_000)  # fmt: skip

    async def burst() -> None:
        for text in texts:
            await hub.graph.post_as("alex", chat, f"<p>{text}</p>")
            await asyncio.sleep(0.1)

    posting = asyncio.create_task(burst())
    try:
        await eventually(
            lambda: sum(d.state == "delivered" for d in _deliveries(hub, chat)) >= 3,
            "the bridge to answer 202 for the first notifications of the burst",
        )
        hub.bridge.kill()
        kept = hub.bridge.query(
            "SELECT COUNT(*) FROM remote_inbox WHERE network = 'teams' AND kind = 'notification'"
        )
        assert kept[0][0] >= 1, "no notification was waiting when the bridge died"
        await posting
        # Graph gave up on the rest (it would retry for hours; the emulator stops sooner).
        await eventually(
            lambda: all(d.state != "pending" for d in _deliveries(hub, chat)), "Graph to give up"
        )
        answered = [d.state for d in _deliveries(hub, chat)][1:]  # after "Opening"
        assert "failed" in answered and "delivered" in answered, answered
    finally:
        posting.cancel()
        wire.faults.remove(slow)
        if hub.bridge.proc is None or hub.bridge.proc.poll() is not None:
            await hub.bridge.start(hub.as_port)
    # Kept before the 202: from the remote inbox. Not answered: caught up after the start.
    await _arrived_once_in_order(hub, megan, room_id, texts, 60)
