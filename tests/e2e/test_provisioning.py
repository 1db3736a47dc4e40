"""The provisioning API of the real bridge process against real Synapse: a user's own access
token is checked with the homeserver, a forged one or one used for someone else is refused,
and the shared secret acts for the user it names (issue #11, item 5). The rest of the API is
tested against its OpenAPI document in tests/provision.

Restarts the shared hub's bridge with provisioning on (through ``PONTIS_*`` overrides) and
again without it afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import DOMAIN, Hub

pytestmark = pytest.mark.e2e

SECRET = "e2e-provisioning-secret-0123456789abcdef"
ENV = {"PONTIS_PROVISIONING_ENABLED": "true", "PONTIS_PROVISIONING_SHARED_SECRET": SECRET}


@pytest.fixture
async def provisioning(hub: Hub) -> AsyncIterator[str]:
    hub.bridge.env.update(ENV)
    await hub.restart_bridge(kill=False)
    try:
        yield f"http://127.0.0.1:{hub.as_port}/_pontis/provision/v1"
    finally:
        for key in ENV:
            hub.bridge.env.pop(key, None)
        await hub.restart_bridge(kill=False)


async def _get(url: str, token: str | None, **params: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            url, headers=headers, params=params, timeout=aiohttp.ClientTimeout(total=20)
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_users_synapse_token_and_the_shared_secret(hub: Hub, provisioning: str) -> None:
    alice = await hub.user("prov")
    status, me = await _get(f"{provisioning}/whoami", alice.token)
    assert status == 200, me
    assert (me["user_id"], me["level"]) == (alice.mxid, "user")
    assert "reference" in [n["id"] for n in me["networks"]]

    status, body = await _get(f"{provisioning}/whoami", alice.token + "x")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await _get(f"{provisioning}/whoami", alice.token, user_id=f"@admin:{DOMAIN}")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await _get(f"{provisioning}/dead-letters", alice.token)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await _get(f"{provisioning}/whoami", None)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")

    status, me = await _get(f"{provisioning}/whoami", SECRET, user_id=alice.mxid)
    assert (status, me["user_id"]) == (200, alice.mxid)
    status, body = await _get(f"{provisioning}/whoami", SECRET, user_id="@mallory:evil.test")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, document = await _get(f"{provisioning}/openapi.json", None)
    assert status == 200 and document["openapi"].startswith("3.1")
