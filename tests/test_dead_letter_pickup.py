"""A dead letter retried from another process (``pontis dead-letters retry`` while the bridge
runs) reaches the running bridge, behind what its portal has queued, and only once."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import AsyncMock

from bridge.core.ids import LoginID
from bridge.portal.models import RemoteInput
from bridge.portal.store import Store
from tests.test_dead_letters import matrix_letter, pdu
from tests.test_inbox_dispatch import _router, _until
from tests.test_remote_inbox import CHAT, NET, Client, Hub


async def test_an_idle_dispatcher_finds_a_retried_row_by_itself(store: Store) -> None:
    letter_id = await matrix_letter(store, "$refused")
    backlog = await store.store_transaction("t1", [pdu("$a")])
    assert backlog
    router, queued = _router(store)
    router.portals.portal_by_room = AsyncMock(return_value=None)  # type: ignore[method-assign]
    router.poll_seconds = 0.05
    router.start()
    try:
        await _until(lambda: queued == [backlog[0].id])
        retried = await store.dead_letters.retry(letter_id)  # nobody tells the dispatcher
        await _until(lambda: len(queued) == 2)
        await asyncio.sleep(0.2)
    finally:
        await router.stop()
    assert queued == [backlog[0].id, retried.row_id]


async def test_a_retried_row_below_a_handed_one_is_read_in_the_gap(store: Store) -> None:
    letter_id = await matrix_letter(store, "$refused")
    backlog = await store.store_transaction("t1", [pdu("$a")])
    assert backlog
    router, queued = _router(store)
    router.portals.portal_by_room = AsyncMock(return_value=None)  # type: ignore[method-assign]
    router.poll_seconds = 3600  # no idle reading: only the gap shows the row
    router.start()
    try:
        await _until(lambda: queued == [backlog[0].id])
        retried = await store.dead_letters.retry(letter_id)
        handed = await store.store_transaction("t2", [pdu("$c"), pdu("$d")])
        assert handed and retried.row_id is not None
        router.notify_inbox(handed)
        await _until(lambda: len(queued) == 4)
        await asyncio.sleep(0.1)
    finally:
        await router.stop()
    assert queued == [backlog[0].id, retried.row_id, handed[0].id, handed[1].id]


async def test_a_retried_network_event_is_queued_behind_the_portal_and_sent_once(
    store: Store,
) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    hub.homeserver.refuse.add("refused")
    await hub.accept("refused")
    await hub.queues.drain()
    (letter,) = await store.dead_letters.newest()
    assert not letter.to_network and hub.notices

    hub.homeserver.refuse.clear()  # the cause is fixed
    hub.homeserver.away = 10**9  # and the homeserver is away for a while
    await hub.accept("queued-first")
    await asyncio.sleep(0.05)
    retried = await store.dead_letters.retry(letter.id)
    assert retried.outcome == "retried"
    assert await hub.inbox.poll() == 1  # accepted rows are not queued again
    assert await hub.inbox.poll() == 0
    hub.homeserver.away = 0
    await hub.queues.drain()
    assert [text for _, text in hub.homeserver.sent] == ["queued-first", "refused"]
    assert await hub.emptied() and await store.dead_letters.count() == 0


async def test_a_poll_that_read_a_row_just_sent_does_not_send_it_again(store: Store) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    hub.homeserver.away = 10**9
    await hub.accept("once")
    pending = store.remote_inbox.pending

    async def stale(*args: Any, **kwargs: Any) -> Any:
        rows = await pending(*args, **kwargs)
        hub.homeserver.away = 0  # the row is sent and removed while the poll reads it
        await hub.queues.drain()
        return rows

    store.remote_inbox.pending = stale  # type: ignore[method-assign]
    assert await hub.inbox.poll() == 0
    store.remote_inbox.pending = pending  # type: ignore[method-assign]
    await hub.queues.drain()
    assert hub.homeserver.sent == [(CHAT, "once")]


async def test_a_row_stored_but_not_yet_queued_by_accept_is_queued_once(store: Store) -> None:
    hub = Hub(store)
    hub.clients.add(NET, Client())  # type: ignore[arg-type]
    item = RemoteInput(portal=CHAT, kind="message", payload={"text": "racing"},
                       dedupe_id="racing", login=LoginID(""))  # fmt: skip
    row = await store.remote_inbox.add(item)  # accept stored it, and has not queued it yet
    assert row is not None
    assert await hub.inbox.poll() == 1
    await hub.queues.drain()  # sent and removed before accept goes on
    hub.inbox._queue(row)  # accept goes on
    await hub.queues.drain()
    assert hub.homeserver.sent == [(CHAT, "racing")]
