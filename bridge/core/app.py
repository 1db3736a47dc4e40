"""The composition root: builds every part from the config and owns their lifetimes.

Nothing here is global, so a test can run two hubs in one process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, cast

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge import __version__
from bridge.core.appservice import AppServiceAPI
from bridge.core.audit import AuditLog
from bridge.core.commands import CommandProcessor
from bridge.core.config import Config, ConfigError, ConfigProblem
from bridge.core.connector import NetworkConnector
from bridge.core.context import ConnectorContext, ConnectorRoutes
from bridge.core.errors import BridgeError
from bridge.core.federation import FederationPolicy, Refusal
from bridge.core.ghost_names import GhostNames
from bridge.core.health import HealthMonitor, client_details, health_response, refresh_metrics
from bridge.core.housekeeping import Housekeeping, Retention
from bridge.core.ids import LoginID, NetworkID
from bridge.core.matrix import MatrixAPI
from bridge.core.metrics import Metrics
from bridge.core.permissions import Permissions
from bridge.core.pickle_key import PickleKey, PickleKeyMissing, load_pickle_key
from bridge.core.portals import PortalManager
from bridge.core.retry import RetryPolicy
from bridge.core.router import Router
from bridge.portal.models import Login
from bridge.portal.pruning import Pruner
from bridge.portal.store import NetworkStore, Store
from bridge.provision import api as provisioning

if TYPE_CHECKING:
    from bridge.crypto.engine import CryptoEngine

ConnectorFactory = Callable[[], NetworkConnector]
KV_NETWORK = "crypto"
"""``kv`` rows of the crypto engine (its sealed recovery key)."""


async def _is_portal(router: Router, room_id: str) -> bool:
    return await router.portals.portal_by_room(room_id) is not None


ENTRY_POINT_GROUP = "pontis.connectors"


def discover_connectors() -> dict[str, ConnectorFactory]:
    """Connectors installed in this environment, by entry point name.

    A connector's module is imported only when its factory is called, which the core does for
    enabled connectors only: a disabled one (Teams pulls in msgraph-sdk) costs no start-up time
    or memory, and one that fails to import cannot stop a bridge that does not use it.
    """
    return {ep.name: _lazy_factory(ep) for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _lazy_factory(ep: EntryPoint) -> ConnectorFactory:
    def factory() -> NetworkConnector:
        return cast(ConnectorFactory, ep.load())()

    return factory


def build_connectors(
    config: Config, factories: Mapping[str, ConnectorFactory]
) -> dict[NetworkID, NetworkConnector]:
    """Instantiate the enabled connectors and validate their config sections."""
    problems: list[ConfigProblem] = []
    connectors: dict[NetworkID, NetworkConnector] = {}
    for network in config.enabled_connectors():
        factory = factories.get(network)
        if factory is None:
            installed = ", ".join(sorted(factories)) or "none"
            problems.append(
                ConfigProblem(
                    f"connectors.{network}",
                    f"no connector named {network!r} is installed (installed: {installed})",
                )
            )
            continue
        connector = factory()
        problems += config.validate_connector(network, connector.example_config)
        connectors[NetworkID(network)] = connector
    if problems:
        raise ConfigError(problems)
    return connectors


class App:
    def __init__(
        self,
        config: Config,
        *,
        factories: Mapping[str, ConnectorFactory] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.log = log or logging.getLogger("pontis")
        self.connectors = build_connectors(
            config, discover_connectors() if factories is None else factories
        )
        self.metrics = Metrics()
        self.ghost_names = GhostNames.from_config(config)
        self.retention = Retention.from_section(config.section("bridge").get("retention") or {})
        self.ready = False
        self._monitor: HealthMonitor | None = None
        self._housekeeping: Housekeeping | None = None
        self._contexts: dict[NetworkID, ConnectorContext] = {}
        self._runners: list[web.AppRunner] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.store: Store
        self.http: aiohttp.ClientSession
        self.matrix: MatrixAPI
        self.router: Router
        self._encryption: CryptoEngine | None = None

    async def start(self) -> None:
        cfg = self.config
        self.store = await Store.open(cfg.database_url, log=self.log.getChild("db"))
        self.audit = AuditLog(self.store)
        pickle_key = await self._load_pickle_key(required=cfg.encryption.allow)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=cfg.verify_ssl))
        self.matrix = MatrixAPI(
            homeserver_url=cfg.homeserver_address,
            appservice_id=cfg.appservice_id,
            as_token=cfg.as_token,
            bot_mxid=cfg.bot_mxid,
            http=self.http,
            log=self.log.getChild("matrix"),
        )
        permissions = Permissions.from_config(cfg)
        self.federation = FederationPolicy(
            cfg.federation_rules, cfg.domain, on_refusal=self._federation_refused
        )
        portals = PortalManager(
            store=self.store,
            matrix=self.matrix,
            domain=cfg.domain,
            bridge_id=cfg.appservice_id,
            networks={n: c.info for n, c in self.connectors.items()},
            log=self.log.getChild("portal"),
            ghost_names=self.ghost_names,
        )
        self.router = Router(
            store=self.store,
            matrix=self.matrix,
            portals=portals,
            connectors=self.connectors,
            permissions=permissions,
            metrics=self.metrics,
            retry=RetryPolicy(cfg.retry_attempts, cfg.retry_backoff, cfg.retry_max_backoff),
            queue_size=cfg.queue_size,
            domain=cfg.domain,
            log=self.log.getChild("router"),
            federation=self.federation,
        )
        commands = CommandProcessor(
            store=self.store,
            matrix=self.matrix,
            router=self.router,
            connectors=self.connectors,
            permissions=permissions,
            prefix=cfg.command_prefix,
            load_login=self.load_login,
            log=self.log.getChild("commands"),
        )
        self.router.command_handler = commands.handle
        if pickle_key is not None and cfg.encryption.allow:
            self._encryption = self._build_encryption(pickle_key)
        self._monitor = HealthMonitor(
            http=self.http,
            homeserver_url=cfg.homeserver_address,
            db=self.store.database,
            log=self.log.getChild("health"),
        )
        await self._start_http()
        await self._wait_for_homeserver()
        await self._monitor.start()
        await self.matrix.ensure_bot(cfg.bot_displayname, cfg.bot_avatar)
        if self._encryption is not None:
            await self._encryption.start()
            self.matrix.encryption = self._encryption
        # What networks handed over before a crash goes first, ahead of anything new.
        await self.router.remote.recover()
        for network, connector in self.connectors.items():
            await self._start_connector(network, connector)
        self.router.remote.started = True
        self.router.start()
        # Makes Synapse deliver anything it queued while we were down now, not after its backoff.
        try:
            rtt = await self.matrix.ping_homeserver()
            self.log.info("Homeserver reached us back in %d ms", rtt)
        except Exception as err:
            self.log.error(
                "The homeserver could not reach the bridge at %s: %s. Check appservice.address "
                "and that the registration is loaded.",
                cfg.appservice_address,
                err,
            )
        self._housekeeping = Housekeeping(
            Pruner(self.store.database),
            self.retention,
            {n: getattr(c, "kv_markers", ()) for n, c in self.connectors.items()},
            log=self.log.getChild("housekeeping"),
        )
        self._housekeeping.start()
        self.ready = True
        self.log.info(
            "Pontis %s ready with %s", __version__, ", ".join(self.connectors) or "no connectors"
        )

    async def _load_pickle_key(self, *, required: bool) -> PickleKey | None:
        """The pickle key, which also seals the secrets in logins (migrating plaintext ones).
        With encryption off it is optional: used if the variable or the file is there."""
        cfg = self.config
        try:
            pickle_key = load_pickle_key(
                cfg.encryption.pickle_key_file, os.environ, base_dir=cfg.pickle_key_base_dir
            )
        except PickleKeyMissing:
            if required:
                raise
            self.log.info("No pickle key: secrets in logins are stored as they are")
            return None
        self.store.secrets = pickle_key.secret_box()
        if sealed := await self.store.seal_login_secrets():
            self.log.info("Sealed the secrets of %d logins with the pickle key", sealed)
        return pickle_key

    def _build_encryption(self, pickle_key: PickleKey) -> CryptoEngine:
        # Imported here: with encryption off, the crypto libraries are never loaded.
        from bridge.crypto.engine import CryptoEngine

        cfg = self.config
        router = self.router
        return CryptoEngine(
            settings=cfg.encryption,
            pickle_key=pickle_key,
            db=self.store.database,
            http=self.http,
            homeserver_url=cfg.homeserver_address,
            as_token=cfg.as_token,
            bot_mxid=cfg.bot_mxid,
            is_ghost=lambda mxid: mxid != cfg.bot_mxid and router.is_any_puppet(mxid),
            is_portal=lambda room_id: _is_portal(router, room_id),
            kv_get=lambda key: self.store.kv_get(NetworkID(KV_NETWORK), key),
            kv_set=lambda key, value: self.store.kv_set(NetworkID(KV_NETWORK), key, value),
            log=self.log.getChild("crypto"),
        )

    async def _start_http(self) -> None:
        cfg = self.config
        app = web.Application(client_max_size=cfg.max_body_mib * 1024 * 1024)
        AppServiceAPI(
            hs_token=cfg.hs_token,
            store=self.store,
            metrics=self.metrics,
            on_stored=self.router.notify_inbox,
            on_advisory=self.router.note_key_counts,
            query_user=self.query_user,
            query_alias=self.query_alias,
            is_echo=self.router.is_own_echo,
            log=self.log.getChild("appservice"),
        ).add_routes(app)
        app.router.add_get("/_pontis/health", self._health)
        provisioning.install(app, self)  # /_pontis/provision/v1, if provisioning.enabled
        self._routes = ConnectorRoutes(self.connectors)
        self._routes.add_to(app)
        await self._serve(app, cfg.hostname, cfg.port)
        if cfg.metrics_enabled:
            metrics_app = web.Application()
            metrics_app.router.add_get("/metrics", self._metrics)
            host, _, port = cfg.metrics_listen.rpartition(":")
            await self._serve(metrics_app, host, int(port))

    async def _serve(self, app: web.Application, host: str, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runners.append(runner)
        self.log.info("Listening on %s:%d", host, port)

    async def _wait_for_homeserver(self) -> None:
        url = f"{self.config.homeserver_address.rstrip('/')}/_matrix/client/versions"
        delay = 1.0
        while True:
            try:
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    if resp.status == 200:
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as err:
                problem = str(err) or type(err).__name__
            self.log.warning(
                "Homeserver %s not reachable (%s); retrying in %.0f s",
                self.config.homeserver_address,
                problem,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)

    async def _start_connector(self, network: NetworkID, connector: NetworkConnector) -> None:
        ctx = ConnectorContext(
            network=network,
            config=self.config.connector_section(network),
            domain=self.config.domain,
            log=self.log.getChild(network),
            store=NetworkStore(self.store, network, self.router.portals.find_portal),
            http=self.http,
            metrics=self.metrics,
            core=self.router,
            routes=self._routes,
            federation=self.federation,
            ghost_names=self.ghost_names,
            bot_mxid=self.config.bot_mxid,
        )
        self._contexts[network] = ctx
        await connector.start(ctx)
        for login in await self.store.list_logins(network=network):
            await self.load_login(login)

    async def load_login(self, login: Login) -> None:
        connector = self.connectors.get(login.network)
        if connector is None:
            self.log.warning(
                "Login %s/%s belongs to a connector that is not enabled",
                login.network,
                login.login_id,
            )
            return
        client = await connector.load_login(login)
        self.router.add_client(login.network, client, login.user_mxid)
        task = asyncio.create_task(
            client.connect(), name=f"connect:{login.network}/{login.login_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def query_user(self, mxid: str) -> bool:
        for network in self.connectors:
            remote_id = self.ghost_names.parse(network, mxid)
            if remote_id is None:
                continue
            try:
                loaded = self.router.client_for(network, LoginID(""), None)
                info = await loaded.client.get_user_info(remote_id)
                await self.router.portals.ensure_ghost(network, remote_id, loaded.client, info)
            except BridgeError as err:
                self.log.info("User query for %s: %s", mxid, err)
                return False
            return True
        return False

    def _federation_refused(self, refused: Refusal, entry: str) -> None:
        self.metrics.errors.labels("federation", entry).inc()
        self.log.warning("Refused by the federation policy (%s): %s", entry, refused)
        self.audit.note_refusal(refused, entry)

    async def query_alias(self, alias: str) -> bool:
        """``#<network>_<escaped chat id>:<domain>``: bridge that chat into a room with this alias."""
        return await self.router.bridging.alias_query(alias) is not None

    async def _health(self, request: web.Request) -> web.Response:
        loaded = {f"{n}/{login or 'shared'}": c for (n, login), c in self.router.clients.items()}
        clients = {name: c.connected for name, c in loaded.items()}
        details = client_details({name: c.client for name, c in loaded.items()}, self.log)
        extra = {"encryption": self._encryption.health()} if self._encryption is not None else {}
        return await health_response(
            started=self.ready, clients=clients, monitor=self._monitor, extra=extra, details=details
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        await refresh_metrics(self.metrics, self.store, list(self.connectors), self.log)
        if self._monitor is not None:  # what /_pontis/health says, for the alert rules
            _, dependencies = await self._monitor.report()
            self.metrics.show_dependencies({n: d["reachable"] for n, d in dependencies.items()})
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def stop(self) -> None:
        self.ready = False
        for part in (self._housekeeping, self._monitor):
            if part is not None:
                await part.stop()
        if self._encryption is not None:
            await self._encryption.stop()
        if hasattr(self, "router"):
            await self.router.stop()
            for loaded in list(self.router.clients.values()):
                try:
                    await loaded.client.disconnect()
                except Exception:
                    self.log.exception("Disconnecting %s failed", loaded.network)
        for network, connector in self.connectors.items():
            ctx = self._contexts.get(network)
            if ctx is not None:
                await connector.stop()
                await ctx.cancel_background()
        for task in list(self._tasks):
            task.cancel()
        for runner in self._runners:
            await runner.cleanup()
        if hasattr(self, "http"):
            await self.http.close()
        if hasattr(self, "audit"):
            await self.audit.flush()  # refusals noted in the background, before the store closes
        if hasattr(self, "store"):
            await self.store.close()
