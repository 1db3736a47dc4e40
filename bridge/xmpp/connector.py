"""The XMPP connector: XEP-0114 components serving every Matrix user (issue #3), one per
agency XMPP domain if there are several (issue #14, components.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from bridge.core import (
    Capabilities,
    ConnectorContext,
    LoginFlow,
    LoginProcess,
    NetworkClient,
    NetworkInfo,
    NotSupported,
)
from bridge.core.config import ConfigError
from bridge.portal.models import Login
from bridge.xmpp.client import XmppClient
from bridge.xmpp.components import XmppClients
from bridge.xmpp.config import EXAMPLE_CONFIG, component_configs
from bridge.xmpp.ids import NETWORK
from bridge.xmpp.link import LinkMetrics
from bridge.xmpp.protocol.handshake import component_handshake
from bridge.xmpp.routing import ComponentRoutes
from bridge.xmpp.store import XmppStore


class XmppConnector:
    info = NetworkInfo(id=NETWORK, display_name="XMPP", url="https://xmpp.org")
    example_config = EXAMPLE_CONFIG
    # stanza-id ↔ message id (ids.stanza_id_key and reverse); who a private conversation is
    # with (private.identity_key); the avatar hash a ghost last got (avatars.avatar_key).
    kv_markers = ("sid:", "sid>:", "pm:", "avatar:")

    def __init__(self) -> None:
        self.client: XmppClients | None = None
        self._metrics: tuple[CollectorRegistry, LinkMetrics] | None = None

    def capabilities(self) -> Capabilities:
        return Capabilities(replies=True, threads=False, media=True, html=True)

    async def start(self, ctx: ConnectorContext) -> None:
        configs = component_configs(ctx.config)
        for cfg in configs:
            if cfg.rooms_domain:  # whoever joins a hosted room is checked as they join
                ctx.federation.host(ctx.network, cfg.rooms_domain)
        store = XmppStore(ctx.store.database)
        await store.upgrade()
        routes = ComponentRoutes(configs)
        clients = [XmppClient(ctx, cfg, store, routes.jid_for) for cfg in configs]
        self.client = XmppClients(ctx, routes, clients)
        self._metrics = (ctx.metrics.registry, LinkMetrics(self.client.links))
        self._metrics[0].register(self._metrics[1])
        ctx.add_client(self.client)
        await self.client.connect()

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.disconnect()
        if self._metrics is not None:
            registry, collector = self._metrics
            registry.unregister(collector)
            self._metrics = None

    async def check(self, section: dict[str, Any]) -> list[str]:
        try:
            configs = component_configs(section)
        except ConfigError as err:
            return [str(problem) for problem in err.problems]
        problems = []
        for index, cfg in enumerate(configs):
            at = f"components[{index - 1}]." if index else ""
            keys = ((cfg.jid, f"{at}jid" if index else "component"),
                    (cfg.rooms_domain, f"{at}rooms_domain"))  # fmt: skip
            for domain, key in keys:
                if domain and (
                    problem := await component_handshake(cfg.host, cfg.port, domain, cfg.secret)
                ):
                    problems.append(f"connectors.xmpp.{key}: {domain}: {problem}")
        return problems

    def login_flows(self) -> list[LoginFlow]:
        return []  # Matrix users need no XMPP account: they speak as JIDs of the component

    async def start_login(self, user_mxid: str, flow_id: str) -> LoginProcess:
        raise NotSupported("xmpp has no logins", user_message="XMPP needs no login.")

    async def load_login(self, login: Login) -> NetworkClient:
        raise NotSupported(f"unexpected xmpp login {login.login_id}")
