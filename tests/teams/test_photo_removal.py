"""A Teams photo that is removed leaves the ghost without an avatar, once; Graph away leaves
the avatar as it is. Against the Graph emulator, a real store and the core's ghost handling
(``PortalManager.ensure_ghost``); only the homeserver is played by :class:`Homeserver`."""

from __future__ import annotations

import base64
import logging
from typing import Any
from unittest.mock import MagicMock

import aiohttp

from bridge.core.ids import RemoteUserID
from bridge.core.portals import PortalManager
from bridge.portal.models import Ghost
from bridge.portal.store import NetworkStore, Store
from bridge.teams.avatars import Photos
from bridge.teams.config import TeamsConfig
from bridge.teams.ids import NETWORK
from bridge.teams.tenant import TenantLink
from tests.e2e.graph import GraphEmulator
from tests.teams.test_catch_up import graph  # noqa: F401 (fixture)

LOG = logging.getLogger("test.teams.photo_removal")
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class Homeserver:
    """What ``ensure_ghost`` asks of Matrix; ``profiles`` is every profile change, in order."""

    bot_mxid = "@pontis:hub.test"

    def __init__(self) -> None:
        self.profiles: list[tuple[str, str | None, str | None]] = []

    async def ensure_registered(self, mxid: str) -> None:
        pass

    async def upload(self, sender: str, data: bytes, mimetype: str, filename: str) -> str:
        return f"mxc://hub.test/{len(self.profiles)}"

    async def set_profile(self, mxid: str, *, name: str | None, avatar_mxc: str | None) -> None:
        self.profiles.append((mxid, name, avatar_mxc))

    def avatars(self) -> list[str | None]:
        return [avatar for _, _, avatar in self.profiles if avatar is not None]


def _photos(emu: GraphEmulator, store: Store, http: aiohttp.ClientSession) -> Photos:
    """The tenant's photos, looked at again on every call (no hour between two passes)."""
    cfg = TeamsConfig.from_section(emu.teams_section("http://127.0.0.1:9"))
    network_store = NetworkStore(store, NETWORK)
    link = TenantLink(cfg, cfg.tenants[0], http, network_store, LOG)
    return Photos(link.app, network_store, LOG, recheck=0)


async def _photo(emu: GraphEmulator, user: str, data: bytes | None) -> None:
    url = f"{emu.base}/_emulator/users/{user}/photo"
    method = "PUT" if data is not None else "DELETE"
    headers = {"Content-Type": "image/png"}
    async with emu.http.request(method, url, data=data, headers=headers) as response:
        assert response.status in (200, 204), await response.text()


async def _graph_away(emu: GraphEmulator, path: str) -> None:
    """Every try of the next read of ``path`` (the SDK's three retries too) answers 503."""
    fault = {"path": path, "method": "GET", "status": 503, "count": 4, "retryAfter": 1}
    await emu.control("POST", "/faults", fault)


async def test_a_removed_photo_clears_the_avatar_once_and_graph_away_keeps_it(
    store: Store,
    graph: GraphEmulator,  # noqa: F811
) -> None:
    alex = RemoteUserID(graph.user("Alex")["id"])
    homeserver = Homeserver()
    portals = PortalManager(
        store=store, matrix=homeserver, domain="hub.test",  # type: ignore[arg-type]
        bridge_id="pontis", networks={}, log=LOG,
    )  # fmt: skip
    client: Any = MagicMock()
    async with aiohttp.ClientSession() as http:
        photos = _photos(graph, store, http)

        async def message_from_alex() -> Ghost:
            """What each message of Alex does to his ghost (bridge.teams.inbound)."""
            info = await photos.profile(alex, "Alex Wilber (Contoso)")
            return await portals.ensure_ghost(NETWORK, alex, client, info)

        await _photo(graph, alex, PNG)
        ghost = await message_from_alex()
        assert homeserver.avatars() == ["mxc://hub.test/1"] and ghost.avatar_mxc

        # Alex removes his photo in Teams while Graph is away: the avatar stays.
        await _photo(graph, alex, None)
        await _graph_away(graph, f"/v1.0/users/{alex}/photo")
        before = len(homeserver.profiles)
        ghost = await message_from_alex()
        assert len(homeserver.profiles) == before, "a 503 changed the profile"
        assert ghost.avatar_mxc == "mxc://hub.test/1"
        stored = await store.get_ghost(NETWORK, alex)
        assert stored is not None and stored.avatar_mxc == "mxc://hub.test/1"

        # Graph is back and answers 404: the avatar is removed ("" is Matrix's "none").
        await message_from_alex()
        assert homeserver.avatars() == ["mxc://hub.test/1", ""]
        stored = await store.get_ghost(NETWORK, alex)
        assert stored is not None and stored.avatar_mxc is None and stored.avatar_id is None

        # Once: the next message finds nothing to remove.
        changes = len(homeserver.profiles)
        await message_from_alex()
        assert len(homeserver.profiles) == changes

        # A new photo is his avatar again.
        await _photo(graph, alex, PNG)
        await message_from_alex()
        assert homeserver.avatars()[-1].startswith("mxc://hub.test/")


async def test_a_404_for_someone_this_tenant_does_not_know_keeps_their_avatar(
    store: Store,
    graph: GraphEmulator,  # noqa: F811
) -> None:
    """Hostile: a person of another tenant writes in this tenant's chat; this tenant's Graph
    answers 404 for their photo, which says nothing about it."""
    stranger = RemoteUserID("9f0c1d2e-0000-4000-8000-00000000beef")
    await store.save_ghost(
        Ghost(
            network=NETWORK, remote_id=stranger, mxid="@teams_stranger:hub.test",
            avatar_mxc="mxc://hub.test/theirs", avatar_id="teams-photo:etag",
        )
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        info = await _photos(graph, store, http).profile(stranger, None)
    assert info.avatar is None and not info.avatar_removed
