"""The router's inbox dispatcher: the backlog from the store, then rows handed over in memory."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from unittest.mock import MagicMock

from bridge.core.metrics import Metrics
from bridge.core.permissions import Permissions
from bridge.core.retry import RetryPolicy
from bridge.core.router import Router
from bridge.portal.models import InboxItem, InboxRow
from bridge.portal.store import Store


def _router(store: Store) -> tuple[Router, list[int]]:
    router = Router(
        store=store, matrix=MagicMock(), portals=MagicMock(room_keys={}), connectors={},
        permissions=MagicMock(spec=Permissions), metrics=Metrics(),
        retry=RetryPolicy(attempts=1, backoff=0), queue_size=100, domain="hub.test",
        log=logging.getLogger("test"),
    )  # fmt: skip
    queued: list[int] = []

    def add(key: str | None, lane: str, row: InboxRow) -> bool:
        queued.append(row.id)
        return True

    router._inbox_rows.add = add  # type: ignore[method-assign]
    return router, queued


def _items(*event_ids: str) -> list[InboxItem]:
    return [
        InboxItem("pdu", event_id, None, {"event_id": event_id, "type": "m.room.message"})
        for event_id in event_ids
    ]


async def _until(check: Any) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


async def test_backlog_then_handed_rows_are_each_queued_once_in_order(store: Store) -> None:
    backlog = await store.store_transaction("t1", _items("$a", "$b"))
    assert backlog is not None
    router, queued = _router(store)
    # Handed over before the dispatcher has read the store: also in the store, queued once.
    router.notify_inbox(backlog)
    router.start()
    try:
        await _until(lambda: len(queued) >= 2)
        fresh = await store.store_transaction("t2", _items("$c"))
        assert fresh is not None
        router.notify_inbox(fresh)
        await _until(lambda: len(queued) >= 3)
        # Rows written by someone else: notify_inbox() without rows reads the store.
        other = await store.store_transaction("t3", _items("$d"))
        assert other is not None
        router.notify_inbox()
        await _until(lambda: len(queued) >= 4)
        await asyncio.sleep(0.05)
    finally:
        await router.stop()
    assert queued == [row.id for row in [*backlog, *fresh, *other]]
