"""``pontis check`` for encryption: the pickle key, MSC4190, and what transactions carry.

With the bridge running, its ``/_pontis/health`` says what its own delivery probe found. With
the bridge down, a stand-in takes its port for a few seconds: the bridge's own appservice code,
storing every transaction in the bridge's inbox (so nothing is lost: the bridge handles it when
it starts), while the check sends a probe to a throw-away device of the bot and reads what comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from bridge.core.appservice import AppServiceAPI
from bridge.core.config import Config
from bridge.core.metrics import Metrics
from bridge.core.pickle_key import PickleKeyError, load_pickle_key
from bridge.crypto.probe import PROBE_TYPE, DeliveryProbe
from bridge.portal.models import InboxItem, InboxRow
from bridge.portal.store import Store

CHECK_DEVICE = "PONTISCHECK"
PROBE_TIMEOUT = 30.0
HEALTH_TIMEOUT = 40.0


async def check_encryption(config: Config) -> list[str]:
    if not config.encryption.allow:
        return []
    problems: list[str] = []
    try:
        load_pickle_key(
            config.encryption.pickle_key_file, os.environ, base_dir=config.pickle_key_base_dir
        )
    except PickleKeyError as err:
        problems.append(f"encryption.pickle_key_file: {err}")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        health = await _bridge_health(http, config)
        if health is not None:
            return problems + await _running_bridge(http, config, health)
        hs = _Homeserver(http, config)
        try:
            status = await hs.request(
                "PUT", f"/v3/devices/{CHECK_DEVICE}", {"display_name": "check"}
            )
        except aiohttp.ClientError as err:
            return [*problems, f"homeserver.address: cannot reach the homeserver: {err}"]
        if status >= 300:
            return [
                *problems,
                f"homeserver: the appservice cannot create its bot's device (MSC4190, Synapse "
                f"1.141 or newer): PUT /devices answered HTTP {status}",
            ]
        try:
            probe = await _probe(hs, config)
        finally:
            await hs.request("DELETE", f"/v3/devices/{CHECK_DEVICE}", {})
        return problems + probe


async def _bridge_health(http: aiohttp.ClientSession, config: Config) -> dict[str, Any] | None:
    url = f"http://{config.hostname}:{config.port}/_pontis/health"
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
        async with http.get(url) as resp:
            body = await resp.json(content_type=None)
            return body if isinstance(body, dict) else None
    return None


async def _running_bridge(
    http: aiohttp.ClientSession, config: Config, health: dict[str, Any]
) -> list[str]:
    """The bridge's own probe result; waits for it while it is still out."""
    deadline = asyncio.get_running_loop().time() + HEALTH_TIMEOUT
    while True:
        encryption = health.get("encryption")
        if not isinstance(encryption, dict):
            return ["encryption: the running bridge has encryption off; restart it to apply"]
        if encryption.get("probe") == "done":
            return [str(p) for p in encryption.get("problems") or []]
        if asyncio.get_running_loop().time() > deadline:
            return ["encryption: the running bridge's delivery probe has not come back yet"]
        await asyncio.sleep(1)
        health = await _bridge_health(http, config) or health


class _Homeserver:
    def __init__(self, http: aiohttp.ClientSession, config: Config) -> None:
        self._http = http
        self._base = config.homeserver_address.rstrip("/") + "/_matrix/client"
        self._headers = {"Authorization": f"Bearer {config.as_token}"}
        self._bot = config.bot_mxid
        self.appservice_id = config.appservice_id

    async def request(self, method: str, path: str, body: dict[str, Any]) -> int:
        url = f"{self._base}{path}?user_id={quote(self._bot)}"
        async with self._http.request(method, url, json=body, headers=self._headers) as resp:
            await resp.read()
            return resp.status


async def _probe(hs: _Homeserver, config: Config) -> list[str]:
    probe = DeliveryProbe()

    def observe(rows: Sequence[InboxRow | InboxItem]) -> None:
        for row in rows:
            probe.observe(row.kind, row.payload)

    async def nobody(_: str) -> bool:
        return False

    store = await Store.open(config.database_url)
    try:
        app = web.Application(client_max_size=config.max_body_mib * 1024 * 1024)
        # The bridge's own appservice code on the bridge's own store: every transaction is kept
        # in the inbox before the 200, and the bridge handles it when it starts. (Answering with
        # an error instead would make the homeserver retry the oldest transaction for ever and
        # never send the probe.)
        AppServiceAPI(
            hs_token=config.hs_token, store=store, metrics=Metrics(), on_stored=observe,
            on_advisory=observe,
            query_user=nobody, query_alias=nobody, is_echo=lambda _: False,
            log=logging.getLogger("pontis.check"),
        ).add_routes(app)  # fmt: skip
        return await _serve_probe(app, hs, config, probe)
    finally:
        await store.close()


async def _serve_probe(
    app: web.Application, hs: _Homeserver, config: Config, probe: DeliveryProbe
) -> list[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.hostname, config.port).start()
    except OSError as err:
        await runner.cleanup()
        return [f"appservice.port: cannot listen on {config.hostname}:{config.port}: {err}"]

    async def send() -> None:
        # The ping also makes Synapse retry at once what failed before we listened, so that
        # it holds the appservice as up again and passes to-device events on.
        await hs.request("POST", f"/v1/appservice/{quote(hs.appservice_id)}/ping", {})
        await hs.request(
            "PUT",
            f"/v3/sendToDevice/{PROBE_TYPE}/{secrets.token_hex(8)}",
            {"messages": {config.bot_mxid: {CHECK_DEVICE: probe.content()}}},
        )

    try:
        await probe.run(send, PROBE_TIMEOUT)
    finally:
        await runner.cleanup()
    return probe.problems()
