"""A Matrix user without a Teams login reacts: Graph cannot react on someone's behalf, so the
relay account shows it as a marked message quoting what was reacted to, and deletes it when
the reaction is taken back. Real Synapse, the bridge as a process, the Graph emulator.

Megan Bowen is logged in (as in test_teams_durable.py); Bob, with no Teams login, joins her
portal room, where the relay account speaks for him.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bridge.teams.from_matrix import EXTERNAL
from tests.e2e.conftest import Hub
from tests.e2e.test_teams import Teams, _body, _teams_message
from tests.e2e.test_teams_durable import _portal, megan

pytestmark = pytest.mark.e2e
__all__ = ["megan"]


async def _until(check: Any, what: str, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


async def test_a_reaction_without_a_login_is_shown_by_the_relay_and_taken_back(
    hub: Hub, megan: Teams
) -> None:
    chat, room_id = await _portal(hub, megan)
    alex_message = await hub.graph.post_as("alex", chat, "<p>Lunch at noon?</p>")
    event = await megan.user.wait_for(
        lambda e: _body(e) == "Lunch at noon?", room_id=room_id, timeout=45
    )
    bob = await hub.user("bob")
    await megan.user.invite(room_id, bob.mxid)
    await bob.join(room_id)
    reaction_id = await bob.react(room_id, event["event_id"], "👍")
    shown = await _teams_message(
        hub, chat, lambda m: "reacted 👍" in m["body"]["content"], "the relayed reaction"
    )
    content = shown["body"]["content"]
    assert content.startswith(
        f'<attachment id="{alex_message}"></attachment><p><b>{EXTERNAL}</b> · <b>{bob.mxid}</b>'
    ), content
    assert content.endswith("<p>reacted 👍 to: “Lunch at noon?”</p>"), content
    assert shown["from"]["user"]["displayName"] == "Pontis Relay"
    [original] = [m for m in await hub.graph.messages(chat) if m["id"] == alex_message]
    assert original["reactions"] == []  # nobody's reaction was made up

    # Hostile: markup as the key is shown as text.
    await bob.react(room_id, event["event_id"], "<b>big</b>")
    hostile = await _teams_message(
        hub, chat, lambda m: "reacted &lt;b&gt;big" in m["body"]["content"], "the escaped key"
    )
    assert "<b>big</b>" not in hostile["body"]["content"]

    await bob.redact(room_id, reaction_id)

    async def deleted() -> bool:
        now = [m for m in await hub.graph.messages(chat) if m["id"] == shown["id"]]
        return bool(now and now[0]["deletedDateTime"])

    await _until(deleted, "the relay's reaction message to be deleted")
    # The relay's own posts never come back to Matrix as messages.
    await hub.graph.post_as("alex", chat, "<p>sentinel</p>")
    await megan.user.wait_for(lambda e: _body(e) == "sentinel", room_id=room_id, timeout=45)
    bodies = [_body(e) for e in megan.user.events if e.get("room_id") == room_id]
    assert not [b for b in bodies if "reacted" in b], bodies
