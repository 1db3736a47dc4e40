"""The Graph webhook: handshake, forged notifications, kept durably before the 202."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

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


kept: list[list[dict[str, Any]]] = []


async def _accept(items: list[dict[str, Any]]) -> None:
    kept.append(items)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    kept.clear()
    endpoint = NotificationEndpoint(SECRET, _accept, logging.getLogger("t"))
    app = web.Application()
    app.router.add_route("*", "/notifications", endpoint.handle)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_validation_token_is_echoed_as_text(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/notifications", params={"validationToken": "Validation: x&y z"})
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == "Validation: x&y z"
    assert kept == []


async def test_notifications_are_kept_before_the_202(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/notifications", json={"value": [_item(n=1), _item(n=2)]})
    assert resp.status == 202
    assert kept == [[_item(n=1), _item(n=2)]]


async def test_one_forged_item_refuses_the_whole_post(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    resp = await client.post("/notifications", json={"value": [_item(), _item("guess")]})
    assert resp.status == 403
    assert kept == []
    assert "wrong clientState" in caplog.text and "guess" not in caplog.text
    missing = {k: v for k, v in _item().items() if k != "clientState"}
    assert (await client.post("/notifications", json={"value": [missing]})).status == 403
    assert kept == []


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"value": 3}', b'{"value": [1]}'])
async def test_malformed_bodies_are_400(client: TestClient[Any, Any], body: bytes) -> None:
    resp = await client.post("/notifications", data=body)
    assert resp.status == 400
    assert kept == []


async def test_a_store_that_cannot_keep_them_asks_graph_to_retry() -> None:
    async def broken(items: list[dict[str, Any]]) -> None:
        raise OSError("database unreachable")

    endpoint = NotificationEndpoint(SECRET, broken, logging.getLogger("t"))
    app = web.Application()
    app.router.add_post("/n", endpoint.handle)
    async with TestClient(TestServer(app)) as test_client:
        resp = await test_client.post("/n", json={"value": [_item()]})
        assert resp.status == 503
