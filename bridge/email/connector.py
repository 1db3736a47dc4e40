"""The email connector: a mail gateway behind the agency's mail server."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.core import (
    Capabilities,
    ConnectorContext,
    LoginFlow,
    LoginProcess,
    NetworkClient,
    NetworkInfo,
    NotSupported,
    PermanentError,
)
from bridge.email.client import EmailGateway
from bridge.email.config import EXAMPLE_CONFIG, EmailConfig
from bridge.email.ids import NETWORK
from bridge.email.inbound import start_listener
from bridge.email.outbound import Relay
from bridge.email.store import EmailStore
from bridge.portal.models import Login


class EmailConnector:
    info = NetworkInfo(id=NETWORK, display_name="Email")
    example_config = EXAMPLE_CONFIG

    def __init__(self) -> None:
        self._listener: asyncio.Server | None = None
        self._relay: Relay | None = None

    def capabilities(self) -> Capabilities:
        return Capabilities(replies=True, threads=True, media=True, html=True)

    async def start(self, ctx: ConnectorContext) -> None:
        cfg = EmailConfig.from_section(ctx.config)
        if problems := cfg.problems():
            raise PermanentError("; ".join(problems))
        store = EmailStore(ctx.store.database)
        await store.upgrade()
        self._relay = Relay(cfg)
        gateway = EmailGateway(ctx, cfg, store, self._relay)
        ctx.add_client(gateway)
        try:
            self._listener = await start_listener(gateway, cfg, ctx.log)
        except OSError as err:
            where = f"{cfg.listen_host}:{cfg.listen_port}"
            message = f"connectors.email.inbound: cannot listen on {where}: {err}"
            raise PermanentError(message) from err
        ctx.log.info("Receiving mail for %s over %s on %s:%s",
                     cfg.domain, cfg.protocol.upper(), cfg.listen_host, cfg.listen_port)  # fmt: skip
        ctx.background(gateway.connect(), name="relay-check")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
        if self._relay is not None:
            await self._relay.close()  # QUIT the sessions kept open for the next mails

    async def check(self, section: dict[str, Any]) -> list[str]:
        cfg = EmailConfig.from_section(section)
        problems = cfg.problems()
        if (relay := await Relay(cfg).check()) is not None:
            problems.append(f"connectors.email.outbound: {relay}")
        return problems

    def login_flows(self) -> list[LoginFlow]:
        return []  # Matrix users need no mailbox: they write from their portals' addresses

    async def start_login(self, user_mxid: str, flow_id: str) -> LoginProcess:
        raise NotSupported("email has no logins", user_message="Email needs no login.")

    async def load_login(self, login: Login) -> NetworkClient:
        raise NotSupported(f"unexpected email login {login.login_id}")
