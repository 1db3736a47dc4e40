"""Which Graph subscriptions a tenant holds: one per watched account (the relay, each Teams
login), never one on the whole tenant; against the Graph emulator and a real store (SQLite,
PostgreSQL). What an agency's admin checks: the hub is told of no chat none of its watched
accounts is in, and a logged-out user's chats stop reaching it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.core.ids import LoginID
from bridge.portal.models import Login
from bridge.portal.store import NetworkStore, Store
from bridge.teams.config import TeamsConfig
from bridge.teams.ids import NETWORK
from bridge.teams.tenant import TenantLink
from tests.e2e.graph import GraphEmulator

LOG = logging.getLogger("test.teams.subscriptions")


@pytest.fixture
async def graph() -> AsyncIterator[GraphEmulator]:
    emulator = GraphEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def webhook() -> AsyncIterator[str]:
    """Answers Graph's validation handshake (and takes notifications), as the bridge does."""

    async def receive(request: web.Request) -> web.Response:
        if "validationToken" in request.query:
            return web.Response(text=request.query["validationToken"], content_type="text/plain")
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def _resources(graph: GraphEmulator) -> list[str]:
    return sorted(s.resource for s in graph.services.state.live_subscriptions())


async def _link(store: Store, graph: GraphEmulator, public_url: str) -> TenantLink:
    cfg = TeamsConfig.from_section(graph.teams_section(public_url))
    http = aiohttp.ClientSession()
    link = TenantLink(cfg, cfg.tenants[0], http, NetworkStore(store, NETWORK), LOG)
    link.client_state = "state"
    await link.resolve_relay()
    return link


async def _login(store: Store, graph: GraphEmulator, first_name: str) -> Login:
    login = Login(
        network=NETWORK,
        login_id=LoginID(graph.user(first_name)["id"].lower()),
        user_mxid=f"@{first_name}:hub",
        metadata={"tenant_id": graph.tenant_id, "refresh_token": "x"},
    )
    await store.save_login(login)
    return login


async def test_subscriptions_follow_the_watched_accounts(
    store: Store, graph: GraphEmulator, webhook: str
) -> None:
    link = await _link(store, graph, webhook)
    relay = link.relay_user_id
    adele = graph.user("adele")["id"].lower()
    try:
        await link.ensure_subscription("state")
        assert _resources(graph) == [f"/users/{relay}/chats/getAllMessages"]
        login = await _login(store, graph, "adele")
        await link.ensure_subscription("state")
        assert f"/users/{adele}/chats/getAllMessages" in _resources(graph)
        assert len(_resources(graph)) == 2
        (adeles,) = [s.id for s in graph.services.state.live_subscriptions() if adele in s.resource]
        assert await link.watches(adeles)
        # Logged out: at the next renewal the subscription goes, in Graph and in the bridge.
        await store.delete_login(NETWORK, login.login_id)
        await link.ensure_subscription("state")
        assert _resources(graph) == [f"/users/{relay}/chats/getAllMessages"]
        assert not await link.watches(adeles)
        # A fresh link (a restart) reads the same subscriptions back and makes no new one.
        again = await _link(store, graph, webhook)
        try:
            await again.ensure_subscription("state")
            assert _resources(graph) == [f"/users/{relay}/chats/getAllMessages"]
        finally:
            await again.close()
            await again._http.close()
    finally:
        await link.close()
        await link._http.close()


async def test_a_login_is_watched_at_once_and_not_dropped_before_it_is_stored(
    store: Store, graph: GraphEmulator, webhook: str
) -> None:
    link = await _link(store, graph, webhook)
    megan = graph.user("megan")["id"]
    try:
        await link.watch(megan)
        assert _resources(graph) == [f"/users/{megan.lower()}/chats/getAllMessages"]
        await link.ensure_subscription("state")  # the login is not stored yet: still watched
        assert f"/users/{megan.lower()}/chats/getAllMessages" in _resources(graph)
        (megans,) = [s.id for s in graph.services.state.live_subscriptions() if megan in s.resource]
        # logout teams: gone at once, not at the next renewal.
        await link.unwatch(megan)
        assert _resources(graph) == [f"/users/{link.relay_user_id}/chats/getAllMessages"]
        assert not await link.watches(megans)
        await link.unwatch(str(link.relay_user_id))  # the relay is not a login: stays
        assert len(_resources(graph)) == 1
    finally:
        await link.close()
        await link._http.close()


async def test_an_older_versions_tenant_wide_subscription_is_deleted(
    store: Store, graph: GraphEmulator, webhook: str
) -> None:
    wide = await graph.graph_as_app(
        "POST",
        "/subscriptions",
        {
            "changeType": "created,updated,deleted",
            "notificationUrl": webhook + "/n",
            "lifecycleNotificationUrl": webhook + "/l",
            "resource": "/chats/getAllMessages",
            "expirationDateTime": (datetime.now(UTC) + timedelta(minutes=30)).isoformat(),
            "clientState": "state",
        },
    )
    network = NetworkStore(store, NETWORK)
    await network.kv_set(f"subscription:{graph.tenant_id}", f'{{"id": "{wide["id"]}"}}')
    link = await _link(store, graph, webhook)
    try:
        await link.ensure_subscription("state")
        assert "/chats/getAllMessages" not in _resources(graph)
        assert await network.kv_get(f"subscription:{graph.tenant_id}") is None
        assert not await link.watches(wide["id"])
    finally:
        await link.close()
        await link._http.close()
