"""``/_pontis/<network>/<path>``: connector endpoints on the bridge's HTTP port."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.core.context import ConnectorRoutes
from bridge.core.ids import NetworkID


async def _client(routes: ConnectorRoutes) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    routes.add_to(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_a_claimed_path_reaches_its_handler_with_any_method() -> None:
    routes = ConnectorRoutes(["teams"])

    async def notifications(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.method} {request.query.get('validationToken')}")

    routes.add(NetworkID("teams"), "notifications", notifications)
    client = await _client(routes)
    try:
        resp = await client.post("/_pontis/teams/notifications?validationToken=abc")
        assert (resp.status, await resp.text()) == (200, "POST abc")
        assert (await client.get("/_pontis/teams/notifications")).status == 200
    finally:
        await client.close()


async def test_an_enabled_network_that_has_not_started_answers_503_so_senders_retry() -> None:
    client = await _client(ConnectorRoutes(["teams"]))
    try:
        assert (await client.post("/_pontis/teams/notifications")).status == 503
        assert (await client.post("/_pontis/slack/notifications")).status == 404
    finally:
        await client.close()


async def test_an_unclaimed_path_of_a_started_network_is_404() -> None:
    routes = ConnectorRoutes(["teams"])

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    routes.add(NetworkID("teams"), "notifications", handler)
    client = await _client(routes)
    try:
        assert (await client.post("/_pontis/teams/other")).status == 404
    finally:
        await client.close()
