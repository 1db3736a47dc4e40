"""The Graph webhook: handshake, forged notifications, durable storage before the 202."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.portal import Store
from bridge.teams.store import TeamsStore
from bridge.teams.webhook import NotificationEndpoint

SECRET = "the-client-state"


def _item(state: str = SECRET, n: int = 1) -> dict[str, Any]:
    return {
        "subscriptionId": "sub",
        "changeType": "created",
        "resource": f"chats('19:x@thread.v2')/messages('{n}')",
        "clientState": state,
        "tenantId": "tenant",
    }


@pytest.fixture
async def teams_store(store: Store) -> TeamsStore:
    teams = TeamsStore(store.database)
    await teams.upgrade()
    await teams.upgrade()
    return teams


WOKEN: list[bool] = []


@pytest.fixture
async def client(teams_store: TeamsStore) -> AsyncIterator[TestClient[Any, Any]]:
    WOKEN.clear()
    woken = WOKEN
    endpoint = NotificationEndpoint(
        SECRET, teams_store.add_notifications, lambda: woken.append(True), logging.getLogger("t")
    )
    app = web.Application()
    app.router.add_route("*", "/notifications", endpoint.handle)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_validation_token_is_echoed_as_text(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/notifications", params={"validationToken": "Validation: x&y z"})
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == "Validation: x&y z"


async def test_notifications_are_stored_before_the_202(
    client: TestClient[Any, Any], teams_store: TeamsStore
) -> None:
    resp = await client.post("/notifications", json={"value": [_item(n=1), _item(n=2)]})
    assert resp.status == 202
    rows = await teams_store.pending_notifications()
    assert [r.payload["resource"][-5:] for r in rows] == ["('1')", "('2')"]
    assert [r.tenant_id for r in rows] == ["tenant", "tenant"]
    assert WOKEN == [True]
    await teams_store.finish_notification(rows[0].id)
    assert await teams_store.count_notifications() == 1


async def test_one_forged_item_refuses_the_whole_post(
    client: TestClient[Any, Any], teams_store: TeamsStore, caplog: pytest.LogCaptureFixture
) -> None:
    resp = await client.post("/notifications", json={"value": [_item(), _item("guess")]})
    assert resp.status == 403
    assert await teams_store.count_notifications() == 0
    assert WOKEN == []
    assert "wrong clientState" in caplog.text and "guess" not in caplog.text
    missing = {k: v for k, v in _item().items() if k != "clientState"}
    assert (await client.post("/notifications", json={"value": [missing]})).status == 403


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"value": 3}', b'{"value": [1]}'])
async def test_malformed_bodies_are_400(
    client: TestClient[Any, Any], teams_store: TeamsStore, body: bytes
) -> None:
    resp = await client.post("/notifications", data=body)
    assert resp.status == 400
    assert await teams_store.count_notifications() == 0


async def test_storage_failure_asks_graph_to_retry() -> None:
    async def broken(items: list[tuple[str, dict[str, Any]]]) -> None:
        raise OSError("disk full")

    endpoint = NotificationEndpoint(SECRET, broken, lambda: None, logging.getLogger("t"))
    app = web.Application()
    app.router.add_post("/n", endpoint.handle)
    async with TestClient(TestServer(app)) as test_client:
        resp = await test_client.post("/n", json={"value": [_item()]})
        assert resp.status == 503


@pytest.mark.parametrize("per_statement", [1000, 2])
async def test_a_batch_is_stored_whole_and_in_order(
    teams_store: TeamsStore, monkeypatch: pytest.MonkeyPatch, per_statement: int
) -> None:
    monkeypatch.setattr("bridge.teams.store.INSERT_ROWS", per_statement)
    await teams_store.add_notifications([("tenant", _item(n=n)) for n in range(5)])
    await teams_store.add_notifications([("other", _item(n=5))])
    rows = await teams_store.pending_notifications()
    assert [r.payload["resource"] for r in rows] == [
        f"chats('19:x@thread.v2')/messages('{n}')" for n in range(6)
    ]
    assert [r.tenant_id for r in rows] == ["tenant"] * 5 + ["other"]
