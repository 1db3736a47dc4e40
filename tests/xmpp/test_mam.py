"""Catch-up from a MUC's archive (XEP-0313) without a server, hostile cases first: forged
results, results of another query, replayed stanza-ids, an archive larger than a page, an
archive that forgot our last id. The stream is real slixmpp; only the room is scripted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Iq, Message, Presence
from slixmpp.xmlstream import StanzaBase

from bridge.xmpp.client import XmppClient
from bridge.xmpp.component import Component
from bridge.xmpp.inbound import Inbound
from bridge.xmpp.mam import MAM_NS, PAGE_SIZE, RSM_NS, Archive, ArchiveError
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.store import ArchiveMark
from tests.xmpp.test_inbound import LISTENER, ROOM, FakeContext, FakeMarks, make_cfg

NS = "jabber:component:accept"
ME = f"{LISTENER}/pontis"


async def _nothing(*_: Any) -> None:
    return None


class ScriptedRoom:
    """Answers the listener's archive queries as ``ROOM`` would, from ``archive`` (stanza-id,
    nick, body), honouring ``after`` and ``max``; ``before_each_page`` may inject stanzas."""

    def __init__(self, component: Component, archive: list[tuple[str, str, str]]) -> None:
        self.component = component
        self.archive = archive
        self.queries: list[dict[str, str]] = []
        self.before_each_page: Callable[[str], list[str]] = lambda _: []
        self.forget_ids = False
        self.extra_per_page = 0

    def feed(self, xml: str) -> None:
        self.component.xmpp._spawn_event(ET.fromstring(xml))

    def on_send(self, stanza: StanzaBase) -> None:
        query = stanza.xml.find(f"{{{MAM_NS}}}query") if isinstance(stanza, Iq) else None
        if query is not None:
            asyncio.get_running_loop().call_soon(self.answer, stanza, query)

    def answer(self, iq: Iq, query: ET.Element) -> None:
        qid = query.get("queryid", "")
        after = query.findtext(f"{{{RSM_NS}}}set/{{{RSM_NS}}}after")
        limit = int(query.findtext(f"{{{RSM_NS}}}set/{{{RSM_NS}}}max") or 10)
        self.queries.append({"after": after or "", "qid": qid})
        ids = [sid for sid, _, _ in self.archive]
        if after and (self.forget_ids or after not in ids):
            self.feed(f"<iq xmlns='{NS}' type='error' from='{ROOM}' to='{ME}' id='{iq['id']}'>"
                      "<error type='cancel'><item-not-found xmlns="
                      "'urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")  # fmt: skip
            return
        first = ids.index(after) + 1 if after else 0
        page = self.archive[first : first + limit + self.extra_per_page]
        for xml in self.before_each_page(qid):
            self.feed(xml)
        for sid, nick, body in page:
            self.feed(result(qid, sid, nick, body))
        complete = first + limit >= len(self.archive)
        last = page[min(len(page), limit) - 1][0] if page else ""
        self.feed(f"<iq xmlns='{NS}' type='result' from='{ROOM}' to='{ME}' id='{iq['id']}'>"
                  f"<fin xmlns='{MAM_NS}' complete='{str(complete).lower()}'><set xmlns='{RSM_NS}'>"
                  f"<last>{last}</last></set></fin></iq>")  # fmt: skip


def result(qid: str, sid: str, nick: str, body: str, *, frm: str = ROOM, to: str = ME,
           inner_from: str | None = None) -> str:  # fmt: skip
    inner_from = inner_from or f"{ROOM}/{nick}"
    return (f"<message xmlns='{NS}' from='{frm}' to='{to}'><result xmlns='{MAM_NS}' "
            f"queryid='{qid}' id='{sid}'><forwarded xmlns='urn:xmpp:forward:0'>"
            "<delay xmlns='urn:xmpp:delay' stamp='2026-12-04T10:00:00Z'/>"
            f"<message xmlns='jabber:client' from='{inner_from}' type='groupchat' id='m-{sid}'>"
            f"<body>{body}</body></message></forwarded></result></message>")  # fmt: skip


@pytest.fixture
async def setup() -> tuple[Archive, Inbound, ScriptedRoom, FakeContext]:
    component = Component(LISTENER.split("@")[1], make_cfg(), FakeContext.log,
                          on_stanza=_nothing, on_state=_nothing)  # fmt: skip
    component.up = True
    component.xmpp.loop = asyncio.get_running_loop()
    room = ScriptedRoom(component, [])
    component.xmpp.send = lambda stanza, *_, **__: room.on_send(stanza)  # type: ignore[method-assign]
    ctx = FakeContext([])
    mucs = MucTracker()
    mucs.room(ROOM).nicks[ME] = "bridge"
    inbound = Inbound(ctx, make_cfg(), component, mucs, FakeMarks())  # type: ignore[arg-type]
    archive = Archive(component, ME, ctx.log, inbound.archived)
    component.on_archive_result = archive.on_result
    return archive, inbound, room, ctx


def bodies(ctx: FakeContext) -> list[str]:
    return [
        ET.fromstring(item.payload["xml"]).findtext(f"{{{NS}}}body") or "" for item in ctx.accepted
    ]


async def catch_up(archive: Archive, inbound: Inbound, after: str = "") -> int:
    inbound.hold(ROOM)
    try:
        return await archive.catch_up(ROOM, ArchiveMark(after, 0))
    finally:
        await inbound.release(ROOM)


async def test_forged_results_from_strangers_or_for_other_queries_change_nothing(
    setup: Any,
) -> None:
    archive, inbound, room, ctx = setup
    room.archive = [("s1", "Xena", "one"), ("s2", "Yan", "two")]
    room.before_each_page = lambda qid: [
        result(qid, "f1", "Mallory", "from a stranger", frm="mallory@evil.example"),
        result(qid, "f2", "Mallory", "from an occupant", frm=f"{ROOM}/Mallory"),
        result("another-query", "f3", "Mallory", "another query id"),
        result(qid, "f4", "Mallory", "to someone else", to=f"{LISTENER}/other"),
        result(qid, "f5", "Mallory", "inner from elsewhere", inner_from="mallory@evil.example/x"),
        result(qid, "", "Mallory", "no stanza-id"),
    ]
    room.feed(result("no-query-open", "f6", "Mallory", "before any query"))
    assert await catch_up(archive, inbound) == 2
    assert bodies(ctx) == ["one", "two"]
    assert [item.dedupe_id for item in ctx.accepted] == ["s1", "s2"]
    assert [item.payload["sender"] for item in ctx.accepted] == [f"{ROOM}/Xena", f"{ROOM}/Yan"]


async def test_a_replayed_stanza_id_is_taken_once(setup: Any) -> None:
    archive, inbound, room, ctx = setup
    room.archive = [("s1", "Xena", "one"), ("s1", "Xena", "one again"), ("s2", "Yan", "two")]
    ctx.store.kv["sid:" + ROOM + ":s0"] = "bridged-before"
    room.archive.insert(0, ("s0", "Xena", "bridged before the gap"))
    await catch_up(archive, inbound)
    assert bodies(ctx) == ["one", "two"]


async def test_a_huge_archive_comes_page_by_page_in_order_without_a_limit(setup: Any) -> None:
    archive, inbound, room, ctx = setup
    total = PAGE_SIZE * 5 + 3
    room.archive = [(f"s{n}", "Xena", f"m{n}") for n in range(total)]
    room.extra_per_page = 7  # a room that sends more than was asked for
    assert await catch_up(archive, inbound, after="") == total
    assert bodies(ctx) == [f"m{n}" for n in range(total)]
    assert len(room.queries) == 6
    assert [q["after"] for q in room.queries[1:]] == [f"s{PAGE_SIZE * k - 1}" for k in range(1, 6)]


async def test_live_messages_held_during_the_catch_up_come_after_it_once(setup: Any) -> None:
    archive, inbound, room, ctx = setup
    room.archive = [("s1", "Xena", "one"), ("s2", "Yan", "two")]
    live = [_live(inbound, "s2", "Yan", "two"), _live(inbound, "s3", "Xena", "three")]
    inbound.hold(ROOM)
    for msg in live:
        await inbound.groupchat(msg)
    assert not ctx.accepted
    await archive.catch_up(ROOM, ArchiveMark("", 0))
    await inbound.release(ROOM)
    assert bodies(ctx) == ["one", "two", "three"]
    assert (await inbound.marks.get(ROOM)).stanza_id == "s3"


async def test_our_own_reflections_are_not_bridged_but_remembered(setup: Any) -> None:
    archive, inbound, _, ctx = setup
    xml = result("q", "s1", "Alice", "from Matrix").replace("id='m-s1'", "id='pontis-msg-abc'")
    msg = Message(stream=inbound._component.xmpp, xml=ET.fromstring(xml))
    await inbound.archived(ROOM, archive._rebuild(ROOM, "s1", _inner(msg), None))
    assert not ctx.accepted
    assert ctx.store.kv[f"sid>:{ROOM}:pontis-msg-abc"] == "s1"


async def test_an_archive_that_forgot_our_id_is_searched_by_time(setup: Any) -> None:
    archive, inbound, room, ctx = setup
    room.archive = [("s1", "Xena", "one")]
    room.forget_ids = True
    inbound.hold(ROOM)
    await archive.catch_up(ROOM, ArchiveMark("gone", 1_000_000))
    await inbound.release(ROOM)
    assert [q["after"] for q in room.queries] == ["gone", ""]
    assert bodies(ctx) == ["one"]


async def test_an_archive_that_does_not_answer_is_an_error(setup: Any) -> None:
    archive, inbound, _, ctx = setup
    silent = Archive(archive._component, ME, ctx.log, inbound.archived, query_timeout=0.1)
    silent._component.xmpp.send = lambda *_, **__: None  # type: ignore[method-assign]
    with pytest.raises(ArchiveError, match="did not answer"):
        await silent.page(ROOM, after=None, start=0)
    assert not silent._queries  # a late page for it is ignored


def _inner(msg: Message) -> ET.Element:
    inner = msg.xml.find(
        f"{{{MAM_NS}}}result/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message"
    )
    assert inner is not None
    return inner


def _live(inbound: Inbound, sid: str, nick: str, body: str) -> Message:
    xml = (f"<message xmlns='{NS}' from='{ROOM}/{nick}' to='{ME}' type='groupchat' id='m-{sid}'>"
           f"<body>{body}</body><stanza-id xmlns='urn:xmpp:sid:0' id='{sid}' by='{ROOM}'/>"
           "</message>")  # fmt: skip
    return Message(stream=inbound._component.xmpp, xml=ET.fromstring(xml))


class ScriptedClient:
    """An XmppClient whose room answers joins, disco#info (with MAM if ``archived``) and
    archive queries (from ``room.archive``)."""

    def __init__(self, marks: FakeMarks, *, archived: bool) -> None:
        self.ctx = FakeContext([])
        self.client = XmppClient(self.ctx, make_cfg(), marks)  # type: ignore[arg-type]
        component = self.client.component
        component.up = True
        component.xmpp.loop = asyncio.get_running_loop()
        self.room = ScriptedRoom(component, [])
        self.archived = archived
        self.joins: list[ET.Element] = []
        component.xmpp.send = self._send  # type: ignore[method-assign]

    def _send(self, stanza: StanzaBase, *_: Any, **__: Any) -> None:
        asyncio.get_running_loop().call_soon(self._answer, stanza)

    def _answer(self, stanza: StanzaBase) -> None:
        if isinstance(stanza, Presence):
            history = stanza.xml.find(f"{{{MUC}}}x/{{{MUC}}}history")
            assert history is not None
            self.joins.append(history)
            own = (f"<presence xmlns='{NS}' from='{ROOM}/bridge' to='{ME}'><x xmlns="
                   f"'{MUC}#user'><item role='participant'/><status code='110'/></x></presence>")  # fmt: skip
            self.client.mucs.on_presence(Presence(xml=ET.fromstring(own)))
        elif stanza.xml.find(f"{{{DISCO_INFO}}}query") is not None:
            feature = f"<feature var='{MAM_NS}'/>" if self.archived else ""
            self.room.feed(f"<iq xmlns='{NS}' type='result' from='{ROOM}' to='{ME}' "
                           f"id='{stanza['id']}'><query xmlns='{DISCO_INFO}'>{feature}</query></iq>")  # fmt: skip
        else:
            self.room.on_send(stanza)


MUC = "http://jabber.org/protocol/muc"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


@pytest.mark.parametrize("archived", [True, False])
async def test_a_rejoin_asks_the_archive_or_history_since_the_mark_never_both(
    archived: bool,
) -> None:
    marks = FakeMarks()
    marks.marks[ROOM] = ArchiveMark("s7", 1_764_000_000_000)
    scripted = ScriptedClient(marks, archived=archived)
    scripted.room.archive = [("s7", "Xena", "seen"), ("s8", "Xena", "missed")]
    await asyncio.wait_for(scripted.client.joins.join_listener(ROOM), 5)
    [history] = scripted.joins
    if archived:
        assert history.attrib == {"maxstanzas": "0"}
        assert [q["after"] for q in scripted.room.queries] == ["s7"]
        assert bodies(scripted.ctx) == ["missed"]
    else:  # from two minutes before the bridge last heard from the room
        assert history.attrib == {"since": "2025-11-24T15:58:00Z"}
        assert scripted.room.queries == []


async def test_a_catch_up_cut_short_by_a_store_outage_is_made_good_at_the_next_gap() -> None:
    marks = FakeMarks()
    marks.marks[ROOM] = ArchiveMark("s0", 0)
    scripted = ScriptedClient(marks, archived=True)
    total = PAGE_SIZE + 10
    scripted.room.archive = [("s0", "Xena", "seen")] + [
        (f"s{n}", "Xena", f"m{n}") for n in range(1, total + 1)
    ]
    store, inbound = scripted.ctx.store, scripted.client.inbound
    reads = 0
    kv_get = store.kv_get

    async def failing_kv_get(key: str) -> str | None:
        nonlocal reads
        reads += 1
        if reads > PAGE_SIZE:  # the database goes away during the second page
            raise OSError("database unreachable")
        return await kv_get(key)

    store.kv_get = failing_kv_get  # type: ignore[method-assign]
    live = _live(inbound, f"s{total + 1}", "Yan", "live while catching up")
    scripted.room.before_each_page = lambda _: []
    original_page = scripted.client.archive.page

    async def page(room: str, *, after: str | None, start: int | None) -> Any:
        if after == "s0":
            await inbound.groupchat(live)  # arrives while the catch-up runs: held
        return await original_page(room, after=after, start=start)

    scripted.client.archive.page = page  # type: ignore[method-assign]
    await asyncio.wait_for(scripted.client.joins.join_listener(ROOM), 5)
    assert bodies(scripted.ctx)[:PAGE_SIZE] == [f"m{n}" for n in range(1, PAGE_SIZE + 1)]
    assert bodies(scripted.ctx)[PAGE_SIZE:] == ["live while catching up"]  # released, not lost
    assert marks.marks[ROOM] == ArchiveMark("s0", 0)  # the mark stayed behind

    store.kv_get = kv_get  # type: ignore[method-assign]  # the database is back
    scripted.client.archive.page = original_page  # type: ignore[method-assign]
    scripted.client.mucs.forget_all()  # the next gap
    for item in scripted.ctx.accepted:  # what reached Matrix is known by its stanza-id
        store.kv[f"sid:{ROOM}:{item.dedupe_id}"] = "bridged"
    await asyncio.wait_for(scripted.client.joins.join_listener(ROOM), 5)
    got = bodies(scripted.ctx)
    assert got.count("m1") == 1 and got[-10:] == [f"m{n}" for n in range(PAGE_SIZE + 1, total + 1)]
    await scripted.client.inbound.groupchat(_live(inbound, "s999", "Yan", "later"))
    assert (await inbound.marks.get(ROOM)).stanza_id == "s999"  # caught up: it moves again
    await inbound.marks.close()  # the bridge stops: the moved mark is written
    assert marks.marks[ROOM].stanza_id == "s999"


async def test_an_archived_message_is_not_given_to_the_nicks_holder_of_today(setup: Any) -> None:
    """Mallory wrote as "Alice" while the bridge was away; alice@ holds the nick now."""
    archive, inbound, room, ctx = setup
    inbound._mucs.room(ROOM).occupants["Alice"] = "alice@victim.example"
    room.archive = [("s1", "Alice", "written by mallory")]
    await catch_up(archive, inbound)
    assert [i.payload["sender"] for i in ctx.accepted] == [f"{ROOM}/Alice"]


async def test_a_delayed_live_message_is_told_only_by_its_own_stanza(setup: Any) -> None:
    _, inbound, _, ctx = setup
    inbound._mucs.room(ROOM).occupants["Alice"] = "alice@victim.example"
    inbound._mucs.room(ROOM).nicks[ME] = "bridge"
    delayed = (f"<message xmlns='{NS}' from='{ROOM}/Alice' to='{ME}' type='groupchat' id='d1'>"
               "<body>old</body><delay xmlns='urn:xmpp:delay' stamp='2026-12-04T10:00:00Z'/>"
               "</message>")  # fmt: skip
    server = ROOM.split("@")[1].split(".", 1)[1]  # the room's own server
    vouched = delayed.replace("id='d1'>", "id='d2'><x xmlns='http://jabber.org/protocol/muc#user'>"
                              f"<item jid='Bob@{server}/pc'/></x>")  # fmt: skip
    # A room cannot speak for people of another server: that one is known by nick.
    foreign = delayed.replace("id='d1'>", "id='d3'><x xmlns='http://jabber.org/protocol/muc#user'>"
                              "<item jid='Bob@x.example/pc'/></x>")  # fmt: skip
    for xml in (delayed, vouched, foreign):
        await inbound.groupchat(Message(stream=inbound._component.xmpp, xml=ET.fromstring(xml)))
    assert [i.payload["sender"] for i in ctx.accepted] == [
        f"{ROOM}/Alice",
        f"bob@{server}",
        f"{ROOM}/Alice",
    ]


async def test_a_failure_while_releasing_keeps_the_mark_before_what_was_not_taken(
    setup: Any,
) -> None:
    _, inbound, _, ctx = setup
    inbound._mucs.room(ROOM)
    inbound.set_mark(ROOM, "s4")
    inbound.hold(ROOM)
    await inbound.groupchat(_live(inbound, "s5", "Xena", "held 1"))
    await inbound.groupchat(_live(inbound, "s6", "Xena", "held 2"))
    real_accept = ctx.accept_remote

    async def blip(item: Any) -> bool:
        ctx.accept_remote = real_accept
        raise ValueError("a bug, or an outage the inbox does not expect")

    ctx.accept_remote = blip
    await inbound.release(ROOM)  # s5 is not kept; s6 is
    await inbound.groupchat(_live(inbound, "s7", "Xena", "later"))
    await inbound.marks.write()
    mark = await inbound.marks.get(ROOM)
    assert mark is not None and mark.stanza_id == "s4"  # the next catch-up starts before s5
    assert bodies(ctx) == ["held 2", "later"]


async def test_an_exception_while_releasing_keeps_the_mark_before_the_rest(setup: Any) -> None:
    _, inbound, _, ctx = setup
    inbound._mucs.room(ROOM)
    inbound.set_mark(ROOM, "s4")
    inbound.hold(ROOM)
    chat_state = (f"<message xmlns='{NS}' from='{ROOM}/Xena' to='{ME}' type='groupchat' id='c1'>"
                  "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
                  f"<stanza-id xmlns='urn:xmpp:sid:0' id='c1' by='{ROOM}'/></message>")  # fmt: skip
    await inbound.groupchat(Message(stream=inbound._component.xmpp, xml=ET.fromstring(chat_state)))
    await inbound.groupchat(_live(inbound, "s5", "Xena", "held"))
    real_set = ctx.store.kv_set

    async def blip(key: str, value: str) -> None:
        ctx.store.kv_set = real_set
        raise OSError("blip")

    ctx.store.kv_set = blip
    with pytest.raises(OSError):
        await inbound.release(ROOM)
    await inbound.groupchat(_live(inbound, "s6", "Xena", "later"))
    await inbound.marks.write()
    mark = await inbound.marks.get(ROOM)
    assert mark is not None and mark.stanza_id == "s4"


async def test_results_beyond_max_are_asked_for_again(setup: Any) -> None:
    """A server that ignores <max> and says so in <last>: what was dropped comes next page."""
    archive, inbound, room, ctx = setup
    total = PAGE_SIZE + 10
    room.archive = [(f"s{n}", "Xena", f"m{n}") for n in range(total)]

    def answer(iq: Any, query: Any) -> None:  # all after ``after``; <last> the last sent
        qid = query.get("queryid", "")
        after = query.findtext(f"{{{RSM_NS}}}set/{{{RSM_NS}}}after")
        ids = [sid for sid, _, _ in room.archive]
        page = room.archive[ids.index(after) + 1 if after else 0 :]
        for sid, nick, body in page:
            room.feed(result(qid, sid, nick, body))
        last = page[-1][0] if page else ""
        room.feed(f"<iq xmlns='{NS}' type='result' from='{ROOM}' to='{ME}' id='{iq['id']}'>"
                  f"<fin xmlns='{MAM_NS}' complete='true'><set xmlns='{RSM_NS}'>"
                  f"<last>{last}</last></set></fin></iq>")  # fmt: skip

    room.answer = answer  # type: ignore[method-assign]
    taken = await catch_up(archive, inbound)
    assert taken == total and bodies(ctx) == [f"m{n}" for n in range(total)]
