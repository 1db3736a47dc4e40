"""Rooms the bridge hosts, without a server (issue #14): the bridge never joins them itself,
self-pings are answered only for current occupants, disco#info gets one answer, and occupants
are kept in the store across a restart. The stream is real slixmpp; stanzas are fed to it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Iq, Presence
from slixmpp.xmlstream import StanzaBase

from bridge.core import NotFound
from bridge.core.federation import FederationPolicy
from bridge.portal.models import Portal
from bridge.xmpp.client import XmppClient
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.hosted import HostedRooms
from bridge.xmpp.ids import NETWORK
from bridge.xmpp.muc import JoinError

DOMAIN = "matrix.xmpp.example"
ROOMS = "rooms.xmpp.example"
ROOM = f"lobby\\3ahub.example@{ROOMS}"
XENA = "xena@xmpp.example/phone"
NS = "jabber:component:accept"
PING = "<ping xmlns='urn:xmpp:ping'/>"
DISCO = "<query xmlns='http://jabber.org/protocol/disco#info'/>"


class MemoryStore:
    def __init__(self) -> None:
        self.occupants: dict[str, dict[str, str]] = {}

    async def hosted_occupants(self) -> dict[str, dict[str, str]]:
        return {room: dict(nicks) for room, nicks in self.occupants.items()}

    async def set_occupant(self, room: str, nick: str, jid: str) -> None:
        self.occupants.setdefault(room, {})[nick] = jid

    async def remove_occupant(self, room: str, nick: str) -> None:
        self.occupants.get(room, {}).pop(nick, None)


@dataclass
class FakeContext:
    log: logging.Logger = logging.getLogger("test.xmpp.hosted")
    bot_mxid: str = "@bot:hub.example"
    federation: FederationPolicy = field(
        default_factory=lambda: FederationPolicy(None, "hub.example")
    )
    queued: list[Any] = field(default_factory=list)
    kv: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> Any:
        return self  # the core's key-value store (bans of hosted rooms)

    async def kv_get(self, key: str) -> str | None:
        return self.kv.get(key)

    async def matrix_power_levels(self, room_id: str) -> tuple[dict[str, Any], list[str]]:
        return {"users": {"@alice:hub.example": 100}}, []

    async def adopt_matrix_room(self, key: Any, alias: str) -> Portal:
        return Portal(
            network=NETWORK, remote_id=key.remote_id, mxid="!lobby:hub.example", topic="t"
        )

    async def matrix_members(self, room_id: str) -> dict[str, str]:
        return {"@alice:hub.example": "Alice"}

    memberships: dict[str, str] = field(default_factory=dict)
    """ghost mxid → its membership in the portal room, as the homeserver says."""
    homeserver_down: bool = False

    def ghost_mxid(self, user: str) -> str:
        return f"@xmpp_{user}:hub.example"

    async def matrix_membership(self, room_id: str, mxid: str) -> str | None:
        if self.homeserver_down:
            raise OSError("homeserver unreachable")
        return self.memberships.get(mxid)

    async def matrix_history(self, room_id: str, limit: int) -> list[tuple[str, str, str, int]]:
        return [("$e1", "Alice", "earlier", 1_700_000_000_000)]

    async def queue_remote_event(self, event: Any) -> None:
        self.queued.append(event)


def make_cfg() -> XmppConfig:
    return XmppConfig(jid=DOMAIN, host="127.0.0.1", port=5347, secret="s", rooms_domain=ROOMS,
                      upload_service="", muc_nick="bridge", history_on_join=5,
                      max_file_bytes=1000)  # fmt: skip


async def make_rooms(store: MemoryStore) -> tuple[HostedRooms, list[StanzaBase], FakeContext]:
    ctx = FakeContext()
    rooms = HostedRooms(make_cfg(), ctx, store)  # type: ignore[arg-type]
    await rooms.load()
    rooms.component.up = True
    rooms.component.xmpp.loop = asyncio.get_running_loop()
    sent: list[StanzaBase] = []
    rooms.component.xmpp.send = lambda stanza, *_, **__: sent.append(stanza)  # type: ignore[method-assign]
    return rooms, sent, ctx


def presence(rooms: HostedRooms, frm: str, to: str, kind: str = "") -> Presence:
    attrs = f" type='{kind}'" if kind else ""
    xml = (f"<presence xmlns='{NS}' from='{frm}' to='{to}'{attrs}>"
           "<x xmlns='http://jabber.org/protocol/muc'/></presence>")  # fmt: skip
    return Presence(stream=rooms.component.xmpp, xml=ET.fromstring(xml))


async def iq(
    rooms: HostedRooms, sent: list[StanzaBase], frm: str, to: str, payload: str
) -> list[Iq]:
    """Feed an iq get to the stream; the iq answers it got (after every handler ran)."""
    before = len(sent)
    rooms.component.xmpp._spawn_event(
        ET.fromstring(f"<iq xmlns='{NS}' type='get' id='q1' from='{frm}' to='{to}'>{payload}</iq>")
    )
    await asyncio.sleep(0.05)  # slixmpp's own handlers are coroutines: let them run
    return [s for s in sent[before:] if isinstance(s, Iq) and s["id"] == "q1"]


@pytest.fixture
async def joined() -> tuple[HostedRooms, list[StanzaBase], MemoryStore, FakeContext]:
    store = MemoryStore()
    rooms, sent, ctx = await make_rooms(store)
    await rooms._on_stanza(presence(rooms, XENA, f"{ROOM}/Xena"))
    return rooms, sent, store, ctx


async def test_self_pings_are_answered_only_for_current_occupants(joined: Any) -> None:
    rooms, sent, store, _ = joined
    [stranger] = await iq(rooms, sent, "mallory@evil.example/x", f"{ROOM}/Xena", PING)
    assert stranger["type"] == "error" and stranger["error"]["condition"] == "not-acceptable"
    [forgotten] = await iq(rooms, sent, "xena@xmpp.example/other", f"{ROOM}/Xena", PING)
    assert forgotten["error"]["condition"] == "not-acceptable"  # another client of hers
    [own] = await iq(rooms, sent, XENA, f"{ROOM}/Xena", PING)
    assert own["type"] == "result"
    [member] = await iq(rooms, sent, XENA, f"{ROOM}/Alice", PING)
    assert member["type"] == "result"
    [nobody] = await iq(rooms, sent, XENA, f"{ROOM}/Nobody", PING)
    assert nobody["error"]["condition"] == "item-not-found"
    [service] = await iq(rooms, sent, "mallory@evil.example/x", ROOMS, PING)
    assert service["type"] == "result"
    await rooms._on_stanza(presence(rooms, XENA, f"{ROOM}/Xena", "unavailable"))
    [left] = await iq(rooms, sent, XENA, f"{ROOM}/Xena", PING)
    assert left["error"]["condition"] == "not-acceptable"
    assert store.occupants[ROOM] == {}


async def test_disco_info_gets_exactly_one_answer(joined: Any) -> None:
    rooms, sent, *_ = joined
    for target in (ROOM, ROOMS):
        [answer] = await iq(rooms, sent, XENA, target, DISCO)
        features = {
            f.get("var") for f in answer.xml.iter("{http://jabber.org/protocol/disco#info}feature")
        }
        assert "http://jabber.org/protocol/muc" in features


async def test_the_bridge_never_joins_its_own_rooms() -> None:
    store = MemoryStore()
    rooms, sent, ctx = await make_rooms(store)
    for ours in (f"bridge@{DOMAIN}/pontis", f"alice\\3ahub.example@{DOMAIN}/pontis", f"{ROOMS}/x"):
        await rooms._on_stanza(presence(rooms, ours, f"{ROOM}/Matrix bridge"))
    assert rooms.occupants(ROOM) == [] and store.occupants == {} and ctx.queued == []
    assert [s["error"]["condition"] for s in sent] == ["not-allowed"] * 3


async def test_occupants_survive_a_restart_and_a_rejoin_gets_no_history_again(joined: Any) -> None:
    _, sent, store, ctx = joined
    history = [s for s in sent if s.xml.findtext(f"{{{NS}}}body") == "earlier"]
    assert len(history) == 1 and history[0]["id"].startswith("pontis-msg-")
    assert history[0]["stanza_id"]["id"] == history[0]["id"]
    assert len(ctx.queued) == 1  # Matrix hears of the new member once

    restarted, sent2, ctx2 = await make_rooms(store)
    assert restarted.occupants(ROOM) == [XENA]
    [pong] = await iq(restarted, sent2, XENA, f"{ROOM}/Xena", PING)
    assert pong["type"] == "result"
    await restarted._on_stanza(presence(restarted, XENA, f"{ROOM}/Xena"))  # her client joins again
    assert not [s for s in sent2 if s.xml.findtext(f"{{{NS}}}body") == "earlier"]
    assert [s["subject"] for s in sent2 if s.xml.find(f"{{{NS}}}subject") is not None] == ["t"]
    assert ctx2.queued == [] and restarted.occupants(ROOM) == [XENA]


async def test_an_occupant_whose_client_is_gone_is_removed(joined: Any) -> None:
    rooms, _, store, _ = joined
    bounce = (f"<message xmlns='{NS}' type='error' from='{XENA}' to='{ROOM}/Alice'><error "
              "type='cancel'><recipient-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
              "</error></message>")  # fmt: skip
    forged = bounce.replace(f"from='{XENA}'", "from='mallory@evil.example/x'")
    await rooms._on_stanza(rooms.component.xmpp._build_stanza(ET.fromstring(forged)))  # type: ignore[arg-type]
    assert rooms.occupants(ROOM) == [XENA]
    await rooms._on_stanza(rooms.component.xmpp._build_stanza(ET.fromstring(bounce)))  # type: ignore[arg-type]
    assert rooms.occupants(ROOM) == [] and store.occupants[ROOM] == {}


async def test_a_reconnect_rejoins_bridged_mucs_but_never_the_rooms_it_hosts() -> None:
    class Ctx(FakeContext):
        store: Any = None
        started: list[str] = []

        def __init__(self) -> None:
            super().__init__()
            self.store = self
            self.started = []

        async def list_portals(self) -> list[Portal]:
            return [Portal(network=NETWORK, remote_id=ROOM),  # type: ignore[arg-type]
                    Portal(network=NETWORK, remote_id="team@muc.xmpp.example")]  # type: ignore[arg-type]  # fmt: skip

        def background(self, coro: Any, *, name: str) -> None:
            coro.close()
            self.started.append(name)

        def set_client_state(self, *_: Any, **__: Any) -> None:
            pass

    ctx = Ctx()
    client = XmppClient(ctx, make_cfg(), MemoryStore())  # type: ignore[arg-type]
    await client._on_state(True, "")
    assert ctx.started == ["rejoin team@muc.xmpp.example"]
    with pytest.raises(JoinError, match="not-allowed"):
        await client.joins.join_listener(ROOM)
    with pytest.raises(NotFound):
        await client.bridge_room(ROOM, "@alice:hub.example")


async def test_a_new_session_of_the_same_person_takes_over_a_stale_nick(joined: Any) -> None:
    rooms, sent, store, _ = joined
    await rooms._on_stanza(presence(rooms, "xena@xmpp.example/laptop", f"{ROOM}/Xena"))
    assert rooms.occupants(ROOM) == ["xena@xmpp.example/laptop"]
    assert store.occupants[ROOM] == {"Xena": "xena@xmpp.example/laptop"}
    await rooms._on_stanza(presence(rooms, "mallory@evil.example/x", f"{ROOM}/Xena"))
    assert sent[-1]["error"]["condition"] == "conflict"
    assert rooms.occupants(ROOM) == ["xena@xmpp.example/laptop"]


@pytest.mark.parametrize("down", [False, True])
async def test_a_ghost_banned_in_matrix_cannot_join_whoever_banned_it(down: bool) -> None:
    """A ban the bridge never relayed (a relay-level moderator's, another bridge's, one from
    before) keeps the person out; if the homeserver cannot say, they are asked to wait."""
    store = MemoryStore()
    rooms, sent, ctx = await make_rooms(store)
    ctx.memberships[ctx.ghost_mxid("xena@xmpp.example")] = "ban"
    ctx.homeserver_down = down
    await rooms._on_stanza(presence(rooms, XENA, f"{ROOM}/Xena"))
    assert rooms.occupants(ROOM) == [] and store.occupants.get(ROOM, {}) == {}
    [error] = [s for s in sent if s["type"] == "error"]
    assert error["error"]["type"] == ("wait" if down else "auth")
    ctx.memberships.clear()
    ctx.homeserver_down = False
    await rooms._on_stanza(presence(rooms, XENA, f"{ROOM}/Xena"))
    assert rooms.occupants(ROOM) == [XENA]


async def test_presence_to_rooms_that_do_not_exist_keeps_nothing() -> None:
    rooms, _, ctx = await make_rooms(MemoryStore())

    async def no_room(key: Any, alias: str) -> None:
        return None

    ctx.adopt_matrix_room = no_room  # type: ignore[assignment,method-assign]
    for n in range(20):
        await rooms._on_stanza(presence(rooms, XENA, f"r{n}@{ROOMS}/n", "unavailable"))
        await rooms._on_stanza(presence(rooms, XENA, f"s{n}@{ROOMS}/n"))
    assert rooms._rooms == {}
