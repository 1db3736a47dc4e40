"""Honest health: ``/_pontis/health`` says, per dependency, whether the bridge can work now.

``live`` is true while the process answers at all. ``ready`` is true once the bridge has started
and while both the homeserver and the database are reachable; without either, nothing can be
bridged, and an orchestrator or a load balancer should know (the answer is then 503). Networks
are reported (``clients`` and ``dependencies.networks``) but do not make the bridge unready:
one network being away must not take the others out of service. A client with parts an operator
must see one by one (the XMPP hub's components) adds them under ``client_details``
(:class:`~bridge.core.connector.SupportsHealthDetail`).

The homeserver is probed in the background (``/_matrix/client/versions``, every
:data:`HOMESERVER_INTERVAL` seconds, every :data:`HOMESERVER_RETRY` seconds while it fails), so a
health request never waits for it. The database is asked ``SELECT`` with a short timeout when a
health request comes and its answer kept for :data:`DATABASE_CACHE` seconds; concurrent requests
share one probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from mautrix.util.async_db import Database

from bridge import __version__
from bridge.core.connector import SupportsHealthDetail
from bridge.core.metrics import Metrics
from bridge.portal.backlog import read_backlog
from bridge.portal.store import Store

HOMESERVER_INTERVAL = 10.0
HOMESERVER_RETRY = 2.0
HOMESERVER_TIMEOUT = 5.0
DATABASE_TIMEOUT = 3.0
DATABASE_CACHE = 2.0
DATABASE_QUERY = "SELECT 1 FROM pontis_version LIMIT 1"
"""Reads a table, so that SQLite opens its file too (``SELECT 1`` alone would not)."""
METRICS_TIMEOUT = 5.0

T = TypeVar("T")


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


async def _within(awaitable: Awaitable[T], seconds: float) -> T:
    """``awaitable``'s result, or TimeoutError after ``seconds``. Unlike
    ``asyncio.wait_for`` it does not wait for the abandoned call to unwind: a driver cleaning
    up a connection to a server that went silent can take much longer than the timeout."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise TimeoutError
    return task.result()


@dataclass(slots=True)
class Probe:
    """The last answer of one dependency; ``reachable`` is None until it was first asked."""

    reachable: bool | None = None
    error: str | None = None
    checked_at: float | None = None
    """Monotonic seconds."""
    latency_ms: float | None = None

    def as_json(self, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"reachable": self.reachable}
        if self.checked_at is not None:
            body["checked_seconds_ago"] = round(max(0.0, now - self.checked_at), 1)
        if self.latency_ms is not None:
            body["latency_ms"] = round(self.latency_ms, 1)
        if self.error is not None:
            body["error"] = self.error
        return body


class HealthMonitor:
    """Probes of the homeserver (background) and the database (on demand, cached)."""

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        homeserver_url: str,
        db: Database,
        log: logging.Logger,
        interval: float = HOMESERVER_INTERVAL,
        retry_interval: float = HOMESERVER_RETRY,
        homeserver_timeout: float = HOMESERVER_TIMEOUT,
        db_timeout: float = DATABASE_TIMEOUT,
        db_cache: float = DATABASE_CACHE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._versions_url = f"{homeserver_url.rstrip('/')}/_matrix/client/versions"
        self._db = db
        self._log = log
        self._interval = interval
        self._retry_interval = retry_interval
        self._homeserver_timeout = homeserver_timeout
        self._db_timeout = db_timeout
        self._db_cache = db_cache
        self._clock = clock
        self.homeserver = Probe()
        self._database = Probe()
        self._db_probe: asyncio.Task[Probe] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Probe the homeserver once, then keep probing in the background."""
        await self.probe_homeserver()
        self._task = asyncio.create_task(self._probe_homeserver_forever(), name="health")

    async def stop(self) -> None:
        for task in (self._task, self._db_probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._db_probe = None

    async def _probe_homeserver_forever(self) -> None:
        while True:
            ok = self.homeserver.reachable
            await asyncio.sleep(self._interval if ok else self._retry_interval)
            await self.probe_homeserver()

    async def probe_homeserver(self) -> Probe:
        began = self._clock()
        error: str | None = None
        try:
            timeout = aiohttp.ClientTimeout(total=self._homeserver_timeout)
            async with self._http.get(self._versions_url, timeout=timeout) as resp:
                if resp.status != 200:
                    error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            error = _describe(err)
        probe = Probe(error is None, error, self._clock(), (self._clock() - began) * 1000)
        if probe.reachable != self.homeserver.reachable and self.homeserver.reachable is not None:
            if probe.reachable:
                self._log.info("Homeserver reachable again")
            else:
                self._log.warning("Homeserver unreachable: %s", error)
        self.homeserver = probe
        return probe

    async def database(self) -> Probe:
        """The database's state, asked at most every ``db_cache`` seconds."""
        last = self._database
        if last.checked_at is not None and self._clock() - last.checked_at < self._db_cache:
            return last
        if self._db_probe is None:
            self._db_probe = asyncio.create_task(self._probe_database(), name="health:db")
        # Shielded: one impatient client hanging up must not cancel the others' probe.
        return await asyncio.shield(self._db_probe)

    async def _probe_database(self) -> Probe:
        began = self._clock()
        error: str | None = None
        try:
            await _within(self._db.fetchval(DATABASE_QUERY), self._db_timeout)
        except TimeoutError:
            error = f"no answer within {self._db_timeout:g} s"
        except Exception as err:  # any driver error means: not usable now
            error = _describe(err)
        probe = Probe(error is None, error, self._clock(), (self._clock() - began) * 1000)
        if probe.reachable != self._database.reachable and self._database.reachable is not None:
            if probe.reachable:
                self._log.info("Database reachable again")
            else:
                self._log.warning("Database unreachable: %s", error)
        self._database = probe
        self._db_probe = None
        return probe

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """(homeserver and database reachable, their states as JSON)."""
        database = await self.database()
        now = self._clock()
        ok = bool(self.homeserver.reachable) and bool(database.reachable)
        return ok, {"homeserver": self.homeserver.as_json(now), "database": database.as_json(now)}


def _networks(clients: Mapping[str, bool]) -> dict[str, dict[str, int]]:
    networks: dict[str, dict[str, int]] = {}
    for name, connected in clients.items():
        entry = networks.setdefault(name.split("/", 1)[0], {"clients": 0, "connected": 0})
        entry["clients"] += 1
        entry["connected"] += int(connected)
    return networks


def client_details(clients: Mapping[str, object], log: logging.Logger) -> dict[str, Any]:
    """``health_detail()`` of each client (by the name ``clients`` gives it) that has one; a
    client whose detail fails shows that, rather than turning the whole answer into a 500."""
    details: dict[str, Any] = {}
    for name, client in clients.items():
        if not isinstance(client, SupportsHealthDetail):
            continue
        try:
            details[name] = client.health_detail()
        except Exception as err:
            log.exception("Health detail of client %s failed", name)
            details[name] = {"error": f"no detail: {_describe(err)}"}
    return details


async def health_response(
    *,
    started: bool,
    clients: Mapping[str, bool],
    monitor: HealthMonitor | None,
    extra: Mapping[str, object] | None = None,
    details: Mapping[str, Any] | None = None,
) -> web.Response:
    """The body of ``/_pontis/health``: 200 when ready, 503 otherwise. ``clients`` maps
    ``<network>/<login or shared>`` to whether that client is connected; ``details`` has the
    same keys, for the clients that tell more (:func:`client_details`)."""
    ready = started
    dependencies: dict[str, Any] = {}
    if monitor is not None:
        ok, dependencies = await monitor.report()
        ready = ready and ok
    dependencies["networks"] = _networks(clients)
    body: dict[str, object] = {
        "live": True, "ready": ready, "version": __version__, "clients": dict(clients),
        "client_details": dict(details or {}), "dependencies": dependencies, **(extra or {}),
    }  # fmt: skip
    return web.json_response(body, status=200 if ready else 503)


async def refresh_metrics(
    metrics: Metrics, store: Store, networks: list[str], log: logging.Logger
) -> None:
    """Read the backlog for a scrape; if the database does not answer, the gauges keep their
    last values (the health endpoint says why)."""
    try:
        backlog = await _within(read_backlog(store), METRICS_TIMEOUT)
    except Exception as err:
        log.warning("Metrics: could not read the backlog: %s", _describe(err))
        return
    metrics.show_backlog(backlog, networks, int(time.time() * 1000))
