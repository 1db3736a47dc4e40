"""A stranger's file link must not make the hub reach into its own network: real Prosody, real
Synapse, the bridge as its own process, and a loopback HTTP server that records every request.

The hub's config allow-lists exactly Prosody's HTTP-upload port on 127.0.0.1 (tests/e2e/hub.py);
any other loopback port is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from tests.e2e.conftest import Hub
from tests.e2e.test_xmpp import _body, _dm, jid_of, xmpp_account
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e


class Recorder:
    """An internal service on loopback that would hand out its data to anyone who asks."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        return web.Response(body=b"\x89PNG\r\n\x1a\n internal data", content_type="image/png")


@pytest_asyncio.fixture
async def xmpp_user(hub: Hub) -> AsyncIterator[XmppUser]:
    async with xmpp_account(hub, "linker") as user:
        yield user


@pytest_asyncio.fixture
async def internal_service() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recorder.port = runner.addresses[0][1]
    try:
        yield recorder
    finally:
        await runner.cleanup()


async def test_an_oob_link_to_loopback_is_not_fetched(
    hub: Hub, xmpp_user: XmppUser, internal_service: Recorder
) -> None:
    alice, room_id, _, _ = await _dm(hub, xmpp_user)
    for host in ("127.0.0.1", "localhost"):
        link = f"http://{host}:{internal_service.port}/admin/7f3a9c/backup.png?token=s3cr3t"
        before = len(alice.events)
        xmpp_user.send_chat(jid_of(alice), link, oob_url=link)
        notice = await alice.wait_for(
            lambda e: "local or private network" in _body(e), 30, room_id, after=before
        )
        assert "7f3a9c" not in _body(notice) and "s3cr3t" not in _body(notice)
        assert not alice.seen(lambda e: e["content"].get("msgtype") == "m.image", room_id=room_id)

    # The allow-listed upload service on the same address still works, after the refusals.
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16
    url = await xmpp_user.upload_file(picture, "allowed.png", "image/png")
    xmpp_user.send_chat(jid_of(alice), url, oob_url=url)
    event = await alice.wait_for(
        lambda e: e["content"].get("body") == "allowed.png", room_id=room_id, timeout=30
    )
    assert await alice.download(event["content"]["url"]) == picture

    assert internal_service.hits == []
    # What the operator reads (DEBUG shows whole stanzas, the link in the body included).
    log = hub.bridge.log_path.read_text(errors="replace").splitlines()
    leaks = [ln for ln in log if " DEBUG " not in ln and ("s3cr3t" in ln or "7f3a9c" in ln)]
    assert leaks == []
    assert any("is a loopback address" in ln and " DEBUG " not in ln for ln in log)
