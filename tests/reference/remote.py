"""The reference network's remote side: a tiny chat server the test controls.

The bridge's reference connector talks to it over HTTP and a WebSocket, exactly as a real
connector talks to its network, so the tests exercise the connector contract end to end while
the bridge runs as a separate process that can be killed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class Action:
    """Something the bridge did on the remote network."""

    kind: str
    body: dict[str, Any]


@dataclass
class RemoteNetwork:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    chats: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    send_attempts: dict[str, int] = field(default_factory=dict)
    """idempotency key (the Matrix event id) → how many sends with it reached the network."""
    paused: bool = False
    """While True, every write answers 503 (a remote outage)."""
    refused: set[str] = field(default_factory=lambda: {"reject me"})
    """Message bodies the network refuses for good (400), until a test takes them out."""
    _sockets: set[web.WebSocketResponse] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _by_key: dict[str, str] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/users/{user}", self._user)
        app.router.add_get("/chats/{chat}", self._chat)
        app.router.add_post("/actions/{kind}", self._action)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- test side ---------------------------------------------------------------------------

    async def wait_connected(self, timeout: float = 20) -> None:
        await self._wait(lambda: bool(self._sockets), timeout, "the bridge to connect")

    async def push(self, event: dict[str, Any]) -> None:
        """Send an event from the remote network to the bridge."""
        await self.wait_connected()
        for ws in list(self._sockets):
            await ws.send_json(event)

    async def wait_action(self, predicate: Callable[[Action], bool], timeout: float = 20) -> Action:
        found: list[Action] = []

        def check() -> bool:
            found[:] = [a for a in self.actions if predicate(a)]
            return bool(found)

        await self._wait(
            check,
            timeout,
            f"an action; seen: {[(a.kind, a.body.get('body')) for a in self.actions[-10:]]}",
        )
        return found[0]

    async def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(check), timeout)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- bridge side -------------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=5)
        await ws.prepare(request)
        self._sockets.add(ws)
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(ws)
        return ws

    async def _user(self, request: web.Request) -> web.Response:
        user = self.users.get(request.match_info["user"])
        if user is None:
            return web.json_response({"error": "no such user"}, status=404)
        return web.json_response(user)

    async def _chat(self, request: web.Request) -> web.Response:
        chat = self.chats.get(request.match_info["chat"])
        if chat is None:
            return web.json_response({"error": "no such chat"}, status=404)
        return web.json_response(chat)

    async def _action(self, request: web.Request) -> web.Response:
        if self.paused:
            return web.json_response({"error": "down for maintenance"}, status=503)
        kind = request.match_info["kind"]
        body = await request.json()
        result: dict[str, Any] = {}
        if body.get("body") in self.refused:
            return web.json_response({"error": "message refused by policy"}, status=400)
        if kind == "send":
            key = body["idempotency_key"]
            self.send_attempts[key] = self.send_attempts.get(key, 0) + 1
            if key not in self._by_key:
                self._by_key[key] = f"r{next(self._ids)}"
                if "media" in body:
                    body["media"]["data"] = base64.b64decode(body["media"]["data"])
                self.actions.append(Action(kind, body))
            result["id"] = self._by_key[key]
        else:
            self.actions.append(Action(kind, body))
        await self._notify()
        return web.json_response(result)
