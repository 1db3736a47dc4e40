"""Catch-up that loses nothing: what happened in Teams while the hub was not told (it was
stopped, or its subscription was gone and had to be created again) reaches Matrix after, once
and in the order it happened: new messages, edits, deletions and reactions alike.

Against the real Synapse, the bridge as a process and the Graph emulator, which the unmodified
msgraph-sdk reads. One Matrix user is logged in as Megan Bowen (as in test_teams_durable.py);
each test has a fresh chat of Megan, Alex and the relay account.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.test_teams import Teams, _body, ghost
from tests.e2e.test_teams_durable import _deliveries, _portal, megan

pytestmark = pytest.mark.e2e
__all__ = ["megan"]
SHOWN = ("m.room.message", "m.room.redaction", "m.reaction")


async def _room(megan: Teams, room_id: str) -> list[dict[str, Any]]:
    """What the homeserver has of the room, oldest first: messages, edits, redactions and
    reactions (not as sync saw them)."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/messages"
    page = await megan.user.request("GET", path, params={"dir": "b", "limit": "300"})
    return [e for e in reversed(page["chunk"]) if e["type"] in SHOWN]


def _shown(events: list[dict[str, Any]], texts: dict[str, str]) -> list[str]:
    """The events as a person reads them; ``texts`` names messages by event id."""
    shown = []
    for event in events:
        content = event.get("content") or {}
        relates = content.get("m.relates_to") or {}
        if event["type"] == "m.room.redaction":
            shown.append(f"deleted {texts.get(str(event.get('redacts')), '?')}")
        elif event["type"] == "m.reaction":
            shown.append(f"{relates.get('key')} on {texts.get(relates.get('event_id'), '?')}")
        elif relates.get("rel_type") == "m.replace":
            new = content.get("m.new_content") or {}
            shown.append(f"edit {texts.get(relates.get('event_id'), '?')}: {new.get('body')}")
        elif "body" in content:
            shown.append(_body(event))
    return shown


async def _three(hub: Hub, megan: Teams, chat: str, room_id: str) -> tuple[dict[str, str], ...]:
    """Alex writes one, two, three; returns (Teams id by text, text by Matrix event id)."""
    teams = {
        t: await hub.graph.post_as("alex", chat, f"<p>{t}</p>") for t in ("one", "two", "three")
    }
    texts: dict[str, str] = {}
    for text in teams:
        event = await megan.user.wait_for(
            lambda e, t=text: _body(e) == t, room_id=room_id, timeout=45
        )
        texts[event["event_id"]] = text
    return teams, texts


async def _changes_while_not_told(hub: Hub, chat: str, teams: dict[str, str]) -> None:
    """A new message, an edit, a deletion and a reaction, a moment apart, in that order."""
    await hub.graph.post_as("alex", chat, "<p>written meanwhile</p>")
    await hub.graph.edit_as("alex", chat, teams["one"], "<p>one, edited</p>")
    await hub.graph.act_as("alex", chat, teams["two"], "softDelete")
    await hub.graph.act_as("alex", chat, teams["three"], "setReaction", reactionType="👍")


EXPECTED = ["written meanwhile", "edit one: one, edited", "deleted two", "👍 on three"]


async def _arrived_once_in_order(
    hub: Hub, megan: Teams, room_id: str, texts: dict[str, str], after: int,
    expected: list[str] = EXPECTED,
) -> None:  # fmt: skip
    """Everything after the ``after`` first events is ``expected`` (sentinels aside), each
    written by Alex's ghost."""
    shown: list[str] = []

    async def arrived() -> bool:
        events = await _room(megan, room_id)
        shown[:] = [s for s in _shown(events[after:], texts) if not s.startswith("sentinel")]
        return len(shown) >= len(expected)

    deadline = time.monotonic() + 45
    while not await arrived() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert shown == expected, f"{shown}\n{hub.bridge.tail()}"
    alex = ghost(hub, "alex")
    later = (await _room(megan, room_id))[after:]
    assert all(e["sender"] == alex for e in later), [e["sender"] for e in later]


async def _sentinel(hub: Hub, megan: Teams, chat: str, room_id: str, text: str) -> None:
    """A message written now arrives: what the catch-up queued before it is on Matrix."""
    await hub.graph.post_as("alex", chat, f"<p>{text}</p>")
    await megan.user.wait_for(lambda e: _body(e) == text, room_id=room_id, timeout=45)


async def test_changes_made_while_the_hub_is_down_arrive_once_in_order(
    hub: Hub, megan: Teams
) -> None:
    chat, room_id = await _portal(hub, megan)
    teams, texts = await _three(hub, megan, chat, room_id)
    before = len(await _room(megan, room_id))
    hub.bridge.stop()
    try:
        await _changes_while_not_told(hub, chat, teams)
        # Graph retries, then gives up on the webhook.
        await eventually(
            lambda: all(d.state != "pending" for d in _deliveries(hub, chat)), "Graph to give up"
        )
    finally:
        await hub.bridge.start(hub.as_port)
    await _arrived_once_in_order(hub, megan, room_id, texts, before)
    # Started again with nothing new: nothing is replayed twice.
    hub.bridge.stop()
    await hub.bridge.start(hub.as_port)
    await _sentinel(hub, megan, chat, room_id, "sentinel after the second start")
    await _arrived_once_in_order(hub, megan, room_id, texts, before)


async def test_changes_a_removed_subscription_missed_arrive_once_it_is_created_again(
    hub: Hub, megan: Teams
) -> None:
    chat, room_id = await _portal(hub, megan)
    teams, texts = await _three(hub, megan, chat, room_id)
    before = len(await _room(megan, room_id))
    accounts = {hub.graph.user(n)["id"].lower() for n in ("megan", "pontis")}
    subs = [
        s
        for s in hub.graph.services.state.live_subscriptions()
        if any(a in s.resource.lower() for a in accounts)
    ]
    assert len(subs) == 2, [s.resource for s in subs]
    for sub in subs:
        sub.paused = True  # Graph lost what follows: held, then thrown away
    await _changes_while_not_told(hub, chat, teams)
    for sub in subs:
        sub.held.clear()
        sub.paused = False
    # Graph removed Megan's subscription: the bridge creates it again, then catches up.
    megans = next(s for s in subs if hub.graph.user("megan")["id"].lower() in s.resource.lower())
    await hub.graph.control("POST", f"/subscriptions/{megans.id}/lifecycle",
                            {"event": "subscriptionRemoved"})  # fmt: skip
    await _arrived_once_in_order(hub, megan, room_id, texts, before)
    await _sentinel(hub, megan, chat, room_id, "sentinel after the new subscription")
    await _arrived_once_in_order(hub, megan, room_id, texts, before)
