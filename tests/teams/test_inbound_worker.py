"""The Teams notification worker's retry policy: retried while it may heal, then reported."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

from bridge.core import PermanentError, TransientError
from bridge.portal import Store
from bridge.teams.ids import portal_key
from bridge.teams.inbound import MAX_ATTEMPTS, Inbound, _RefusedOnMatrix
from bridge.teams.store import StoredNotification, TeamsStore

CHAT = "19:abc@thread.v2"


@pytest.fixture
async def teams_store(store: Store) -> TeamsStore:
    teams = TeamsStore(store.database)
    await teams.upgrade()
    return teams


def _worker(teams_store: TeamsStore, failure: Exception) -> tuple[Inbound, AsyncMock]:
    net = MagicMock()
    net.ctx.log = logging.getLogger("test")
    net.ctx.remote_message_lost = AsyncMock()
    worker = Inbound(net, teams_store, MagicMock())

    async def handle(row: StoredNotification) -> None:
        raise failure

    worker._handle = handle  # type: ignore[method-assign]
    return worker, net.ctx.remote_message_lost


async def _stored(teams_store: TeamsStore) -> list[StoredNotification]:
    return await teams_store.pending_notifications()


async def _store_one(teams_store: TeamsStore) -> None:
    item: dict[str, Any] = {"changeType": "created", "resource": f"chats('{CHAT}')/messages('1')"}
    await teams_store.add_notifications([("tenant", item)])


@pytest.mark.parametrize("failure", [TransientError("Graph 503"), RuntimeError("db gone")])
async def test_a_failing_notification_is_retried_then_reported_lost(
    teams_store: TeamsStore, failure: Exception
) -> None:
    await _store_one(teams_store)
    worker, lost = _worker(teams_store, failure)
    for attempt in range(1, MAX_ATTEMPTS):
        assert await worker._work_chat(await _stored(teams_store)) == attempt  # retry later
        assert lost.await_count == 0
    assert await worker._work_chat(await _stored(teams_store)) == 0
    lost.assert_awaited_once_with(portal_key(CHAT), failure)
    assert await _stored(teams_store) == []


async def test_a_refusal_on_matrix_is_not_retried_nor_reported_twice(
    teams_store: TeamsStore,
) -> None:
    await _store_one(teams_store)
    refused = PermanentError("refused", user_message="no")
    worker, lost = _worker(teams_store, _RefusedOnMatrix(refused))
    assert await worker._work_chat(await _stored(teams_store)) == 0
    assert lost.await_count == 0  # the core showed its own refusal in the room
    assert await _stored(teams_store) == []


async def test_a_refusal_by_graph_is_reported_at_once(teams_store: TeamsStore) -> None:
    await _store_one(teams_store)
    refused = PermanentError("Graph 403", user_message="the app may not read this chat")
    worker, lost = _worker(teams_store, refused)
    assert await worker._work_chat(await _stored(teams_store)) == 0
    lost.assert_awaited_once_with(portal_key(CHAT), refused)
    assert await _stored(teams_store) == []


async def test_the_worker_survives_a_database_outage(
    teams_store: TeamsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _store_one(teams_store)
    worker, _ = _worker(teams_store, TransientError("unused"))
    handled: list[int] = []

    async def handle(row: StoredNotification) -> None:
        handled.append(row.id)

    worker._handle = handle  # type: ignore[method-assign]
    real = teams_store.pending_notifications
    outage = [OSError("database down")]

    async def pending(limit: int = 200) -> list[StoredNotification]:
        if outage:
            raise outage.pop()
        return await real(limit)

    monkeypatch.setattr(teams_store, "pending_notifications", pending)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(5):  # the first retry comes after 1 s
            while not handled and not task.done():
                await asyncio.sleep(0.02)
        assert not task.done(), "the worker stopped"
    finally:
        task.cancel()
    assert len(handled) == 1
