"""Channel catch-up that loses nothing, and Matrix edits, deletions and reactions in channels.

What happened in a bridged team channel while the hub was not told (it was stopped, or the
channel's subscription was gone and had to be made again) reaches Matrix after, once and in
the order it happened: a new thread, a reply in an old thread, an edit, a deletion and a
reaction. And a logged-in Matrix user's edit, redaction and reaction in a channel thread reach
Teams as that user's own.

Against the real Synapse, the bridge as a process and the Graph emulator (its answers checked
against Microsoft's OpenAPI description by test_teams_channels' fixture). Adele (Matrix) is
logged in to Teams as Adele Vance; Alex writes in Teams.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.test_teams import Teams, _body, ghost
from tests.e2e.test_teams_catch_up import _arrived_once_in_order as arrived_once_in_order
from tests.e2e.test_teams_catch_up import _room
from tests.e2e.test_teams_channels import (
    adele,
    bridged_channel,
    graph_answers_are_valid,
    post_in_channel,
    spec,
    until_teams_shows,
)

pytestmark = pytest.mark.e2e
__all__ = ["adele", "graph_answers_are_valid", "spec"]
EXPECTED = [
    "written meanwhile",
    "late reply",
    "edit two: two, edited",
    "deleted three",
    "👍 on one",
]


def _messages(team: str, channel: str) -> str:
    return f"/teams/{team}/channels/{channel}/messages"


async def _edit(hub: Hub, who: str, team: str, channel: str, msg: str, content: str) -> None:
    body = {"as": hub.graph.user(who)["id"], "content": content}
    await hub.graph.control("PATCH", f"{_messages(team, channel)}/{msg}", body)


async def _act(hub: Hub, who: str, team: str, channel: str, msg: str, action: str, **body: Any) -> None:  # fmt: skip
    path = f"{_messages(team, channel)}/{msg}/{action}"
    await hub.graph.control("POST", path, {"as": hub.graph.user(who)["id"], **body})


async def _three(hub: Hub, adele: Teams, team: str, channel: str, room_id: str) -> tuple[dict[str, str], dict[str, str]]:  # fmt: skip
    """Alex starts three threads; returns (Teams id by text, text by Matrix event id)."""
    teams: dict[str, str] = {}
    texts: dict[str, str] = {}
    for text in ("one", "two", "three"):
        teams[text] = await post_in_channel(hub, "alex", team, channel, f"<p>{text}</p>")
        event = await adele.user.wait_for(lambda e, t=text: _body(e) == t, room_id=room_id, timeout=45)  # fmt: skip
        texts[event["event_id"]] = text
    return teams, texts


async def _changes_while_not_told(hub: Hub, team: str, channel: str, teams: dict[str, str]) -> None:  # fmt: skip
    """A new thread, a reply in an old one, an edit, a deletion, a reaction, in that order, a
    moment apart (Graph's times are in milliseconds: two changes of the same one have no order)."""
    await post_in_channel(hub, "alex", team, channel, "<p>written meanwhile</p>")
    await asyncio.sleep(0.01)
    await post_in_channel(hub, "alex", team, channel, "<p>late reply</p>", replyToId=teams["one"])  # fmt: skip
    await asyncio.sleep(0.01)
    await _edit(hub, "alex", team, channel, teams["two"], "<p>two, edited</p>")
    await asyncio.sleep(0.01)
    await _act(hub, "alex", team, channel, teams["three"], "softDelete")
    await asyncio.sleep(0.01)
    await _act(hub, "alex", team, channel, teams["one"], "setReaction", reactionType="👍")


def _deliveries(hub: Hub, channel: str) -> list[Any]:
    """The emulator's change notifications of the channel's own subscription."""
    subscriptions = hub.graph.services.state.subscriptions.values()
    its = {s.id for s in subscriptions if channel in s.resource}
    return [
        d
        for d in hub.graph.services.notifier.deliveries
        if d.kind == "change" and d.subscription_id in its
    ]


async def _arrived_once_in_order(
    hub: Hub, adele: Teams, room_id: str, texts: dict[str, str], after: int
) -> None:
    await arrived_once_in_order(hub, adele, room_id, texts, after, EXPECTED)


async def _sentinel(hub: Hub, adele: Teams, team: str, channel: str, room_id: str, text: str) -> None:  # fmt: skip
    """A thread started now arrives: what the catch-up queued before it is on Matrix."""
    await post_in_channel(hub, "alex", team, channel, f"<p>{text}</p>")
    await adele.user.wait_for(lambda e: _body(e) == text, room_id=room_id, timeout=45)


async def test_channel_changes_made_while_the_hub_is_down_arrive_once_in_order(
    hub: Hub, adele: Teams
) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    teams, texts = await _three(hub, adele, team, channel, room_id)
    before = len(await _room(adele, room_id))
    hub.bridge.stop()
    try:
        await _changes_while_not_told(hub, team, channel, teams)
        await eventually(
            lambda: all(d.state != "pending" for d in _deliveries(hub, channel)),
            "Graph to give up",
        )
    finally:
        await hub.bridge.start(hub.as_port)
    await _arrived_once_in_order(hub, adele, room_id, texts, before)
    # Started again with nothing new: nothing is replayed twice.
    hub.bridge.stop()
    await hub.bridge.start(hub.as_port)
    await _sentinel(hub, adele, team, channel, room_id, "sentinel after the second start")
    await _arrived_once_in_order(hub, adele, room_id, texts, before)


async def test_channel_changes_a_removed_subscription_missed_arrive_once_it_is_made_again(
    hub: Hub, adele: Teams
) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    teams, texts = await _three(hub, adele, team, channel, room_id)
    before = len(await _room(adele, room_id))
    subs = [s for s in hub.graph.services.state.live_subscriptions() if channel in s.resource]
    assert len(subs) == 1, [s.resource for s in subs]
    subs[0].paused = True  # Graph lost what follows: held, then thrown away
    await _changes_while_not_told(hub, team, channel, teams)
    subs[0].held.clear()
    subs[0].paused = False
    await hub.graph.control("POST", f"/subscriptions/{subs[0].id}/lifecycle",
                            {"event": "subscriptionRemoved"})  # fmt: skip
    await _arrived_once_in_order(hub, adele, room_id, texts, before)
    await _sentinel(hub, adele, team, channel, room_id, "sentinel after the new subscription")
    await _arrived_once_in_order(hub, adele, room_id, texts, before)


def _reactions(message: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r["user"]["user"]["id"], r["reactionType"]) for r in message.get("reactions") or []}


async def test_matrix_edits_redactions_and_reactions_in_a_channel_thread_reach_teams(
    hub: Hub, adele: Teams
) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    adele_id = hub.graph.user("adele")["id"]
    root = await post_in_channel(hub, "alex", team, channel, "<p>Plan</p>")
    root_event = await adele.user.wait_for(lambda e: _body(e) == "Plan", room_id=room_id, timeout=45)  # fmt: skip
    await post_in_channel(hub, "alex", team, channel, "<p>Alex step</p>", replyToId=root)
    alex_reply = await adele.user.wait_for(lambda e: _body(e) == "Alex step", room_id=room_id, timeout=45)  # fmt: skip
    mine = await adele.user.send_text(room_id, "Adele step", thread_root=root_event["event_id"])
    replies = f"{_messages(team, channel)}/{root}/replies"
    sent = await until_teams_shows(hub, replies, lambda m: "Adele step" in m["body"]["content"], "the reply")  # fmt: skip

    # An edit of her reply in the thread: the reply itself changes in Teams.
    await adele.user.edit(room_id, mine, "Adele step, corrected")
    await until_teams_shows(
        hub, replies,
        lambda m: m["id"] == sent["id"] and "corrected" in m["body"]["content"] and m["lastEditedDateTime"],
        "the edit",
    )  # fmt: skip
    # Reactions on the root and on Alex's reply are hers in Teams; taking one back removes it.
    await adele.user.react(room_id, root_event["event_id"], "👍")
    party = await adele.user.react(room_id, alex_reply["event_id"], "🎉")
    await until_teams_shows(hub, _messages(team, channel), lambda m: m["id"] == root and (adele_id, "👍") in _reactions(m), "the reaction on the root")  # fmt: skip
    await until_teams_shows(hub, replies, lambda m: (adele_id, "🎉") in _reactions(m), "the reaction on the reply")  # fmt: skip
    await adele.user.redact(room_id, party)
    await until_teams_shows(hub, replies, lambda m: "Alex step" in m["body"]["content"] and not _reactions(m), "the reaction removed")  # fmt: skip
    # A redaction of her reply deletes it in Teams (soft delete).
    await adele.user.redact(room_id, mine)
    await until_teams_shows(hub, replies, lambda m: m["id"] == sent["id"] and m["deletedDateTime"], "the deletion")  # fmt: skip
    # Nothing of this comes back to Matrix as a ghost's doing.
    await asyncio.sleep(1)
    assert not adele.user.seen(lambda e: e["sender"] == ghost(hub, "adele"), room_id=room_id)
