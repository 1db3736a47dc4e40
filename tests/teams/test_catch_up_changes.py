"""Catch-up of what changed while the bridge was not told: edits, deletions and reactions.

Against the Graph emulator and a real store (SQLite, PostgreSQL), with the core's real remote
inbox; the homeserver is played by :class:`Room`, which applies each Remote* event as the
core's portal manager does (a redaction removes the mapping, a reaction set is diffed with the
stored reactions) and writes down what a person in the room would see.
"""

from __future__ import annotations

import asyncio

import aiohttp

from bridge.core.events import (
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteReactionSync,
    RemoteRedaction,
)
from bridge.portal.models import FIRST_PART, Message, Reaction
from bridge.portal.store import NetworkStore, Store
from bridge.teams.ids import NETWORK
from bridge.teams.relay_reactions import relay_post_key
from tests.e2e.graph import GraphEmulator
from tests.teams.test_catch_up import ROOM, Bridge, Matrix, _bridged_chat, graph

__all__ = ["graph"]


class Room(Matrix):
    """What the room shows: ``text`` for a message, ``edit: text``, ``deleted: text``,
    ``name reacted emoji to text``, ``name unreacted emoji to text``."""

    def __init__(self, store: Store, names: dict[str, str], texts: dict[str, str]) -> None:
        super().__init__(store)
        self._names = names
        self._texts = texts
        """Each message's text as the room shows it (kept from one run to the next)."""

    async def handle(self, event: RemoteEvent, client: object) -> None:
        key = event.portal
        match event:
            case RemoteMessage():
                if await self._store.get_message(key, event.id) is not None:
                    return
                self._texts[event.id] = event.parts[0].text
                self.sent.append(event.parts[0].text)
                await self._store.add_message(
                    Message(
                        network=NETWORK, portal_id=key.remote_id, remote_id=event.id,
                        mxid=f"${event.id}", room_id=ROOM, sender_id=event.sender or "",
                    )
                )  # fmt: skip
            case RemoteEdit():
                self._texts[event.target] = event.parts[0].text
                self.sent.append(f"edit: {event.parts[0].text}")
            case RemoteRedaction():
                if await self._store.get_message_parts(key, event.target):
                    self.sent.append(f"deleted: {self._texts.get(event.target)}")
                    await self._store.delete_message_parts(key, event.target)
            case RemoteReactionSync():
                who, text = self._names.get(event.sender or "", "?"), self._texts[event.target]
                have = await self._store.list_reactions(key, event.target, event.sender)
                for reaction in have:
                    if reaction.emoji not in event.emojis:
                        self.sent.append(f"{who} unreacted {reaction.emoji} to {text}")
                        await self._store.delete_reaction(reaction.mxid)
                for emoji in sorted(event.emojis - {r.emoji for r in have}):
                    self.sent.append(f"{who} reacted {emoji} to {text}")
                    await self._store.add_reaction(
                        Reaction(
                            network=NETWORK, portal_id=key.remote_id, message_id=event.target,
                            part_id=FIRST_PART, sender_id=event.sender or "", emoji=emoji,
                            mxid=f"${event.target}/{event.sender}/{emoji}", room_id=ROOM,
                        )
                    )  # fmt: skip
            case _:
                raise AssertionError(event)


def _bridge(store: Store, graph: GraphEmulator, http: aiohttp.ClientSession) -> Bridge:
    names = {graph.user(n)["id"]: n for n in ("Alex", "Adele")}
    # The texts outlive a run as the room's history does: kept with the emulator.
    texts = graph.seeded.setdefault("room texts (test)", {})
    return Bridge(store, graph, http, catch_up_messages=200, matrix=Room(store, names, texts))


async def _run(store: Store, graph: GraphEmulator, http: aiohttp.ClientSession) -> list[str]:
    """One run of the bridge from its start until what it queued is on Matrix."""
    bridge = _bridge(store, graph, http)
    await bridge.start()
    return await bridge.settle()


async def _tick() -> None:
    """Graph's times are milliseconds: changes a moment apart are in a known order."""
    await asyncio.sleep(0.01)


async def test_an_edit_a_deletion_and_reactions_made_while_down_arrive_once_in_order(
    store: Store, graph: GraphEmulator
) -> None:
    chat = await _bridged_chat(store, graph)
    old = {t: await graph.post_as("Alex", chat, t) for t in ("one", "two", "three")}
    async with aiohttp.ClientSession() as http:
        assert await _run(store, graph, http) == ["one", "two", "three"]
        # Down: Graph gave up on every notification of what follows.
        await graph.edit_as("Alex", chat, old["one"], "one, edited")
        await _tick()
        await graph.act_as("Alex", chat, old["two"], "softDelete")
        await _tick()
        new = await graph.post_as("Alex", chat, "written while down")
        await _tick()
        await graph.act_as("Adele", chat, old["three"], "setReaction", reactionType="👍")
        await _tick()
        await graph.act_as("Adele", chat, new, "setReaction", reactionType="❤️")
        assert await _run(store, graph, http) == [
            "edit: one, edited",
            "deleted: two",
            "written while down",
            "Adele reacted 👍 to three",
            "Adele reacted ❤️ to written while down",
        ]
        # Down again: a reaction taken back; the next start replays only that.
        await graph.act_as("Adele", chat, old["three"], "unsetReaction", reactionType="👍")
        assert await _run(store, graph, http) == ["Adele unreacted 👍 to three"]
        # Nothing changed: nothing is replayed, however often the bridge starts.
        assert await _run(store, graph, http) == []


async def test_more_changes_than_a_page_are_all_replayed_in_the_order_they_were_made(
    store: Store, graph: GraphEmulator
) -> None:
    chat = await _bridged_chat(store, graph)
    ids = [await graph.post_as("Alex", chat, f"m{n}") for n in range(70)]
    async with aiohttp.ClientSession() as http:
        assert len(await _run(store, graph, http)) == 70
        for n in reversed(range(70)):  # the oldest message is edited last
            await graph.edit_as("Alex", chat, ids[n], f"m{n} edited")
            await asyncio.sleep(0.002)
        replayed = await _run(store, graph, http)
    assert replayed == [f"edit: m{n} edited" for n in reversed(range(70))]
    changed = [
        r
        for r in graph.requests(f"/v1.0/chats/{chat}/messages", "GET")
        if "lastModifiedDateTime" in r["query"].get("$filter", "")
    ]
    assert changed and all(int(r["query"].get("$top", 50)) <= 50 for r in changed)


async def test_a_message_edited_before_the_catch_up_bridged_it_is_not_edited_again(
    store: Store, graph: GraphEmulator
) -> None:
    chat = await _bridged_chat(store, graph)
    async with aiohttp.ClientSession() as http:
        assert await _run(store, graph, http) == []
        new = await graph.post_as("Alex", chat, "draft")
        await graph.edit_as("Alex", chat, new, "final")
        assert await _run(store, graph, http) == ["final"]
        assert await _run(store, graph, http) == []


async def test_a_subscription_created_again_replays_the_changes_it_did_not_report(
    store: Store, graph: GraphEmulator
) -> None:
    chat = await _bridged_chat(store, graph)
    kept = await graph.post_as("Alex", chat, "kept")
    async with aiohttp.ClientSession() as http:
        bridge = _bridge(store, graph, http)
        await bridge.start()
        # "kept" is on Matrix; the start's catch-up row is delivered but still in the inbox for
        # a moment: the new catch-up must not be taken for it (it has read Graph already).
        await bridge.queues.drain()
        await bridge.inbound.subscription_state(graph.tenant_id, True)
        await bridge.inbound.coverage.write()
        # The subscription was gone: these changes were reported to nobody.
        await graph.edit_as("Alex", chat, kept, "kept, edited")
        await graph.act_as("Adele", chat, kept, "setReaction", reactionType="🎉")
        await bridge.inbound.missed("a subscription of tenant x was created again")
        assert await bridge.settle() == [
            "kept",
            "edit: kept, edited",
            "Adele reacted 🎉 to kept, edited",
        ]


async def test_a_message_matrix_never_had_is_not_made_up_by_a_change_to_it(
    store: Store, graph: GraphEmulator
) -> None:
    """Hostile order: history older than the bridge, reacted to and deleted while it is down,
    and the bridge's own posts: none of them appears."""
    chat = await graph.new_chat("History", "Alex", "Adele")
    ancient = await graph.post_as("Alex", chat, "before the bridge")
    await _tick()
    from bridge.core.ids import RemoteChatID, RemoteMessageID
    from bridge.portal.models import Portal

    await store.save_portal(Portal(NETWORK, RemoteChatID(chat), mxid=ROOM))
    first = await graph.post_as("Alex", chat, "first bridged")
    await store.add_message(
        Message(
            network=NETWORK, portal_id=RemoteChatID(chat), remote_id=RemoteMessageID(first),
            mxid="$first", room_id=ROOM, sender_id=graph.user("Alex")["id"],
        )
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        assert await _run(store, graph, http) == []
        await graph.act_as("Adele", chat, ancient, "setReaction", reactionType="👍")
        await graph.act_as("Alex", chat, ancient, "softDelete")
        assert await _run(store, graph, http) == []


async def test_a_reaction_the_relay_posted_is_not_caught_up_as_a_message(
    store: Store, graph: GraphEmulator
) -> None:
    """The relay's post that showed a Matrix user's reaction, written while the bridge was
    going down (its notification never converted): after the restart it is no Teams message."""
    chat = await _bridged_chat(store, graph)
    async with aiohttp.ClientSession() as http:
        assert await _run(store, graph, http) == []
        shown = await graph.post_as("Pontis", chat, "<p>reacted 👍</p>")
        await NetworkStore(store, NETWORK).kv_set(relay_post_key(chat, shown), "$reaction")
        await graph.post_as("Alex", chat, "after it")
        assert await _run(store, graph, http) == ["after it"]
