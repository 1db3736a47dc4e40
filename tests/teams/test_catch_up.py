"""Catch-up after an outage, against the Graph emulator and a real store (SQLite, PostgreSQL).

While the bridge is down Graph gives up on its change notifications, so whatever was written
meanwhile reaches Matrix only through the catch-up. What a user checks: every message missed
arrives once, in the order it was written, also when the bridge died with notifications
stored but not yet bridged; and a catch-up after a very long outage does not flood the room
but says how many it skipped.

The core's remote inbox is the real one (stored rows, per-portal queue, recovery after a
restart); only the homeserver is played by :class:`Matrix`, which dedupes by the message table
as the core's portal manager does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from bridge.core.clients import ClientRegistry
from bridge.core.events import RemoteEvent, RemoteMessage
from bridge.core.ids import RemoteChatID, RemoteMessageID
from bridge.core.metrics import Metrics
from bridge.core.queue import OrderedQueues
from bridge.core.remote_inbox import RemoteInbox
from bridge.core.retry import RetryPolicy
from bridge.portal.models import FIRST_PART, Message, Portal, RemoteInput
from bridge.portal.store import NetworkStore, Store
from bridge.teams.client import TeamsSharedClient
from bridge.teams.config import TeamsConfig
from bridge.teams.ids import NETWORK
from bridge.teams.inbound import Inbound
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink
from tests.e2e.graph import GraphEmulator

LOG = logging.getLogger("test.teams.catch_up")
ROOM = "!chat:hub"


@pytest.fixture
async def graph() -> AsyncIterator[GraphEmulator]:
    emulator = GraphEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


class Matrix:
    """``PortalManager.handle`` as the remote inbox sees it: a message already in the message
    table is not sent again; what is sent is stored there, as the core does."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.sent: list[str] = []

    async def handle(self, event: RemoteEvent, client: object) -> None:
        assert isinstance(event, RemoteMessage), event
        if await self._store.get_message(event.portal, event.id) is not None:
            return
        part = event.parts[0]
        self.sent.append(f"notice: {part.text}" if part.notice else part.text)
        await self._store.add_message(
            Message(
                network=NETWORK, portal_id=event.portal.remote_id, remote_id=event.id,
                part_id=FIRST_PART, mxid=f"${len(self.sent)}", room_id=ROOM,
                sender_id=event.sender or "", timestamp=event.timestamp or 0,
            )
        )  # fmt: skip


@dataclass
class Context:
    """What the Teams connector uses of ``ConnectorContext`` here."""

    core_store: Store
    store: NetworkStore
    http: aiohttp.ClientSession
    inbox: RemoteInbox | None = None
    stored_only: list[RemoteInput] = field(default_factory=list)
    log: logging.Logger = LOG

    async def accept_remote(self, item: RemoteInput) -> bool:
        if self.inbox is not None:
            return await self.inbox.accept(item)
        # The bridge dies right after storing: the row waits for the next start.
        row = await self.core_store.remote_inbox.add(item)
        return row is not None

    def background(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        coro.close()


class Bridge:
    """One run of the Teams connector over ``store``: ``alive`` runs the core's remote inbox,
    otherwise what is accepted is only stored (the process is killed before converting)."""

    def __init__(
        self, store: Store, graph: GraphEmulator, http: aiohttp.ClientSession, *,
        catch_up_messages: int, alive: bool = True, matrix: Matrix | None = None,
    ) -> None:  # fmt: skip
        section = graph.teams_section("http://127.0.0.1:9")
        section["catch_up_messages"] = catch_up_messages
        cfg = TeamsConfig.from_section(section)
        self.ctx = Context(store, NetworkStore(store, NETWORK), http)
        link = TenantLink(cfg, cfg.tenants[0], http, self.ctx.store, LOG)
        net = TeamsNetwork(self.ctx, cfg, [link])  # type: ignore[arg-type]
        self.shared = TeamsSharedClient(net)
        self.inbound = Inbound(net, self.shared)
        self.shared.converter = self.inbound.convert
        self.inbound.ready.set()
        self.matrix = matrix or Matrix(store)
        self.queues = OrderedQueues(maxsize=1000, log=LOG)
        if alive:
            clients = ClientRegistry({}, Metrics(), LOG)
            clients.add(NETWORK, self.shared)
            self.ctx.inbox = RemoteInbox(
                store=store.remote_inbox, queues=self.queues, portals=self.matrix,  # type: ignore[arg-type]
                clients=clients, retry=RetryPolicy(attempts=2, backoff=0, max_backoff=0.1),
                metrics=Metrics(), notice=self._notice, log=LOG,
            )  # fmt: skip
            self.ctx.inbox.started = True

    async def _notice(self, key: object, err: Exception) -> None:
        raise AssertionError(f"dead letter: {err}")

    async def start(self) -> None:
        """As the hub starts: the previous run's rows first, then the connector's catch-up."""
        assert self.ctx.inbox is not None
        await self.ctx.inbox.recover()
        await self.inbound.catch_up()

    async def notified(self, chat_id: str, graph: GraphEmulator, *msg_ids: str) -> None:
        """The webhook got Graph's ``created`` notifications of ``msg_ids`` (and said 202)."""
        await self.inbound.accept(
            [
                {
                    "subscriptionId": "sub",
                    "changeType": "created",
                    "tenantId": graph.tenant_id,
                    "resource": f"chats('{chat_id}')/messages('{msg_id}')",
                    "resourceData": {"id": msg_id},
                }
                for msg_id in msg_ids
            ]
        )

    async def settle(self) -> list[str]:
        """Everything queued is on Matrix; the run stops (as the hub does)."""
        await self.queues.drain()
        await self.queues.close()
        if self.ctx.inbox is not None:
            await self.ctx.inbox.close()
        return self.matrix.sent


async def _bridged_chat(store: Store, graph: GraphEmulator) -> str:
    """A chat with one message that reached Matrix before the outage."""
    chat_id = await graph.new_chat("Outage", "Alex", "Adele")
    await store.save_portal(Portal(NETWORK, RemoteChatID(chat_id), mxid=ROOM))
    first = await graph.post_as("Alex", chat_id, "before")
    await store.add_message(
        Message(
            network=NETWORK, portal_id=RemoteChatID(chat_id), remote_id=RemoteMessageID(first),
            mxid="$before", room_id=ROOM, sender_id=graph.user("Alex")["id"],
        )
    )  # fmt: skip
    return chat_id


async def _post(graph: GraphEmulator, chat_id: str, prefix: str, count: int) -> list[str]:
    return [await graph.post_as("Alex", chat_id, f"{prefix}{n}") for n in range(1, count + 1)]


async def test_more_messages_than_a_page_missed_while_down_all_arrive_once_in_order(
    store: Store, graph: GraphEmulator
) -> None:
    chat_id = await _bridged_chat(store, graph)
    await _post(graph, chat_id, "missed ", 75)  # Graph gave up on their notifications
    async with aiohttp.ClientSession() as http:
        bridge = Bridge(store, graph, http, catch_up_messages=200)
        await bridge.start()
        sent = await bridge.settle()
        assert sent == [f"missed {n}" for n in range(1, 76)]
        # Another restart finds nothing new.
        again = Bridge(store, graph, http, catch_up_messages=200)
        await again.start()
        assert await again.settle() == []
    # It paged back with Graph's nextLink instead of asking for everything at once.
    lists = graph.requests(f"/v1.0/chats/{chat_id}/messages", "GET")
    assert lists and all(int(r["query"].get("$top", 50)) <= 50 for r in lists)


async def test_a_catch_up_after_a_long_outage_is_bounded_and_says_what_it_skipped(
    store: Store, graph: GraphEmulator
) -> None:
    chat_id = await _bridged_chat(store, graph)
    await _post(graph, chat_id, "missed ", 130)
    async with aiohttp.ClientSession() as http:
        bridge = Bridge(store, graph, http, catch_up_messages=30)
        await bridge.start()
        sent = await bridge.settle()
    assert len(sent) == 31
    assert sent[0].startswith("notice: ") and "100" in sent[0], sent[0]
    assert sent[1:] == [f"missed {n}" for n in range(101, 131)]


async def test_notifications_stored_before_a_kill_keep_their_place_after_the_restart(
    store: Store, graph: GraphEmulator
) -> None:
    """The run before the kill queued its catch-up, then stored five notifications, and died
    before converting any; then more than a page of Graph was written while down."""
    chat_id = await _bridged_chat(store, graph)
    async with aiohttp.ClientSession() as http:
        killed = Bridge(store, graph, http, catch_up_messages=200, alive=False)
        await killed.inbound.catch_up()
        stored = await _post(graph, chat_id, "stored ", 5)
        await killed.notified(chat_id, graph, *stored)
        await _post(graph, chat_id, "while down ", 60)
        restarted = Bridge(store, graph, http, catch_up_messages=200)
        await restarted.start()
        late = await _post(graph, chat_id, "after ", 3)
        await restarted.notified(chat_id, graph, *late)
        sent = await restarted.settle()
    assert sent == (
        [f"stored {n}" for n in range(1, 6)]
        + [f"while down {n}" for n in range(1, 61)]
        + [f"after {n}" for n in range(1, 4)]
    )
    assert await store.remote_inbox.pending() == []


async def test_stored_notifications_older_than_a_bounded_catch_up_do_not_arrive_after_it(
    store: Store, graph: GraphEmulator
) -> None:
    """The catch-up skipped them (and said so): they must not appear below newer messages."""
    chat_id = await _bridged_chat(store, graph)
    async with aiohttp.ClientSession() as http:
        killed = Bridge(store, graph, http, catch_up_messages=10, alive=False)
        await killed.inbound.catch_up()
        stored = await _post(graph, chat_id, "stored ", 5)
        await killed.notified(chat_id, graph, *stored)
        await _post(graph, chat_id, "while down ", 20)
        restarted = Bridge(store, graph, http, catch_up_messages=10)
        await restarted.start()
        sent = await restarted.settle()
    assert sent[0].startswith("notice: ") and "15" in sent[0], sent[0]
    assert sent[1:] == [f"while down {n}" for n in range(11, 21)]


async def test_a_message_sent_from_matrix_after_a_restart_does_not_hide_what_was_missed(
    store: Store, graph: GraphEmulator
) -> None:
    """The chaos benchmark's loss: the catch-up stopped at the newest message Matrix had, and
    a Matrix user's message, bridged to Teams while the catch-up waited its turn, is one."""
    chat_id = await _bridged_chat(store, graph)
    async with aiohttp.ClientSession() as http:
        first = Bridge(store, graph, http, catch_up_messages=200)
        await first.start()
        assert await first.settle() == []
        await first.inbound.coverage.write()
        await _post(graph, chat_id, "missed ", 5)  # Graph gave up on their notifications
        restarted = Bridge(store, graph, http, catch_up_messages=200)
        from_matrix = await graph.post_as("Adele", chat_id, "sent from Matrix")
        await store.add_message(
            Message(
                network=NETWORK, portal_id=RemoteChatID(chat_id),
                remote_id=RemoteMessageID(from_matrix), mxid="$m", room_id=ROOM,
                sender_id="@adele:hub",
            )
        )  # fmt: skip
        await restarted.start()
        sent = await restarted.settle()
    assert sent == [f"missed {n}" for n in range(1, 6)]
