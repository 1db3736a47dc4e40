"""Fixtures: a running emulator on a random loopback port, a seeded tenant, SDK clients for it,
and a webhook receiver standing in for the bridge's notification endpoint."""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from msgraph import GraphServiceClient

from bridge.teams.protocol import OAuthTokenProvider, graph_client
from graph_emulator import EmulatorConfig, create_app
from graph_emulator.services import SERVICES, Services
from tests.teams_emulator.seeded import SeededEmulator
from tests.teams_emulator.tls import TestCA, add_https_site

# Scopes the bridge asks for when it signs a user in.
USER_SCOPES = [
    "Chat.ReadWrite",
    "ChatMessage.Send",
    "User.Read",
    "ChannelMessage.Send",
    "ChannelMessage.Read.All",
]

SEED: dict[str, Any] = {
    "tenants": [
        {
            "displayName": "Contoso",
            "apps": [{"displayName": "Pontis", "clientSecret": "s3cret"}],
            "users": [
                {"displayName": "Adele Vance", "password": "adele-pw"},
                {"displayName": "Alex Wilber", "password": "alex-pw"},
                {"displayName": "Megan Bowen", "password": "megan-pw"},
            ],
            "chats": [
                {
                    "chatType": "group",
                    "topic": "Launch",
                    "members": [
                        "adele.vance@contoso.onmicrosoft.com",
                        "alex.wilber@contoso.onmicrosoft.com",
                    ],
                },
                {
                    "chatType": "oneOnOne",
                    "members": [
                        "adele.vance@contoso.onmicrosoft.com",
                        "megan.bowen@contoso.onmicrosoft.com",
                    ],
                },
            ],
            "teams": [
                {
                    "displayName": "Mark 8",
                    "members": [
                        "adele.vance@contoso.onmicrosoft.com",
                        "alex.wilber@contoso.onmicrosoft.com",
                    ],
                }
            ],
        }
    ]
}


@dataclass
class Emulator(SeededEmulator):
    server: TestServer
    services: Services
    session: aiohttp.ClientSession
    seeded: dict[str, Any] = field(default_factory=dict)
    _http: list[httpx.AsyncClient] = field(default_factory=list)
    authority: str = ""
    """The identity platform over https (MSAL's only scheme), trusted through ``ca_file``."""
    ca_file: str = ""

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def http(self) -> aiohttp.ClientSession:
        return self.session

    # -- SDK clients ----------------------------------------------------------------------------

    def _client(self, provider: OAuthTokenProvider) -> GraphServiceClient:
        http = httpx.AsyncClient()
        self._http.append(http)
        return graph_client(self.graph_url, provider, http)

    def app_provider(self, secret: str | None = None) -> OAuthTokenProvider:
        return OAuthTokenProvider.client_credentials(
            self.session,
            self.base,
            self.tenant_id,
            self.app["clientId"],
            secret or self.app["clientSecret"],
            allowed_hosts=["127.0.0.1"],
        )

    def app_client(self) -> GraphServiceClient:
        return self._client(self.app_provider())

    def user_provider(self, first_name: str) -> OAuthTokenProvider:
        user = self.user(first_name)
        return OAuthTokenProvider.password(
            self.session,
            self.base,
            self.tenant_id,
            self.app["clientId"],
            user["userPrincipalName"],
            f"{first_name.lower()}-pw",
            USER_SCOPES,
            allowed_hosts=["127.0.0.1"],
        )

    def user_client(self, first_name: str) -> GraphServiceClient:
        return self._client(self.user_provider(first_name))

    async def post_as(
        self, first_name: str, chat_id: str, content: str, **extra: Any
    ) -> dict[str, Any]:
        """A Teams user posts from their Teams client (through the control API)."""
        body = {"from": self.user(first_name)["id"], "content": content, **extra}
        result: dict[str, Any] = await self.control("POST", f"/chats/{chat_id}/messages", body)
        return result

    def requests(self, path_glob: str, method: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.services.wire.requests
            if fnmatch.fnmatchcase(r["path"], path_glob)
            and (method is None or r["method"] == method)
        ]

    async def close(self) -> None:
        for http in self._http:
            await http.aclose()


def fast_config() -> EmulatorConfig:
    return EmulatorConfig(
        retry_delays=(0.05, 0.1, 0.2),
        validation_timeout=2.0,
        delivery_timeout=1.0,
        sweep_interval=0.05,
        device_code_interval=1,
    )


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[Emulator]:
    app = create_app(fast_config())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession()
    emu = Emulator(server, app[SERVICES], session)
    ca = TestCA.create()
    emu.ca_file = str(ca.write_bundle(tmp_path / "ca.pem"))
    assert server.runner is not None
    emu.authority = await add_https_site(server.runner, ca.server_context(tmp_path))
    emu.seeded = await emu.control("POST", "/seed", SEED)
    try:
        yield emu
    finally:
        await emu.close()
        await session.close()
        await server.close()


@dataclass
class Receiver:
    """The bridge's webhook endpoint: echoes validation tokens, records notifications, and can
    be told to fail the next N deliveries."""

    server: TestServer
    validations: list[str] = field(default_factory=list)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_next: int = 0
    failures: int = 0
    echo: bool = True

    def url(self, path: str = "/notify") -> str:
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.Response:
        if "validationToken" in request.query:
            token = request.query["validationToken"]
            self.validations.append(token)
            return web.Response(text=token if self.echo else "nope", content_type="text/plain")
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failures += 1
            return web.Response(status=500)
        self.received.append((request.path, await request.json()))
        return web.Response(status=202)

    def items(self, path: str = "/notify") -> list[dict[str, Any]]:
        return [item for p, body in self.received if p == path for item in body["value"]]

    async def wait_for(
        self, count: int, path: str = "/notify", timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.items(path)) < count:
                await asyncio.sleep(0.01)
        return self.items(path)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    holder: list[Receiver] = []

    async def handle(request: web.Request) -> web.Response:
        return await holder[0].handle(request)

    app.router.add_post("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    holder.append(Receiver(server))
    try:
        yield holder[0]
    finally:
        await server.close()
