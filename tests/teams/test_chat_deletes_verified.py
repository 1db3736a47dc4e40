"""A chat message is redacted on Matrix only when Graph agrees it is deleted: a ``deleted``
notification is only the notification's word (replayed, reordered, or overtaken by an
undelete). Against the Graph emulator, a real store and the core's remote inbox
(:class:`tests.teams.test_catch_up.Bridge`); only the homeserver is played by :class:`Room`."""

from __future__ import annotations

import aiohttp

from bridge.core.events import RemoteEvent, RemoteRedaction
from bridge.core.ids import RemoteChatID, RemoteMessageID
from bridge.portal.models import Message, Portal
from bridge.portal.store import Store
from bridge.teams.ids import NETWORK, portal_key
from tests.e2e.graph import GraphEmulator
from tests.teams.test_catch_up import ROOM, Bridge, Matrix
from tests.teams.test_catch_up import graph as graph


class Room(Matrix):
    """The portal room: messages as :class:`Matrix` sends them, and the redactions."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.redacted: list[str] = []

    async def handle(self, event: RemoteEvent, client: object) -> None:
        if isinstance(event, RemoteRedaction):
            self.redacted.append(event.target)
            return
        await super().handle(event, client)


async def _bridged_message(store: Store, emu: GraphEmulator) -> tuple[str, str]:
    """A bridged chat and one of Alex's messages that is on Matrix."""
    chat_id = await emu.new_chat("Deletes", "Alex", "Adele")
    await store.save_portal(Portal(NETWORK, RemoteChatID(chat_id), mxid=ROOM))
    msg_id = await emu.post_as("Alex", chat_id, "still here")
    await store.add_message(
        Message(
            network=NETWORK, portal_id=RemoteChatID(chat_id), remote_id=RemoteMessageID(msg_id),
            mxid="$still-here", room_id=ROOM, sender_id=emu.user("Alex")["id"],
        )
    )  # fmt: skip
    return chat_id, msg_id


async def _deleted_notification(bridge: Bridge, emu: GraphEmulator, chat: str, msg: str) -> None:
    """What the webhook hands over after checking clientState (a replay has the right one)."""
    await bridge.inbound.accept(
        [
            {
                "subscriptionId": "sub",
                "changeType": "deleted",
                "tenantId": emu.tenant_id,
                "resource": f"chats('{chat}')/messages('{msg}')",
                "resourceData": {"id": msg},
            }
        ]
    )


async def _graph_away(emu: GraphEmulator, chat: str, msg: str) -> None:
    """The next read of the message (all four tries the SDK makes) answers 503."""
    path = f"/v1.0/chats/{chat}/messages/{msg}"
    fault = {"path": path, "method": "GET", "status": 503, "count": 4, "retryAfter": 1}
    await emu.control("POST", "/faults", fault)


def _reads(emu: GraphEmulator, chat: str, msg: str) -> list[int]:
    return [r["status"] for r in emu.requests(f"/v1.0/chats/{chat}/messages/{msg}", "GET")]


async def test_a_replayed_deleted_notification_of_a_message_still_there_redacts_nothing(
    store: Store,
    graph: GraphEmulator,
) -> None:
    chat, msg = await _bridged_message(store, graph)
    room = Room(store)
    async with aiohttp.ClientSession() as http:
        bridge = Bridge(store, graph, http, catch_up_messages=20, matrix=room)
        await _deleted_notification(bridge, graph, chat, msg)
        await bridge.settle()
    assert room.redacted == [] and room.sent == []
    assert _reads(graph, chat, msg) == [200], "Graph was not asked before deciding"
    assert await store.remote_inbox.pending() == []
    assert await store.get_message(portal_key(chat), RemoteMessageID(msg)) is not None


async def test_a_message_really_deleted_is_redacted_once(
    store: Store,
    graph: GraphEmulator,
) -> None:
    chat, msg = await _bridged_message(store, graph)
    await graph.act_as("Alex", chat, msg, "softDelete")
    room = Room(store)
    async with aiohttp.ClientSession() as http:
        bridge = Bridge(store, graph, http, catch_up_messages=20, matrix=room)
        await _deleted_notification(bridge, graph, chat, msg)
        await bridge.settle()
    assert room.redacted == [msg]


async def test_graph_away_during_the_check_keeps_the_notification_until_it_answers(
    store: Store,
    graph: GraphEmulator,
) -> None:
    """Hostile: the check cannot be made (503). The notification is neither dropped nor
    believed: it waits in the inbox, and what Graph then says decides."""
    chat, msg = await _bridged_message(store, graph)
    deleted_id = await graph.post_as("Alex", chat, "deleted while Graph was away")
    await store.add_message(
        Message(
            network=NETWORK, portal_id=RemoteChatID(chat), remote_id=RemoteMessageID(deleted_id),
            mxid="$deleted", room_id=ROOM, sender_id=graph.user("Alex")["id"],
        )
    )  # fmt: skip
    await graph.act_as("Alex", chat, deleted_id, "softDelete")
    await _graph_away(graph, chat, msg)
    await _graph_away(graph, chat, deleted_id)
    room = Room(store)
    async with aiohttp.ClientSession() as http:
        bridge = Bridge(store, graph, http, catch_up_messages=20, matrix=room)
        await _deleted_notification(bridge, graph, chat, msg)
        await _deleted_notification(bridge, graph, chat, deleted_id)
        await bridge.settle()
    assert _reads(graph, chat, msg) == [503, 503, 503, 503, 200]
    assert _reads(graph, chat, deleted_id) == [503, 503, 503, 503, 200]
    assert room.redacted == [deleted_id]
    assert await store.remote_inbox.pending() == []
