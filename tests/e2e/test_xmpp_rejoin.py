"""The bridge stays in bridged MUCs (issue #14): a kick is noticed, told and healed, against a
real Prosody and a real Synapse."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID

from bridge.xmpp.client import XmppClient
from bridge.xmpp.config import XmppConfig
from tests.e2e.conftest import XMPP_COMPONENT, Hub
from tests.e2e.hub import eventually
from tests.e2e.prosody import ProsodyServer
from tests.e2e.test_xmpp import muc_alias, muc_occupant, xmpp_account
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e
_names = itertools.count(1)
LISTENER = f"bridge@{XMPP_COMPONENT}/pontis"
LISTENER_NICK = "Matrix bridge"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def _notice(hub: Hub, text: str) -> Any:
    return lambda e: (
        e["type"] == "m.room.message" and e["sender"] == hub.bot
        and e["content"].get("msgtype") == "m.notice" and text in _body(e)
    )  # fmt: skip


async def test_kicked_bridge_tells_matrix_and_rejoins(hub: Hub) -> None:
    room = f"kick{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:  # first in: the room's owner
        alice = await hub.user("alice")
        room_id = await alice.join(muc_alias(room))
        xena.send_groupchat(room, "before the kick")
        await alice.wait_for(lambda e: _body(e) == "before the kick", room_id=room_id)

        # Hostile first: a stranger forges the room's "you were kicked" presence. It comes
        # from the stranger's own JID, so it changes nothing.
        async with xmpp_account(hub, "mallory") as mallory:
            forged = mallory.client.make_presence(pto=JID(LISTENER), ptype="unavailable")
            x = forged.xml.makeelement(f"{{{MUC_USER_NS}}}x", {})
            x.append(x.makeelement(f"{{{MUC_USER_NS}}}item", {"role": "none"}))
            for code in ("307", "110"):
                x.append(x.makeelement(f"{{{MUC_USER_NS}}}status", {"code": code}))
            forged.xml.append(x)
            forged.send()
            xena.send_groupchat(room, "after the forgery")
            await alice.wait_for(lambda e: _body(e) == "after the forgery", room_id=room_id)
        assert not alice.seen(_notice(hub, "removed from"), room_id=room_id)

        await xena.client.plugin["xep_0045"].set_role(
            JID(room), LISTENER_NICK, "none", reason="testing the bridge"
        )
        lost = await alice.wait_for(_notice(hub, "removed from"), room_id=room_id, timeout=20)
        assert room in _body(lost) and "kicked by the room" in _body(lost)
        await alice.wait_for(_notice(hub, "bridged again"), room_id=room_id, timeout=60)

        xena.send_groupchat(room, "after the rejoin")
        await alice.wait_for(lambda e: _body(e) == "after the rejoin", room_id=room_id, timeout=30)
        await eventually(
            lambda: (
                len(alice.seen(_notice(hub, "removed from"), room_id=room_id)) == 1
                and len(alice.seen(_notice(hub, "bridged again"), room_id=room_id)) == 1
            ),
            "one notice of each",
        )
        assert len(alice.seen(lambda e: _body(e) == "before the kick", room_id=room_id)) == 1


class _Context:
    """What XmppClient needs of the core when only the XMPP side is under test."""

    log = logging.getLogger("test.xmpp.rejoin")
    bot_mxid = "@pontisbot:hub.test"

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.connected = asyncio.Event()
        self.store = self
        self._tasks: set[asyncio.Task[Any]] = set()

    def background(self, coro: Any, *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def set_client_state(self, _: object, *, connected: bool, message: str = "") -> None:
        if connected:
            self.connected.set()

    async def list_portals(self) -> list[Any]:
        return []

    async def get_portal(self, *_: Any) -> object:
        return object()  # every room is still bridged

    async def kv_get(self, key: str) -> str | None:
        return None  # no stored room subjects

    async def kv_set(self, key: str, value: str) -> None:
        pass

    async def queue_remote_event(self, event: Any) -> None:
        self.notices.append(event.parts[0].text)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_self_ping_finds_a_room_that_forgot_the_bridge(tmp_path: Path) -> None:
    """The room drops the bridge's occupant and the unavailable presence is lost: the next
    XEP-0410 self-ping is refused by Prosody (not-acceptable) and the bridge rejoins."""
    domain, secret = "pinger.xmpp.test", "ping-secret"
    async with ProsodyServer(tmp_path, components={domain: secret}) as server:
        cfg = XmppConfig(jid=domain, host=server.host, port=server.component_port, secret=secret,
                         rooms_domain="", upload_service="", muc_nick=LISTENER_NICK,
                         history_on_join=0, max_file_bytes=1000, self_ping_minutes=0)  # fmt: skip
        ctx = _Context()
        client = XmppClient(ctx, cfg, _Marks())  # type: ignore[arg-type]
        room = f"pinged@{server.muc_domain}"
        listener = JID(f"{room}/{LISTENER_NICK}")
        owner = XmppUser(server.register("olga"), "pw", server.c2s_port)
        await owner.connect()
        try:
            await owner.join_muc(room, "Olga")
            await client.connect()
            await asyncio.wait_for(ctx.connected.wait(), 15)
            await client.bridge_room(room, "@alice:hub.test")

            await client.keeper.self_ping(room, LISTENER_NICK)  # joined: nothing happens
            assert not client.keeper.rejoining(room) and ctx.notices == []

            # Leave behind the bridge's back, hiding the room's answer from it.
            handle = client.component._on_stanza
            client.component._on_stanza = _nothing
            client.component.send(client.component.xmpp.make_presence(
                pto=listener, pfrom=JID(f"bridge@{domain}/pontis"), ptype="unavailable"))  # fmt: skip
            await owner.wait_for_presence(
                lambda p: p["from"] == listener and p["type"] == "unavailable"
            )
            await asyncio.sleep(0.2)
            client.component._on_stanza = handle
            hidden = len(owner.presences)

            await client.keeper.self_ping(room, LISTENER_NICK)
            assert client.keeper.rejoining(room)
            await eventually(lambda: len(ctx.notices) == 2, "the rejoin", timeout=20)
            assert "not-acceptable" in ctx.notices[0] and "rejoining" in ctx.notices[0]
            assert "bridged again" in ctx.notices[1]
            await eventually(
                lambda: any(p["from"] == listener and p["type"] == "available"
                            for p in owner.presences[hidden:]),
                "the bridge back in the room as Olga sees it",
            )  # fmt: skip
        finally:
            await client.disconnect()
            await ctx.close()
            await owner.close()


async def _nothing(_: Any) -> None:
    return None


class _Marks:
    """The XMPP store's archive marks, in memory: this test is about the rejoin only."""

    def __init__(self) -> None:
        self.marks: dict[str, Any] = {}

    async def archive_mark(self, room: str) -> Any:
        return self.marks.get(room)

    async def set_archive_mark(self, room: str, mark: Any) -> None:
        self.marks[room] = mark
