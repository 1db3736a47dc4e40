"""The ejabberd test harness itself (tests/e2e/ejabberd.py): a real ejabberd from the Debian
package, slixmpp users and an external component, checked for what the bridge relies on —
the component listener, MUC with archive ids, MAM on rooms, uploads by the component's users."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from slixmpp import JID

from tests.e2e.ejabberd import EjabberdServer, ejabberd_installed
from tests.e2e.xmpp_client import XmppUser
from tests.e2e.xmpp_doubles import RecordingComponent, two_users

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not ejabberd_installed(), reason="ejabberd not installed (scripts/test.sh)"),
]

BRIDGE = "bridge.xmpp.test"
SECRET = "s3cret"
_serial = itertools.count()


@pytest_asyncio.fixture(scope="module")
async def ejabberd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EjabberdServer]:
    server = EjabberdServer(
        tmp_path_factory.mktemp("ejabberd"),
        components={BRIDGE: SECRET},
        extra_domains=("other.test",),  # as in the hub: more than one virtual host
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def users(ejabberd: EjabberdServer) -> AsyncIterator[tuple[XmppUser, XmppUser]]:
    async with two_users(ejabberd, next(_serial)) as both:
        yield both


def _component(server: EjabberdServer, secret: str = SECRET) -> RecordingComponent:
    return RecordingComponent(BRIDGE, secret, server)


async def test_register_refuses_a_taken_name_and_a_foreign_domain(
    ejabberd: EjabberdServer,
) -> None:
    ejabberd.register("dora", "pw")
    assert ejabberd.register("dora", "pw", domain="other.test") == "dora@other.test"
    with pytest.raises(RuntimeError, match=r"dora@xmpp\.test"):
        ejabberd.register("dora", "other")
    with pytest.raises(ValueError, match=r"elsewhere\.test"):
        ejabberd.register("dora", domain="elsewhere.test")
    assert ejabberd.startup_seconds is not None and ejabberd.startup_seconds > 0


async def test_chat_both_ways(users: tuple[XmppUser, XmppUser]) -> None:
    alice, bob = users
    msg_id = alice.send_chat(bob.jid, "hello bob", origin_id="origin-1")
    got = await bob.wait_for_message(lambda m: m["body"] == "hello bob")
    assert got["id"] == msg_id and got["from"].bare == alice.jid
    assert got["origin_id"]["id"] == "origin-1"
    bob.send_chat(alice.jid, "hi alice")
    await alice.wait_for_message(lambda m: m["body"] == "hi alice")


async def test_muc_messages_carry_archive_ids_the_archive_returns(
    ejabberd: EjabberdServer, users: tuple[XmppUser, XmppUser]
) -> None:
    alice, bob = users
    room = f"harness{next(_serial)}@{ejabberd.muc_domain}"
    await alice.join_muc(room, "Alice")
    await bob.join_muc(room, "Bob")
    await alice.wait_for_presence(lambda p: p["from"] == f"{room}/Bob")
    msg_id = alice.send_groupchat(room, "hello room")
    got = await bob.wait_for_message(
        lambda m: m["type"] == "groupchat" and m["body"] == "hello room"
    )
    assert got["from"] == f"{room}/Alice" and got["id"] == msg_id
    assert got["stanza_id"]["by"] == room
    archive_id = got["stanza_id"]["id"]
    assert archive_id

    bodies = {}
    async for result in bob.client.plugin["xep_0313"].iterate(JID(room), total=10):
        archived = result["mam_result"]
        bodies[archived["forwarded"]["stanza"]["body"]] = archived["id"]
    assert bodies.get("hello room") == archive_id


async def test_a_component_user_gets_an_upload_slot(ejabberd: EjabberdServer) -> None:
    """The bridge asks for slots as its Matrix users (JIDs on the component); the access rule
    lets them, and a local user's GET of the file works."""
    component = _component(ejabberd)
    component.connect()
    try:
        await asyncio.wait_for(component.up.wait(), 15)
        data = bytes(range(256)) * 64
        slot = await component.plugin["xep_0363"].request_slot(
            JID(ejabberd.upload_domain),
            "notes.txt",
            len(data),
            "text/plain",
            ifrom=JID(f"alice\\3ahub.test@{BRIDGE}"),
        )
        put = slot["http_upload_slot"]["put"]
        headers = {h["name"]: h["value"] for h in put["headers"]} if put["headers"] else {}
        async with aiohttp.ClientSession() as http:
            async with http.put(put["url"], data=data, headers=headers) as resp:
                assert resp.status in (200, 201)
            get_url = str(slot["http_upload_slot"]["get"]["url"])
            assert get_url.startswith(f"{ejabberd.http_url}/upload/")
            async with http.get(get_url) as resp:
                assert resp.status == 200 and await resp.read() == data
    finally:
        await component.disconnect()


async def test_component_with_a_wrong_secret_is_refused(ejabberd: EjabberdServer) -> None:
    component = _component(ejabberd, secret="not-the-secret")
    failed = asyncio.Event()
    component.add_event_handler("disconnected", lambda _e: failed.set())
    component.connect()
    try:
        await asyncio.wait_for(failed.wait(), 15)
        assert not component.up.is_set()
    finally:
        component.abort()


async def test_component_receives_and_survives_restart(
    ejabberd: EjabberdServer, users: tuple[XmppUser, XmppUser]
) -> None:
    alice, _bob = users
    component = _component(ejabberd)

    def reconnect(_reason: object) -> None:
        # slixmpp does not reconnect an established component stream by itself.
        component.connect()

    component.add_event_handler("disconnected", reconnect)
    component.connect()
    try:
        await asyncio.wait_for(component.up.wait(), 15)
        alice.send_chat(f"someone@{BRIDGE}", "to the bridge")
        got = await component.wait_for("to the bridge")
        assert got["to"] == f"someone@{BRIDGE}" and got["from"].bare == alice.jid

        ports = (ejabberd.c2s_port, ejabberd.component_port, ejabberd.http_port)
        component.up.clear()
        await ejabberd.restart()
        assert (ejabberd.c2s_port, ejabberd.component_port, ejabberd.http_port) == ports
        await asyncio.wait_for(component.up.wait(), 20)
        assert component.sessions == 2

        # Accounts live in the Mnesia spool and survive the restart.
        again = XmppUser(alice.jid, "pw-a", ejabberd.c2s_port, resource="again")
        async with again:
            again.send_chat(f"someone@{BRIDGE}", "after restart")
            await component.wait_for("after restart")
    finally:
        component.del_event_handler("disconnected", reconnect)
        await component.disconnect()
