"""The Graph emulator for the end-to-end hub: Microsoft Graph and the identity platform on a
loopback port, in the test process, seeded with one tenant, its app, people and a relay account.

It runs in-process (an aiohttp app on the session's loop) so tests can read its request log and
notification deliveries directly; the bridge talks to it over HTTP like to Graph.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.test_utils import TestServer

from graph_emulator import EmulatorConfig, create_app
from graph_emulator.services import SERVICES, Services
from tests.teams_emulator.seeded import SeededEmulator
from tests.teams_emulator.tls import TestCA, add_https_site

TENANT = "Contoso"
DOMAIN = "contoso.onmicrosoft.com"
RELAY_UPN = f"pontis.relay@{DOMAIN}"
RELAY_PASSWORD = "relay-pw-for-tests"
SERVICE_CONTACT = "the Contoso service desk (help@contoso.example)"

SEED: dict[str, Any] = {
    "tenants": [
        {
            "displayName": TENANT,
            "apps": [{"displayName": "Pontis", "clientSecret": "app-secret-for-tests"}],
            "users": [
                {"displayName": "Adele Vance", "password": "adele-pw"},
                {"displayName": "Alex Wilber", "password": "alex-pw"},
                {"displayName": "Megan Bowen", "password": "megan-pw"},
                # Never logs in: a chat of his with Alex is one the bridge watches nobody in.
                {"displayName": "Nestor Wilke", "password": "nestor-pw"},
                # Never logs in either: a Teams person who stays a ghost whatever ran before.
                {"displayName": "Patti Fernandez", "password": "patti-pw"},
                {"displayName": "Pontis Relay", "userPrincipalName": RELAY_UPN,
                 "password": RELAY_PASSWORD},
            ],
        }
    ]
}  # fmt: skip


class GraphEmulator(SeededEmulator):
    def __init__(self) -> None:
        self.config = EmulatorConfig(
            retry_delays=(0.2, 0.5),
            validation_timeout=5.0,
            delivery_timeout=3.0,
            sweep_interval=0.2,
            device_code_interval=1,
        )
        self._server: TestServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self.seeded: dict[str, Any] = {}
        self._tls_dir = Path(tempfile.mkdtemp(prefix="pontis-graph-tls-"))
        self.ca_file = ""
        self.authority = ""

    async def start(self) -> None:
        app = create_app(self.config)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        # MSAL signs in over https only: the identity platform on an https port too, with a
        # test CA the bridge trusts through connectors.teams.ca_file.
        ca = TestCA.create()
        self.ca_file = str(ca.write_bundle(self._tls_dir / "ca.pem"))
        assert self._server.runner is not None
        self.authority = await add_https_site(self._server.runner, ca.server_context(self._tls_dir))
        self._session = aiohttp.ClientSession()
        self.seeded = await self.control("POST", "/seed", SEED)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._server is not None:
            await self._server.close()
        shutil.rmtree(self._tls_dir, ignore_errors=True)

    @property
    def services(self) -> Services:
        assert self._server is not None
        return self._server.app[SERVICES]

    @property
    def base(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    # --- the seeded tenant -----------------------------------------------------------------

    def teams_section(self, public_url: str) -> dict[str, Any]:
        """``connectors.teams`` for a bridge whose HTTP port is ``public_url``."""
        return {
            "enabled": True,
            "tenants": [
                {
                    "tenant_id": self.tenant_id,
                    "client_id": self.app["clientId"],
                    "client_secret": self.app["clientSecret"],
                    "relay_username": RELAY_UPN,
                    "relay_password": RELAY_PASSWORD,
                    "display_name": TENANT,
                }
            ],
            "graph_url": self.graph_url,
            "authority": self.authority,
            "ca_file": self.ca_file,
            "webhook": {"public_url": public_url},
            # Teams users reach Matrix users by writing to the relay (test_teams_service_chat).
            "service_chat": {"enabled": True, "contact": SERVICE_CONTACT},
        }

    # --- acting as Teams users -------------------------------------------------------------

    async def new_chat(self, topic: str, *first_names: str, relay: bool = True) -> str:
        members = [self.user(n)["id"] for n in first_names]
        if relay:
            members.append(RELAY_UPN)
        chat = await self.control(
            "POST", "/chats", {"chatType": "group", "topic": topic, "members": members}
        )
        return str(chat["id"])

    async def post_as(self, first_name: str, chat_id: str, content: str, **extra: Any) -> str:
        body = {"from": self.user(first_name)["id"], "content": content, **extra}
        message = await self.control("POST", f"/chats/{chat_id}/messages", body)
        return str(message["id"])

    async def act_as(
        self, first_name: str, chat_id: str, message_id: str, action: str, **body: Any
    ) -> None:
        """``action``: setReaction, unsetReaction, softDelete (``PATCH`` edits: see edit_as)."""
        path = f"/chats/{chat_id}/messages/{message_id}/{action}"
        await self.control("POST", path, {"as": self.user(first_name)["id"], **body})

    async def edit_as(self, first_name: str, chat_id: str, message_id: str, content: str) -> None:
        path = f"/chats/{chat_id}/messages/{message_id}"
        await self.control("PATCH", path, {"as": self.user(first_name)["id"], "content": content})

    async def messages(self, chat_id: str) -> list[dict[str, Any]]:
        """The chat's messages, oldest first, as Graph shows them (read with an app token)."""
        token = await self.control("POST", "/tokens", {"clientId": self.app["clientId"]})
        assert self._session is not None
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        url = f"{self.graph_url}/chats/{chat_id}/messages?$top=50"
        async with self._session.get(url, headers=headers) as response:
            body = await response.json()
            assert response.status == 200, body
        return list(reversed(body["value"]))

    def requests(self, path_glob: str, method: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.services.wire.requests
            if fnmatch.fnmatchcase(r["path"], path_glob)
            and (method is None or r["method"] == method)
        ]

    async def reads(self, path_glob: str) -> int:
        """GETs of paths matching ``path_glob`` since the start, counted by the emulator
        (``/_emulator/requests/count``; its request log is bounded, the counter is not)."""
        answer = await self.control("GET", f"/requests/count?path={quote(path_glob)}&method=GET")
        return int(answer["count"])

    async def graph_as_app(self, method: str, path: str, body: object | None = None) -> Any:
        """A Graph call with the seeded app's token (what another program of the tenant does)."""
        token = await self.control("POST", "/tokens", {"clientId": self.app["clientId"]})
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        async with self.http.request(
            method, self.graph_url + path, json=body, headers=headers
        ) as response:
            data = await response.json(content_type=None) if response.status != 204 else None
            assert response.status < 300, (method, path, response.status, data)
            return data
