"""The XMPP test harness itself: a real Prosody, slixmpp test users and an external component."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from tests.e2e.prosody import ProsodyServer, prosody_installed
from tests.e2e.xmpp_client import XmppUser
from tests.e2e.xmpp_doubles import RecordingComponent, two_users

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not prosody_installed(), reason="prosody not installed (scripts/test.sh)"),
]

BRIDGE = "bridge.xmpp.test"
SECRET = "s3cret"
_serial = itertools.count()


@pytest_asyncio.fixture(scope="module")
async def prosody(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ProsodyServer]:
    server = ProsodyServer(tmp_path_factory.mktemp("prosody"), components={BRIDGE: SECRET})
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def users(prosody: ProsodyServer) -> AsyncIterator[tuple[XmppUser, XmppUser]]:
    async with two_users(prosody, next(_serial)) as both:
        yield both


def _component(server: ProsodyServer, secret: str = SECRET) -> RecordingComponent:
    return RecordingComponent(BRIDGE, secret, server)


async def test_chat_both_ways(users: tuple[XmppUser, XmppUser]) -> None:
    alice, bob = users
    assert alice.jid.startswith("alice") and alice.jid.endswith("@xmpp.test")
    msg_id = alice.send_chat(bob.jid, "hello bob", origin_id="origin-1")
    got = await bob.wait_for_message(lambda m: m["body"] == "hello bob")
    assert got["id"] == msg_id
    assert got["type"] == "chat"
    assert got["from"].bare == alice.jid
    assert got["origin_id"]["id"] == "origin-1"

    reply_id = bob.send_chat(alice.jid, "hi alice", reply_to=(msg_id, alice.full_jid))
    bob.chat_state(alice.jid, "composing")
    reply = await alice.wait_for_message(lambda m: m["body"] == "hi alice")
    assert reply["id"] == reply_id
    assert reply["reply"]["id"] == msg_id
    await alice.wait_for_message(lambda m: m["chat_state"] == "composing")

    alice.react(bob.jid, reply_id, {"👍"})
    alice.correct(bob.jid, msg_id, "hello bob!")
    alice.retract(bob.jid, msg_id)
    reaction = await bob.wait_for_message(lambda m: m["reactions"]["id"] == reply_id)
    assert reaction["reactions"]["values"] == {"👍"}
    await bob.wait_for_message(lambda m: m["replace"]["id"] == msg_id)
    await bob.wait_for_message(lambda m: m["retract"]["id"] == msg_id)

    with pytest.raises(AssertionError, match="hello bob"):
        await bob.wait_for_message(lambda m: m["body"] == "never sent", timeout=0.2)


async def test_muc_groupchat(prosody: ProsodyServer, users: tuple[XmppUser, XmppUser]) -> None:
    alice, bob = users
    room = f"harness@{prosody.muc_domain}"
    await alice.join_muc(room, "Alice")
    await bob.join_muc(room, "Bob")
    await alice.wait_for_presence(lambda p: p["from"] == f"{room}/Bob")
    msg_id = alice.send_groupchat(room, "hello room")
    got = await bob.wait_for_message(
        lambda m: m["type"] == "groupchat" and m["body"] == "hello room"
    )
    assert got["from"] == f"{room}/Alice"
    assert got["id"] == msg_id
    assert got["stanza_id"]["by"] == room  # muc_mam assigns XEP-0359 stanza ids
    assert got["stanza_id"]["id"]
    # The sender gets its own message reflected.
    await alice.wait_for_message(lambda m: m["type"] == "groupchat" and m["id"] == msg_id)


async def test_http_upload(prosody: ProsodyServer, users: tuple[XmppUser, XmppUser]) -> None:
    alice, _bob = users
    data = bytes(range(256)) * 4096  # 1 MiB
    url = await alice.upload_file(data, "blob.bin", "application/octet-stream")
    assert url.startswith(f"{prosody.http_url}/file_share/")
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == data


async def test_component_receives_and_survives_restart(
    prosody: ProsodyServer, users: tuple[XmppUser, XmppUser]
) -> None:
    alice, _bob = users
    component = _component(prosody)

    def reconnect(_reason: object) -> None:
        # slixmpp does not reconnect an established component stream by itself.
        component.connect()

    component.add_event_handler("disconnected", reconnect)
    component.connect()
    try:
        await component.wait_up()
        alice.send_chat(f"someone@{BRIDGE}", "to the bridge")
        got = await component.wait_for("to the bridge")
        assert got["to"] == f"someone@{BRIDGE}"
        assert got["from"].bare == alice.jid

        ports = (prosody.c2s_port, prosody.component_port, prosody.http_port)
        component.up.clear()
        await prosody.restart()
        assert (prosody.c2s_port, prosody.component_port, prosody.http_port) == ports
        await component.wait_up(timeout=20)
        assert component.sessions == 2

        carol = XmppUser(prosody.register("carol", "pw-c"), "pw-c", prosody.c2s_port)
        async with carol:
            carol.send_chat(f"someone@{BRIDGE}", "after restart")
            await component.wait_for("after restart")
    finally:
        component.del_event_handler("disconnected", reconnect)
        await component.disconnect()
