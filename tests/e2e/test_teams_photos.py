"""A Teams person's profile photo on their Matrix ghost, against real Synapse and the Graph
emulator: a photo removed in Teams is removed from the ghost too.

A person of their own (Lidia, added to the tenant here): the hub looks at a photo at most once
an hour, so a photo another test gives Nestor must not meet one this test removed.
"""

from __future__ import annotations

import base64
import time

import pytest

from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.graph import RELAY_UPN
from tests.e2e.test_teams import Teams, _body
from tests.e2e.test_teams import adele as adele

pytestmark = pytest.mark.e2e
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def _photo(hub: Hub, user: str, data: bytes | None) -> None:
    url = f"{hub.graph.base}/_emulator/users/{user}/photo"
    method = "PUT" if data is not None else "DELETE"
    headers = {"Content-Type": "image/png"}
    async with hub.graph.http.request(method, url, data=data, headers=headers) as response:
        assert response.status in (200, 204), await response.text()


async def test_a_photo_removed_in_teams_leaves_the_ghost_without_an_avatar(
    hub: Hub, adele: Teams
) -> None:
    tenant = hub.graph.tenant_id
    lidia = await hub.graph.control(
        "POST",
        f"/tenants/{tenant}/users",
        {"displayName": f"Lidia Holloway {int(time.time())}", "password": "lidia-pw"},
    )
    await _photo(hub, lidia["id"], PNG)
    members = [hub.graph.user("adele")["id"], lidia["id"], RELAY_UPN]
    chat = await hub.graph.control(
        "POST", "/chats", {"chatType": "group", "topic": "Photos", "members": members}
    )
    path = f"/chats/{chat['id']}/messages"
    await hub.graph.control("POST", path, {"from": lidia["id"], "content": "<p>My photo</p>"})
    room_id = await adele.user.wait_for_invite(timeout=30)
    await adele.user.join(room_id)
    await adele.user.wait_for(lambda e: _body(e) == "My photo", room_id=room_id, timeout=30)
    ghost = f"@teams_{lidia['id']}:{DOMAIN}"
    profile = await adele.user.get_profile(ghost)
    assert str(profile.get("avatar_url", "")).startswith("mxc://"), profile

    # Lidia removes her photo in Teams. A new process looks at it on her next message (the
    # same one would within the hour): Graph answers 404, and the ghost's avatar goes.
    await _photo(hub, lidia["id"], None)
    await hub.restart_bridge(kill=False)
    await hub.graph.control("POST", path, {"from": lidia["id"], "content": "<p>No photo</p>"})
    await adele.user.wait_for(lambda e: _body(e) == "No photo", room_id=room_id, timeout=60)
    profile = await adele.user.get_profile(ghost)
    assert not profile.get("avatar_url"), profile
    assert profile.get("displayname", "").startswith("Lidia Holloway"), profile
