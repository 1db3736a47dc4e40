"""The remote inbox: network input kept until Matrix has it, on SQLite and PostgreSQL.

A fake portal manager plays the homeserver; it can be away (TransientError) or refuse
(PermanentError). What is checked is what an operator and a user would see: every input arrives
once, in order, after any outage; a refusal is a dead letter naming its network and portal, and
a notice; nothing stays behind in the table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from bridge.core.clients import ClientRegistry
from bridge.core.errors import PermanentError, TransientError
from bridge.core.events import MessagePart, RemoteEvent, RemoteMessage
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID, RemoteMessageID
from bridge.core.metrics import Metrics
from bridge.core.queue import OrderedQueues
from bridge.core.remote_inbox import RemoteInbox
from bridge.core.retry import RetryPolicy
from bridge.portal.models import RemoteInput
from bridge.portal.store import Store

NET = NetworkID("reference")
CHAT = PortalKey(NET, RemoteChatID("chat-1"))
OTHER = PortalKey(NET, RemoteChatID("chat-2"))
LOG = logging.getLogger("test.remote_inbox")


class Client:
    login_id = LoginID("")

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def handle_matrix_message(self, msg: Any) -> Any: ...

    async def get_chat_info(self, portal: Any) -> Any: ...

    async def get_user_info(self, user: Any) -> Any: ...

    async def convert_remote(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        text = str(item.payload["text"])
        if text == "unreadable":
            raise PermanentError("cannot convert", user_message="It could not be read.")
        part = MessagePart(text=text)
        return [RemoteMessage(portal=item.portal, id=RemoteMessageID(text), parts=[part])]


class Homeserver:
    """``PortalManager.handle`` as far as the remote inbox sees it."""

    def __init__(self) -> None:
        self.away = 0  # fail this many more sends with TransientError
        self.refuse: set[str] = set()
        self.sent: list[tuple[PortalKey, str]] = []
        self.changed = asyncio.Event()

    async def handle(self, event: RemoteEvent, client: object) -> None:
        assert isinstance(event, RemoteMessage)
        if self.away > 0:
            self.away -= 1
            raise TransientError("homeserver unreachable")
        if event.id in self.refuse:
            raise PermanentError("M_FORBIDDEN", user_message="The room refused it.")
        self.sent.append((event.portal, str(event.id)))
        self.changed.set()


class Hub:
    def __init__(self, store: Store, *, started: bool = True, memory_rows: int = 256) -> None:
        self.store = store
        self.homeserver = Homeserver()
        self.notices: list[tuple[PortalKey, str]] = []
        self.queues = OrderedQueues(maxsize=100, log=LOG)
        clients = ClientRegistry({}, Metrics(), LOG)
        self.clients = clients
        self.inbox = RemoteInbox(
            store=store.remote_inbox, queues=self.queues, portals=self.homeserver,  # type: ignore[arg-type]
            clients=clients, retry=RetryPolicy(attempts=2, backoff=0, max_backoff=0.1),
            metrics=Metrics(), notice=self._notice, log=LOG, memory_rows=memory_rows,
        )  # fmt: skip
        self.inbox.started = started

    async def _notice(self, key: PortalKey, err: Exception) -> None:
        self.notices.append((key, str(err)))

    async def accept(self, text: str, key: PortalKey = CHAT) -> bool:
        return await self.inbox.accept(
            RemoteInput(portal=key, kind="message", payload={"text": text}, dedupe_id=text)
        )

    async def emptied(self) -> bool:
        """Whether the table empties by itself (delivered rows go a moment later)."""
        for _ in range(100):
            if not await self.store.remote_inbox.pending():
                return True
            await asyncio.sleep(0.05)
        return False


async def test_input_is_kept_until_matrix_has_it_then_removed(store: Store) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    assert await hub.accept("hello")
    await hub.queues.drain()
    assert hub.homeserver.sent == [(CHAT, "hello")]
    assert await hub.emptied() and not hub.notices


async def test_a_redelivery_while_pending_is_ignored(store: Store) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    hub.homeserver.away = 3
    assert await hub.accept("once")
    assert not await hub.accept("once")  # the network offered it again
    await hub.queues.drain()
    assert hub.homeserver.sent == [(CHAT, "once")]


async def test_an_outage_longer_than_any_budget_loses_nothing_and_keeps_order(
    store: Store,
) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    hub.homeserver.away = 12  # far more than RetryPolicy.attempts
    for text in ("one", "two", "three"):
        await hub.accept(text)
    await hub.accept("elsewhere", OTHER)
    await hub.queues.drain()
    mine = [text for key, text in hub.homeserver.sent if key == CHAT]
    assert mine == ["one", "two", "three"]
    assert (OTHER, "elsewhere") in hub.homeserver.sent
    assert not hub.notices, "an outage is not a failure to tell anyone about"
    assert await hub.emptied()
    assert await store.list_dead_letters() == []


async def test_a_refusal_is_a_dead_letter_with_a_notice_and_the_rest_goes_on(store: Store) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    hub.homeserver.refuse.add("refused")
    for text in ("before", "refused", "unreadable", "after"):
        await hub.accept(text)
    await hub.queues.drain()
    assert [text for _, text in hub.homeserver.sent] == ["before", "after"]
    assert [key for key, _ in hub.notices] == [CHAT, CHAT]
    letters = await store.database.fetch(
        "SELECT network, portal_id, kind, payload, error FROM dead_letter ORDER BY id"
    )
    assert [(r["network"], r["portal_id"]) for r in letters] == [(NET, "chat-1")] * 2
    assert "M_FORBIDDEN" in letters[0]["error"] and "cannot convert" in letters[1]["error"]
    assert '"refused"' in letters[0]["payload"]
    assert await hub.emptied()


async def test_after_a_crash_stored_input_goes_first_in_order(store: Store) -> None:
    crashed = Hub(store)  # stored, then the process died before anything was sent
    for text in ("old-1", "old-2"):
        await crashed.store.remote_inbox.add(
            RemoteInput(portal=CHAT, kind="message", payload={"text": text}, dedupe_id=text)
        )
    hub = Hub(store, started=False)
    assert await hub.inbox.recover() == 2
    hub.clients.add(NET, Client())  # type: ignore[arg-type]  # the connector starts after
    await hub.accept("new")
    hub.inbox.started = True
    await hub.queues.drain()
    assert [text for _, text in hub.homeserver.sent] == ["old-1", "old-2", "new"]
    assert await hub.emptied()


async def test_a_login_that_is_gone_after_start_is_a_dead_letter(store: Store) -> None:
    hub = Hub(store)  # no client for the network at all
    await hub.accept("orphan")
    await hub.queues.drain()
    assert hub.homeserver.sent == [] and len(hub.notices) == 1
    assert len(await store.list_dead_letters()) == 1


async def test_a_database_outage_after_delivery_is_waited_out(store: Store) -> None:
    """Delivered, then the database is away when the rows are to be removed: the portal waits
    for it and removes them after; each message is sent once."""
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    finish_many = store.remote_inbox.finish_many
    outage = {"left": 3}

    async def database_away(row_ids: list[int]) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise OSError("database unreachable")
        await finish_many(row_ids)

    store.remote_inbox.finish_many = database_away  # type: ignore[method-assign]
    try:
        await hub.accept("sent-once")
        await hub.accept("next")
        await hub.queues.drain()
        assert await hub.emptied()
    finally:
        store.remote_inbox.finish_many = finish_many  # type: ignore[method-assign]
    assert hub.homeserver.sent == [(CHAT, "sent-once"), (CHAT, "next")]
    assert outage["left"] == 0


@contextlib.contextmanager
def removals(store: Store) -> Iterator[list[int]]:
    """The size of each removal statement made meanwhile."""
    finish_many = store.remote_inbox.finish_many
    calls: list[int] = []

    async def counted(row_ids: list[int]) -> None:
        calls.append(len(row_ids))
        await finish_many(row_ids)

    store.remote_inbox.finish_many = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        store.remote_inbox.finish_many = finish_many  # type: ignore[method-assign]


async def test_a_burst_is_removed_in_one_statement(store: Store) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    hub.homeserver.away = 1  # the first try waits a moment, so the burst is queued meanwhile
    with removals(store) as calls:
        for n in range(40):
            await hub.accept(f"b{n}")
        await hub.queues.drain()
        assert await hub.emptied()
    assert [text for _, text in hub.homeserver.sent] == [f"b{n}" for n in range(40)]
    assert sum(calls) == 40 and len(calls) <= 3, calls


async def test_messages_that_come_one_at_a_time_are_removed_together(store: Store) -> None:
    """Not one statement per message: the removal waits a moment for the next ones."""
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    with removals(store) as calls:
        for n in range(10):
            await hub.accept(f"m{n}")
            await hub.queues.drain()
        assert await hub.emptied()
    assert len(hub.homeserver.sent) == 10
    assert sum(calls) == 10 and len(calls) < 5, calls


async def test_a_stop_removes_what_was_delivered(store: Store) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    await hub.accept("delivered")
    await hub.queues.drain()
    await hub.inbox.close()
    assert await store.remote_inbox.pending() == []


async def test_a_stop_during_a_removal_still_removes_its_rows(store: Store) -> None:
    """The stop cancels the removal while its statement runs: the rows it had taken are
    removed by the stop, not left for the restart to convert again."""
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    finish_many = store.remote_inbox.finish_many
    started = asyncio.Event()

    async def slow(row_ids: list[int]) -> None:
        if not started.is_set():
            started.set()
            await asyncio.sleep(30)  # cancelled by the stop
        await finish_many(row_ids)

    store.remote_inbox.finish_many = slow  # type: ignore[method-assign]
    try:
        await hub.accept("in-flight")
        await hub.queues.drain()
        await asyncio.wait_for(started.wait(), 5)
        await hub.inbox.close()
    finally:
        store.remote_inbox.finish_many = finish_many  # type: ignore[method-assign]
    assert await store.remote_inbox.pending() == []


async def test_a_long_outage_does_not_use_up_the_budget_for_real_errors(store: Store) -> None:
    """After an outage longer than ``attempts`` tries, one unexpected failure is retried, not
    parked: only failures that are the event's own count."""
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    hub.homeserver.away = 8  # attempts=2 in this hub
    flaky = {"left": 1}
    handle = hub.homeserver.handle

    async def once_broken(event: RemoteEvent, client: object) -> None:
        if hub.homeserver.away == 0 and flaky["left"]:
            flaky["left"] -= 1
            raise ValueError("an unexpected hiccup")
        await handle(event, client)

    hub.homeserver.handle = once_broken  # type: ignore[method-assign]
    await hub.accept("survivor")
    await hub.queues.drain()
    assert hub.homeserver.sent == [(CHAT, "survivor")]
    assert not hub.notices and await store.list_dead_letters() == []


async def test_a_restart_with_a_long_backlog_queues_it_all_at_once_and_keeps_order(
    store: Store,
) -> None:
    """After a long outage one portal has far more stored rows than a queue holds: starting
    does not wait for them to be sent (it used to wait for queue room before the connectors,
    which the rows wait for, had started), and they go out in order before newer ones."""
    for n in range(40):
        await store.remote_inbox.add(RemoteInput(
            portal=CHAT, kind="message", payload={"text": f"old-{n}"}, dedupe_id=f"old-{n}"
        ))  # fmt: skip
    hub = Hub(store, started=False, memory_rows=5)
    hub.queues = OrderedQueues(maxsize=2, log=LOG)
    hub.inbox = RemoteInbox(
        store=store.remote_inbox, queues=hub.queues, portals=hub.homeserver,  # type: ignore[arg-type]
        clients=hub.clients, retry=RetryPolicy(attempts=2, backoff=0, max_backoff=0.01),
        metrics=Metrics(), notice=hub._notice, log=LOG, memory_rows=5,
    )  # fmt: skip
    async with asyncio.timeout(5):
        assert await hub.inbox.recover() == 40
        hub.clients.add(NET, Client())  # type: ignore[arg-type]
        await hub.accept("new")
    hub.inbox.started = True
    await hub.queues.drain()
    assert [text for _, text in hub.homeserver.sent] == [f"old-{n}" for n in range(40)] + ["new"]
    assert await hub.emptied()


async def test_accept_never_waits_for_a_stuck_portal(store: Store) -> None:
    """The connector acknowledges to its network once the input is stored: a portal whose
    homeserver is away must not stall the stream (an XMPP component, an LMTP session)."""
    hub = Hub(store, memory_rows=3)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    hub.homeserver.away = 10**9
    async with asyncio.timeout(5):
        for n in range(30):
            assert await hub.accept(f"m{n}")
    hub.homeserver.away = 0
    await hub.queues.drain()
    assert [text for _, text in hub.homeserver.sent] == [f"m{n}" for n in range(30)]
    assert await hub.emptied()


class BatchClient(Client):
    """Converts ``a,b,c`` into three messages (a catch-up's batch)."""

    async def convert_remote(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        return [
            RemoteMessage(portal=item.portal, id=RemoteMessageID(t), parts=[MessagePart(text=t)])
            for t in str(item.payload["text"]).split(",")
        ]


async def test_one_refused_event_of_a_batch_does_not_lose_the_rest(store: Store) -> None:
    """Hostile: one message of a catch-up is refused for good (a file over the homeserver's
    upload limit, say): the messages after it still arrive, the room is told, and the input
    is kept as a dead letter an operator can retry."""
    hub = Hub(store)
    hub.clients.add(NET, BatchClient())  # type: ignore[arg-type]
    hub.homeserver.refuse.add("too-big")
    await hub.accept("one,too-big,three")
    await hub.accept("after")
    await hub.queues.drain()
    assert [text for _, text in hub.homeserver.sent] == ["one", "three", "after"]
    assert [key for key, _ in hub.notices] == [CHAT]
    assert await hub.emptied()
    [letter] = await store.list_dead_letters()
    assert "one,too-big,three" in str(letter)
