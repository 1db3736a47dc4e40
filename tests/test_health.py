"""``/_pontis/health`` is honest: not ready while the database or the homeserver is away, and
ready again once it is back; it never waits for the homeserver itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from bridge.core.health import HealthMonitor, health_response
from bridge.portal import Store
from tests.store_fixtures import StoreTarget

LOG = logging.getLogger("test.health")


class TcpProxy:
    """A TCP relay in front of a server, which a test can cut (connections refused), silence
    (connections accepted, nothing forwarded: a network partition) and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones, as a stopped server does."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def silence(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, RuntimeError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


class FakeHomeserver:
    """``/_matrix/client/versions`` on a port that can be taken away and given back."""

    def __init__(self) -> None:
        self.hits = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def versions(request: web.Request) -> web.Response:
            self.hits += 1
            return web.json_response({"versions": ["v1.11"]})

        app = web.Application()
        app.router.add_get("/_matrix/client/versions", versions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def homeserver() -> AsyncIterator[FakeHomeserver]:
    server = FakeHomeserver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


CLIENTS = {"xmpp/shared": True, "teams/shared": False, "teams/@alice:hub": True}


async def health(monitor: HealthMonitor, *, started: bool = True) -> tuple[int, dict[str, Any]]:
    resp = await health_response(
        started=started, clients=CLIENTS, monitor=monitor, extra={"encryption": {"ok": True}}
    )
    assert resp.text is not None
    return resp.status, json.loads(resp.text)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> float:
    """Seconds until ``check`` holds; fails after ``timeout``."""
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not {what} within {timeout} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def status_is(monitor: HealthMonitor, expected: int) -> bool:
    return (await health(monitor))[0] == expected


async def test_ready_with_every_dependency_and_the_old_fields_kept(
    store: Store, homeserver: FakeHomeserver, http: aiohttp.ClientSession
) -> None:
    monitor = HealthMonitor(http=http, homeserver_url=homeserver.url, db=store.database, log=LOG)
    await monitor.start()
    try:
        status, body = await health(monitor)
        assert status == 200
        assert body["live"] is True and body["ready"] is True and body["version"]
        assert body["clients"] == CLIENTS
        assert body["encryption"] == {"ok": True}
        deps = body["dependencies"]
        assert deps["homeserver"]["reachable"] is True
        assert deps["database"]["reachable"] is True
        assert deps["networks"] == {
            "xmpp": {"clients": 1, "connected": 1},
            "teams": {"clients": 2, "connected": 1},
        }
        # Not started yet (or stopping): 503, whatever the dependencies say.
        status, body = await health(monitor, started=False)
        assert (status, body["ready"], body["live"]) == (503, False, True)
    finally:
        await monitor.stop()


# SQLite is a file inside the process: it has no "down" short of the bridge's own files going
# away. The probe is the same query on both engines (the first test runs it on both).
@pytest.mark.parametrize("store_target", ["postgres"], indirect=True)
async def test_database_down_is_503_within_seconds_and_200_once_back(
    store_target: StoreTarget, homeserver: FakeHomeserver, http: aiohttp.ClientSession
) -> None:
    url = URL(store_target.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    store = await Store.open(
        str(url.with_host("127.0.0.1").with_port(proxy.port)),
        db_args=dict(store_target.db_args),
    )
    monitor = HealthMonitor(http=http, homeserver_url=homeserver.url, db=store.database, log=LOG)
    await monitor.start()
    try:
        assert await status_is(monitor, 200)

        # A partition: the server accepts nothing and answers nothing. The probe times out.
        proxy.silence()
        took = await until(lambda: status_is(monitor, 503), "503 while silent", timeout=8)
        assert took < 7  # cache (2 s) + probe timeout (3 s) + polling
        _, body = await health(monitor)
        assert body["live"] is True and body["ready"] is False
        assert body["dependencies"]["database"]["reachable"] is False
        assert "within" in body["dependencies"]["database"]["error"]
        assert body["dependencies"]["homeserver"]["reachable"] is True
        proxy.restore()
        await until(lambda: status_is(monitor, 200), "200 once restored", timeout=15)

        # Stopped: connections refused and the pool's connections reset.
        await proxy.cut()
        took = await until(lambda: status_is(monitor, 503), "503 while stopped", timeout=8)
        assert took < 7  # cache (2 s) + probe timeout (3 s) + polling
        await proxy.start()
        await until(lambda: status_is(monitor, 200), "200 once back", timeout=15)
    finally:
        await monitor.stop()
        proxy.restore()
        with contextlib.suppress(Exception):
            await store.close()
        if proxy._server is not None:
            await proxy.cut()


async def test_homeserver_down_is_503_and_200_once_back(
    store: Store, homeserver: FakeHomeserver, http: aiohttp.ClientSession
) -> None:
    monitor = HealthMonitor(
        http=http,
        homeserver_url=homeserver.url,
        db=store.database,
        log=LOG,
        interval=0.3,
        retry_interval=0.1,
        homeserver_timeout=1.0,
    )
    await monitor.start()
    try:
        assert await status_is(monitor, 200)
        await homeserver.stop()
        await until(lambda: status_is(monitor, 503), "503 with the homeserver down", timeout=5)
        _, body = await health(monitor)
        assert body["live"] is True
        assert body["dependencies"]["homeserver"]["reachable"] is False
        assert body["dependencies"]["homeserver"]["error"]
        assert body["dependencies"]["database"]["reachable"] is True
        await homeserver.start()  # the same port
        await until(lambda: status_is(monitor, 200), "200 with the homeserver back", timeout=5)
    finally:
        await monitor.stop()


async def test_health_requests_do_not_hit_the_homeserver_or_pile_up_on_the_database(
    store: Store, homeserver: FakeHomeserver, http: aiohttp.ClientSession
) -> None:
    monitor = HealthMonitor(http=http, homeserver_url=homeserver.url, db=store.database, log=LOG)
    await monitor.start()
    try:
        assert homeserver.hits == 1  # the first probe, then one every 10 s in the background
        queries = 0
        real_fetchval = store.database.fetchval

        async def counting_fetchval(query: str, *args: Any) -> Any:
            nonlocal queries
            queries += 1
            return await real_fetchval(query, *args)

        store.database.fetchval = counting_fetchval  # type: ignore[method-assign]
        results = await asyncio.gather(*(health(monitor) for _ in range(50)))
        assert {status for status, _ in results} == {200}
        assert homeserver.hits == 1
        assert queries <= 1  # one shared probe, then the cached answer
    finally:
        await monitor.stop()
