"""``/_pontis/health`` of the real bridge is not ready while its homeserver is away, and ready
again once it is back (issue #10, item 4); metrics show the backlog per direction and network.

Stops the shared hub's Synapse for a few seconds and starts it again in ``finally``.
"""

from __future__ import annotations

import asyncio
import re
import time
from importlib.metadata import version
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Hub

pytestmark = pytest.mark.e2e


async def _health(hub: Hub) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{hub.as_port}/_pontis/health"
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status, await resp.json()


async def _until_status(hub: Hub, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got, body = await _health(hub)
        if got == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"health still {got} after {timeout} s: {body}")
        await asyncio.sleep(0.2)


async def test_not_ready_while_the_homeserver_is_away(hub: Hub) -> None:
    status, body = await _health(hub)
    assert status == 200, body
    assert body["dependencies"]["homeserver"]["reachable"] is True
    assert body["dependencies"]["database"]["reachable"] is True
    assert body["clients"]["xmpp/shared"] is True  # the old fields are still there

    await hub.synapse.stop()
    try:
        # The bridge probes every 10 s; a refused connection fails at once.
        body = await _until_status(hub, 503, timeout=15)
        assert body["live"] is True and body["ready"] is False
        assert body["dependencies"]["homeserver"]["reachable"] is False
        assert body["dependencies"]["database"]["reachable"] is True
        # The alert rules (deploy/prometheus) read the same from the metrics.
        down = await _metrics(hub)
        assert 'pontis_dependency_reachable{dependency="homeserver"} 0.0' in down
        assert 'pontis_dependency_reachable{dependency="database"} 1.0' in down
    finally:
        await hub.synapse.start()
    # While it fails the bridge probes every 2 s.
    body = await _until_status(hub, 200, timeout=15)
    assert body["ready"] is True

    metrics = await _metrics(hub)
    assert 'pontis_dependency_reachable{dependency="homeserver"} 1.0' in metrics
    for network in ("reference", "xmpp", "email", "teams"):
        for direction in ("matrix_to_network", "network_to_matrix"):
            labels = f'direction="{direction}",network="{network}"'
            assert re.search(rf"^pontis_oldest_pending_seconds\{{{labels}\}} ", metrics, re.M)
            assert re.search(rf"^pontis_dead_letters_kept\{{{labels}\}} ", metrics, re.M)
    assert f'version="{version("pontis")}"' in re.findall(r"^pontis_build_info.*", metrics, re.M)[0]
    assert "process_resident_memory_bytes" in metrics


async def _metrics(hub: Hub) -> str:
    url = f"http://127.0.0.1:{hub.metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.text()
