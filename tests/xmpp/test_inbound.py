"""XMPP → Matrix without a server: what is kept before it is confirmed, and what the stored
stanza turns into inside the portal's queue."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Message
from slixmpp.xmlstream import StanzaBase

from bridge.core import (
    LoginID,
    PermanentError,
    RemoteEdit,
    RemoteMessage,
    RemoteReactionSync,
    RemoteRedaction,
    RemoteTyping,
    TransientError,
)
from bridge.core.federation import FederationPolicy
from bridge.core.ghost_names import GhostNames
from bridge.core.ids import NetworkID, RemoteUserID
from bridge.portal.models import RemoteInput
from bridge.xmpp.client import XmppClient
from bridge.xmpp.component import MAX_RECONNECT_WAIT, Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.inbound import DM, MUC, Inbound
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.store import ArchiveMark
from bridge.xmpp.to_matrix import carries_content, parse_stanza, stanza_xml

DOMAIN = "matrix.xmpp.example"
ALICE = "alice\\3ahub.example@" + DOMAIN
JULIET = "juliet@xmpp.example"
ROOM = "team@muc.xmpp.example"
LISTENER = f"bridge@{DOMAIN}"
NS = "jabber:component:accept"


class FakeStore:
    def __init__(self) -> None:
        self.kv: dict[str, str] = {}

    async def kv_get(self, key: str) -> str | None:
        return self.kv.get(key)

    async def kv_set(self, key: str, value: str) -> None:
        self.kv[key] = value


class FakeMarks:
    """The XMPP store's archive marks, in memory."""

    def __init__(self) -> None:
        self.marks: dict[str, ArchiveMark] = {}

    async def archive_mark(self, room: str) -> ArchiveMark | None:
        return self.marks.get(room)

    async def set_archive_mark(self, room: str, mark: ArchiveMark) -> None:
        self.marks[room] = mark


class FakeContext:
    log = logging.getLogger("test.xmpp.inbound")
    bot_mxid = "@bot:hub.example"
    http: Any = None
    federation = FederationPolicy(None, "hub.example")

    def __init__(self, journal: list[str]) -> None:
        self.ghost_names = GhostNames("hub.example")
        self.journal = journal
        self.store = FakeStore()
        self.accepted: list[RemoteInput] = []
        self.queued: list[Any] = []
        self.store_down = False

    async def accept_remote(self, item: RemoteInput) -> bool:
        if self.store_down:
            raise OSError("database unreachable")
        self.journal.append("accepted")
        self.accepted.append(item)
        return True

    async def queue_remote_event(self, event: Any) -> None:
        self.queued.append(event)

    def parse_ghost_mxid(self, mxid: str) -> RemoteUserID | None:
        return self.ghost_names.parse(NetworkID("xmpp"), mxid)


def make_cfg() -> XmppConfig:
    return XmppConfig(jid=DOMAIN, host="127.0.0.1", port=5347, secret="s", rooms_domain="",
                      upload_service="", muc_nick="bridge", history_on_join=0,
                      max_file_bytes=1000)  # fmt: skip


async def _nothing(*_: Any) -> None:
    return None


@pytest.fixture
def setup() -> tuple[Inbound, Component, FakeContext, list[StanzaBase], list[str]]:
    journal: list[str] = []
    component = Component(DOMAIN, make_cfg(), FakeContext.log, on_stanza=_nothing,
                          on_state=_nothing)  # fmt: skip
    component.up = True
    sent: list[StanzaBase] = []

    def send(stanza: StanzaBase, *_: Any, **__: Any) -> None:
        journal.append(f"sent {stanza['type']}")
        sent.append(stanza)

    component.xmpp.send = send  # type: ignore[method-assign]
    ctx = FakeContext(journal)
    inbound = Inbound(ctx, make_cfg(), component, MucTracker(), FakeMarks())  # type: ignore[arg-type]
    return inbound, component, ctx, sent, journal


def incoming(component: Component, inner: str, *, frm: str = f"{JULIET}/phone", to: str = ALICE,
             mtype: str = "chat", mid: str = "m1") -> Message:  # fmt: skip
    raw = (
        f"<message xmlns='{NS}' from='{frm}' to='{to}' type='{mtype}' id='{mid}'>{inner}</message>"
    )
    stanza = component.xmpp._build_stanza(ET.fromstring(raw))
    assert isinstance(stanza, Message)
    return stanza


async def test_a_dm_is_kept_then_confirmed_and_converted_from_what_was_kept(setup: Any) -> None:
    inbound, component, ctx, sent, journal = setup
    msg = incoming(component, "<body>hello &amp; *bye*</body><origin-id xmlns='urn:xmpp:sid:0' "
                   "id='o1'/><request xmlns='urn:xmpp:receipts'/>")  # fmt: skip
    await inbound.direct(msg)
    assert journal == ["accepted", "sent chat"]  # the receipt only after the store has it
    assert sent[0]["receipt"] == "m1"
    [item] = ctx.accepted
    assert (item.kind, item.dedupe_id, item.portal.receiver) == (DM, "o1", "@alice:hub.example")
    [event] = await inbound.convert(item)
    assert isinstance(event, RemoteMessage)
    assert (event.id, event.sender, event.parts[0].text) == ("o1", JULIET, "hello & *bye*")
    assert event.timestamp == item.payload["received"]
    assert event.chat_info is not None and event.chat_info.is_direct
    assert await inbound.convert(item) == [event]  # the same events after a restart


async def test_a_dm_to_a_ghost_of_this_hub_is_refused_and_another_hubs_ghost_is_a_user(
    setup: Any,
) -> None:
    """With ``hubb_xmpp_{id}``, this hub's ghost would loop back to XMPP; ``@xmpp_…`` is the
    ghost of another hub on the same homeserver, a Matrix user like any other here."""
    inbound, component, ctx, sent, _ = setup
    ctx.ghost_names = GhostNames("hub.example", {"xmpp": "hubb_xmpp_{id}"})
    own = f"hubb_xmpp_romeo=40xmpp.example\\3ahub.example@{DOMAIN}"
    await inbound.direct(incoming(component, "<body>loop?</body>", to=own))
    [error] = sent
    assert error["type"] == "error" and error["error"]["condition"] == "item-not-found"
    assert ctx.accepted == []
    other = f"xmpp_romeo=40xmpp.example\\3ahub.example@{DOMAIN}"
    await inbound.direct(incoming(component, "<body>hi</body>", to=other, mid="m2"))
    [item] = ctx.accepted
    assert item.portal.receiver == "@xmpp_romeo=40xmpp.example:hub.example"


async def test_a_store_that_is_down_answers_wait_and_sends_no_receipt(setup: Any) -> None:
    inbound, component, ctx, sent, _ = setup
    ctx.store_down = True
    await inbound.direct(incoming(component, "<body>hi</body><request xmlns='urn:xmpp:receipts'/>"))
    [error] = sent
    assert error["type"] == "error" and error["id"] == "m1"
    assert (error["error"]["type"], error["error"]["condition"]) == ("wait", "resource-constraint")
    assert str(error["to"]) == f"{JULIET}/phone" and str(error["from"]) == ALICE


async def test_a_store_that_is_down_sends_no_error_into_a_muc(setup: Any) -> None:
    """An error answered to a room message goes to the room, which may kick the bridge."""
    inbound, component, ctx, sent, _ = setup
    inbound._mucs.room(ROOM).nicks[f"{LISTENER}/pontis"] = "bridge"
    ctx.store_down = True
    await inbound.groupchat(incoming(
        component, f"<body>hi all</body><stanza-id xmlns='urn:xmpp:sid:0' id='S9' by='{ROOM}'/>",
        frm=f"{ROOM}/Xena", to=f"{LISTENER}/pontis", mtype="groupchat", mid="x9",
    ))  # fmt: skip
    assert sent == [] and ctx.accepted == []


async def test_chat_states_stay_fleeting(setup: Any) -> None:
    inbound, component, ctx, _, _ = setup
    msg = incoming(component, "<composing xmlns='http://jabber.org/protocol/chatstates'/>")
    assert not carries_content(msg)
    await inbound.direct(msg)
    assert not ctx.accepted
    [typing] = ctx.queued
    assert isinstance(typing, RemoteTyping) and typing.typing


@pytest.mark.parametrize(
    ("inner", "kind"),
    [
        ("<body>fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='o0'/>", RemoteEdit),
        ("<retract xmlns='urn:xmpp:message-retract:1' id='o0'/><body>fallback</body>",
         RemoteRedaction),
        ("<reactions xmlns='urn:xmpp:reactions:0' id='o0'><reaction>👍</reaction></reactions>",
         RemoteReactionSync),
        ("<x xmlns='jabber:x:oob'><url>https://files.example/a%20b.png</url></x>", RemoteMessage),
    ],
)  # fmt: skip
async def test_content_round_trips_through_the_stored_xml(
    setup: Any, inner: str, kind: type
) -> None:
    inbound, component, ctx, _, _ = setup
    msg = incoming(component, inner)
    assert carries_content(msg)
    assert stanza_xml(parse_stanza(component.xmpp, stanza_xml(msg))) == stanza_xml(msg)
    await inbound.direct(msg)
    [event] = await inbound.convert(ctx.accepted[0])
    assert isinstance(event, kind)
    if isinstance(event, RemoteMessage):
        media = event.parts[0].media
        assert media is not None and media.filename == "a b.png" and not event.parts[0].text
    else:
        assert getattr(event, "target") == "o0"  # noqa: B009


async def test_muc_messages_keep_the_occupant_and_map_stanza_ids_in_the_queue(
    setup: Any,
) -> None:
    inbound, component, ctx, _, _ = setup
    room = inbound._mucs.room(ROOM)
    room.nicks[f"{LISTENER}/pontis"] = "bridge"
    room.occupants["Xena"] = "xena@xmpp.example"
    said = incoming(component, f"<body>hi all</body><stanza-id xmlns='urn:xmpp:sid:0' id='S1' "
                    f"by='{ROOM}'/>", frm=f"{ROOM}/Xena", to=f"{LISTENER}/pontis",
                    mtype="groupchat", mid="x1")  # fmt: skip
    await inbound.groupchat(said)
    [item] = ctx.accepted
    assert (item.kind, item.dedupe_id, item.payload["sender"]) == (MUC, "S1", "xena@xmpp.example")
    assert not ctx.store.kv  # the lookups and writes happen in the queue
    room.occupants.clear()  # Xena left before the queue got to it: the sender was kept
    [event] = await inbound.convert(item)
    assert isinstance(event, RemoteMessage) and event.id == "x1"
    assert event.sender == "xena@xmpp.example"
    react = incoming(component, "<reactions xmlns='urn:xmpp:reactions:0' id='S1'><reaction>🎉"
                     "</reaction></reactions>", frm=f"{ROOM}/Yan", to=f"{LISTENER}/pontis",
                     mtype="groupchat", mid="y1")  # fmt: skip
    await inbound.groupchat(react)
    [reaction] = await inbound.convert(ctx.accepted[1])
    assert isinstance(reaction, RemoteReactionSync) and reaction.target == "x1"
    assert ctx.accepted[1].dedupe_id == "Yan:y1"


async def test_unknown_stored_input_is_a_permanent_error(setup: Any) -> None:
    inbound, *_ = setup
    item = RemoteInput(portal=ctx_key(), kind="carrier-pigeon", payload={"xml": "<message/>"})
    with pytest.raises(PermanentError):
        await inbound.convert(item)
    with pytest.raises(PermanentError):
        await inbound.convert(RemoteInput(portal=ctx_key(), kind=DM, payload={"xml": "<oops"}))


def ctx_key() -> Any:
    from bridge.xmpp.ids import dm_key

    return dm_key(JULIET, "@alice:hub.example")


async def test_reconnect_waits_are_capped(setup: Any) -> None:
    _, component, *_ = setup
    xmpp = component.xmpp
    xmpp.loop = asyncio.get_running_loop()  # built outside this test's loop (session-wide runs)
    xmpp._current_connection_attempt = asyncio.get_running_loop().create_future()
    xmpp._connect_loop_wait = 45
    attempt = xmpp.reschedule_connection_attempt()
    assert xmpp._connect_loop_wait == MAX_RECONNECT_WAIT
    assert attempt is not None
    attempt.cancel()
    await asyncio.gather(attempt, return_exceptions=True)


async def test_matrix_messages_wait_while_the_component_is_away() -> None:
    class Ctx(FakeContext):
        def parse_ghost_mxid(self, mxid: str) -> None:
            return None

    client = XmppClient(Ctx([]), make_cfg(), FakeMarks())  # type: ignore[arg-type]
    assert not client.component.up
    with pytest.raises(TransientError):
        await client.handle_matrix_message(object())  # type: ignore[arg-type]
    with pytest.raises(TransientError):
        client.component.require_up()
    assert client.login_id == LoginID("")
