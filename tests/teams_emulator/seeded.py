"""Talking to a running, seeded emulator: shared by the emulator's own tests and the e2e hub."""

from __future__ import annotations

from typing import Any

import aiohttp


class SeededEmulator:
    """The control API and what the seed created. Subclasses say where the emulator is."""

    seeded: dict[str, Any]

    @property
    def base(self) -> str:
        raise NotImplementedError

    @property
    def http(self) -> aiohttp.ClientSession:
        raise NotImplementedError

    @property
    def graph_url(self) -> str:
        return self.base + "/v1.0"

    async def control(self, method: str, path: str, body: object | None = None) -> Any:
        async with self.http.request(method, self.base + "/_emulator" + path, json=body) as resp:
            data = await resp.json(content_type=None) if resp.status != 204 else None
            assert resp.status < 300, (method, path, resp.status, data)
            return data

    @property
    def tenant_id(self) -> str:
        return str(self.seeded["tenants"][0]["id"])

    @property
    def app(self) -> dict[str, str]:
        return dict(self.seeded["tenants"][0]["apps"][0])

    def user(self, first_name: str) -> dict[str, Any]:
        users = self.seeded["tenants"][0]["users"]
        return next(u for u in users if u["givenName"].lower() == first_name.lower())

    def chat(self, index: int) -> str:
        return str(self.seeded["tenants"][0]["chats"][index]["id"])
