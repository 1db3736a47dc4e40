"""Live MUC messages that arrive before the bridge has rejoined a room wait for its archive.

A server may keep the bridge's occupant in a room across a component reconnect (ejabberd does;
found by tests/e2e/test_xmpp_catch_up.py against it) and send the room's live messages as soon as
the component is back, before the bridge has rejoined and asked the archive for what it missed.
Taken at once, such a message would reach Matrix before the missed ones, and move the room's mark
past them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any
from unittest.mock import patch

from bridge.portal.models import Portal
from bridge.xmpp.ids import NETWORK
from bridge.xmpp.store import ArchiveMark
from tests.xmpp.test_inbound import ROOM, FakeMarks
from tests.xmpp.test_mam import ScriptedClient, _live, bodies


def _scripted(started: list[Coroutine[Any, Any, None]]) -> tuple[ScriptedClient, FakeMarks]:
    marks = FakeMarks()
    marks.marks[ROOM] = ArchiveMark("s7", 0)
    scripted = ScriptedClient(marks, archived=True)
    scripted.room.archive = [("s7", "Xena", "seen"), ("s8", "Xena", "missed")]

    async def list_portals() -> list[Portal]:
        return [Portal(network=NETWORK, remote_id=ROOM)]  # type: ignore[arg-type]

    def background(coro: Coroutine[Any, Any, None], *, name: str) -> None:
        started.append(coro)

    scripted.ctx.store.list_portals = list_portals  # type: ignore[attr-defined]
    scripted.ctx.background = background  # type: ignore[attr-defined]
    scripted.ctx.set_client_state = lambda *_, **__: None  # type: ignore[attr-defined]
    return scripted, marks


async def test_a_live_message_before_the_rejoin_comes_after_the_missed_ones() -> None:
    started: list[Coroutine[Any, Any, None]] = []
    scripted, _marks = _scripted(started)
    await scripted.client._on_state(True, "")
    inbound = scripted.client.inbound
    await inbound.groupchat(_live(inbound, "s9", "Xena", "live, before the rejoin"))
    assert bodies(scripted.ctx) == []  # held
    [rejoin] = started
    await asyncio.wait_for(rejoin, 5)
    assert bodies(scripted.ctx) == ["missed", "live, before the rejoin"]
    mark = await inbound.marks.get(ROOM)
    assert mark is not None and mark.stanza_id == "s9"


async def test_a_room_that_cannot_be_rejoined_is_not_held_for_ever() -> None:
    started: list[Coroutine[Any, Any, None]] = []
    scripted, _marks = _scripted(started)
    scripted.client.component.up = False  # the rejoin fails at once: not connected
    await scripted.client._on_state(True, "")
    [rejoin] = started
    await asyncio.wait_for(rejoin, 5)
    inbound = scripted.client.inbound
    await inbound.groupchat(_live(inbound, "s9", "Xena", "later"))
    assert bodies(scripted.ctx) == ["later"]


async def test_a_store_outage_at_the_rejoin_releases_the_room_and_tries_again() -> None:
    started: list[Coroutine[Any, Any, None]] = []
    scripted, _marks = _scripted(started)
    await scripted.client._on_state(True, "")
    inbound = scripted.client.inbound
    real_get = inbound.marks.get

    async def down(room: str) -> Any:
        raise OSError("database unreachable")

    inbound.marks.get = down  # type: ignore[method-assign]
    [rejoin] = started
    await asyncio.wait_for(rejoin, 5)
    assert ROOM not in inbound._held  # released: live messages are not kept aside for ever
    assert ROOM in inbound._behind  # …and the mark does not move past what was missed
    [again] = started[1:]
    inbound.marks.get = real_get  # type: ignore[method-assign]
    scripted.client.component.up = True
    with patch("bridge.xmpp.joins.rejoin_delay", lambda _: 0):
        await asyncio.wait_for(again, 5)
    assert bodies(scripted.ctx) == ["missed"]
