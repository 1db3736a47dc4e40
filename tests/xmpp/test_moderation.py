"""Moderation between MUCs and Matrix without a server: who may remove a message, whose
occupant-id counts, what a kick of a Matrix user's occupant does, and the stored subject."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Iq, Presence
from slixmpp.exceptions import IqError, IqTimeout

from bridge.core import (
    MatrixKick,
    PermanentError,
    RemoteChatInfo,
    RemoteKick,
    RemotePowerLevel,
    RemoteRedaction,
    TransientError,
)
from bridge.core.ids import NetworkID, RemoteChatID, RemoteMessageID, RemoteUserID
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import Portal
from bridge.xmpp.component import Component
from bridge.xmpp.ids import muc_key, reverse_stanza_id_key, stanza_id_key
from bridge.xmpp.inbound import MODERATED, MUC, Inbound
from bridge.xmpp.moderation import (
    MODERATE_NS,
    RETRACT_NS,
    MucModeration,
    mark_removed,
    moderation_announcement,
    moderation_request,
    nick_of_ghost,
    occupant_ghost,
    send_moderation,
    subject_key,
)
from bridge.xmpp.moderator import MatrixModerator
from bridge.xmpp.muc import MUC_USER_NS
from tests.xmpp import test_inbound
from tests.xmpp.test_inbound import (
    DOMAIN,
    LISTENER,
    NS,
    ROOM,
    FakeContext,
    incoming,
)

setup = test_inbound.setup
"""The fixture of the inbound tests: an :class:`Inbound` on a component that sends nowhere."""
OTHER_ROOM = "other@muc.xmpp.example"
ALICE_MXID = "@alice:hub.example"
ALICE_PUPPET = f"alice\\3ahub.example@{DOMAIN}/pontis"
OCC = "urn:xmpp:occupant-id:0"


class Messages:
    """The core's message table, as far as retractions look at it."""

    def __init__(self) -> None:
        self.rows: dict[str, StoredMessage] = {}

    def add(self, remote_id: str, sender: str) -> None:
        self.rows[remote_id] = StoredMessage(
            network=NetworkID("xmpp"), portal_id=RemoteChatID(ROOM),
            remote_id=RemoteMessageID(remote_id), mxid=f"$ev-{remote_id}", room_id="!r:hub",
            sender_id=sender,
        )  # fmt: skip

    async def get_message(self, portal: str, remote_id: str, *_: Any) -> StoredMessage | None:
        return self.rows.get(remote_id) if portal == ROOM else None


def presence(component: Component, frm: str, to: str, inner: str = "", *,
             ptype: str = "") -> Presence:  # fmt: skip
    kind = f" type='{ptype}'" if ptype else ""
    raw = f"<presence xmlns='{NS}' from='{frm}' to='{to}'{kind}>{inner}</presence>"
    stanza = component.xmpp._build_stanza(ET.fromstring(raw))
    assert isinstance(stanza, Presence)
    return stanza


def muc_x(*statuses: str, reason: str = "") -> str:
    codes = "".join(f"<status code='{c}'/>" for c in statuses)
    why = f"<reason>{reason}</reason>" if reason else ""
    return (f"<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' "
            f"role='none'>{why}</item>{codes}</x>")  # fmt: skip


def occupant_id(value: str) -> str:
    return f"<occupant-id xmlns='{OCC}' id='{value}'/>"


def wired(setup: Any) -> tuple[Inbound, Component, FakeContext, MucModeration, Messages]:
    inbound, component, ctx, _, _ = setup
    messages = Messages()
    ctx.store.get_message = messages.get_message

    async def get_portal(remote_id: str, *_: Any) -> Any:
        return Portal(NetworkID("xmpp"), RemoteChatID(remote_id), mxid="!portal:hub.example")

    ctx.store.get_portal = get_portal
    moderation = MucModeration(ctx, f"{LISTENER}/pontis",
                               lambda jid: ALICE_MXID if jid == ALICE_PUPPET.split("/")[0] else None,
        inbound._mucs)  # fmt: skip
    ctx.pending = []
    ctx.background = lambda coro, name="": ctx.journal.append(name) or ctx.pending.append(coro)
    inbound.moderation = moderation
    room = inbound._mucs.room(ROOM)
    room.nicks[f"{LISTENER}/pontis"] = "bridge"
    return inbound, component, ctx, moderation, messages


def moderated_v1(target: str) -> str:
    return (f"<retract xmlns='{RETRACT_NS}' id='{target}'><moderated xmlns='{MODERATE_NS}' "
            f"by='{ROOM}/Mod'/></retract><body>removed</body>")  # fmt: skip


async def test_a_moderation_announced_by_the_room_redacts_the_bridged_message(setup: Any) -> None:
    inbound, component, ctx, _, _ = wired(setup)
    ctx.store.kv[stanza_id_key(ROOM, "S1")] = "x1"  # the room's id of Xena's message x1
    await inbound.groupchat(incoming(component, moderated_v1("S1"), frm=ROOM,
                                     to=f"{LISTENER}/pontis", mtype="groupchat", mid="m"))  # fmt: skip
    v0 = (
        "<apply-to xmlns='urn:xmpp:fasten:0' id='S1'><moderated xmlns='urn:xmpp:message-"
        "moderate:0' by='r'><retract xmlns='urn:xmpp:message-retract:0'/></moderated></apply-to>"
    )
    await inbound.groupchat(incoming(component, v0, frm=ROOM, to=f"{LISTENER}/pontis",
                                     mtype="groupchat", mid="m0"))  # fmt: skip
    assert [i.kind for i in ctx.accepted] == [MODERATED, MODERATED]
    for item in ctx.accepted:
        [event] = await inbound.convert(item)
        assert isinstance(event, RemoteRedaction)
        assert (event.portal, event.target, event.sender) == (muc_key(ROOM), "x1", None)


async def test_a_moderation_written_by_an_occupant_removes_nothing(setup: Any) -> None:
    inbound, component, ctx, _, messages = wired(setup)
    messages.add("x1", f"{ROOM}/Xena")
    forged = incoming(component, moderated_v1("x1"), frm=f"{ROOM}/Mallory",
                      to=f"{LISTENER}/pontis", mtype="groupchat", mid="f1")  # fmt: skip
    await inbound.groupchat(forged)
    [item] = ctx.accepted
    assert item.kind == MUC  # not taken as the room's word
    assert await inbound.convert(item) == []
    # Xena's own retraction of the same message goes through.
    own = incoming(component, f"<retract xmlns='{RETRACT_NS}' id='x1'/>", frm=f"{ROOM}/Xena",
                   to=f"{LISTENER}/pontis", mtype="groupchat", mid="r1")  # fmt: skip
    await inbound.groupchat(own)
    [event] = await inbound.convert(ctx.accepted[1])
    assert isinstance(event, RemoteRedaction) and event.target == "x1"


async def test_a_moderation_from_another_room_or_a_person_touches_only_its_own_chat(
    setup: Any,
) -> None:
    inbound, component, ctx, _, _ = wired(setup)
    ctx.store.kv[stanza_id_key(ROOM, "S1")] = "x1"
    for frm in (OTHER_ROOM, "mallory@xmpp.example"):
        await inbound.groupchat(incoming(component, moderated_v1("S1"), frm=frm,
                                         to=f"{LISTENER}/pontis", mtype="groupchat"))  # fmt: skip
    for item in ctx.accepted:
        assert item.portal != muc_key(ROOM)
        for event in await inbound.convert(item):
            assert event.portal != muc_key(ROOM) and getattr(event, "target", "") != "x1"


async def test_occupant_ids_key_ghosts_only_where_the_room_vouches_for_them(setup: Any) -> None:
    inbound, component, ctx, moderation, _ = wired(setup)
    listener = f"{LISTENER}/pontis"
    # The room put an occupant-id in our own join: it adds (and strips forged) ids.
    moderation.on_presence(presence(component, f"{ROOM}/bridge", listener,
                                    muc_x("110") + occupant_id("ours")))  # fmt: skip
    moderation.on_presence(presence(component, f"{ROOM}/Xena", listener,
                                    muc_x() + occupant_id("XENA")))  # fmt: skip
    await inbound.groupchat(incoming(component, "<body>hi</body>", frm=f"{ROOM}/Xena",
                                     to=listener, mtype="groupchat", mid="a"))  # fmt: skip
    # A nick change and a rejoin: a new nick, the same occupant-id, the same ghost.
    await inbound.groupchat(incoming(component, "<body>again</body>" + occupant_id("XENA"),
                                     frm=f"{ROOM}/Xena2", to=listener, mtype="groupchat",
                                     mid="b"))  # fmt: skip
    senders = [i.payload["sender"] for i in ctx.accepted]
    assert senders == [occupant_ghost(ROOM, "XENA")] * 2
    # The same id in another room names someone else there.
    assert occupant_ghost(OTHER_ROOM, "XENA") != occupant_ghost(ROOM, "XENA")
    # A room that did not vouch (no occupant-id in our join): an id a client wrote is ignored.
    inbound._mucs.room(OTHER_ROOM).nicks[listener] = "bridge"
    moderation.on_presence(presence(component, f"{OTHER_ROOM}/bridge", listener, muc_x("110")))
    await inbound.groupchat(incoming(component, "<body>I am Xena</body>" + occupant_id("XENA"),
                                     frm=f"{OTHER_ROOM}/Mallory", to=listener,
                                     mtype="groupchat", mid="c"))  # fmt: skip
    assert ctx.accepted[2].payload["sender"] == f"{OTHER_ROOM}/Mallory"


async def test_a_kick_of_a_matrix_users_occupant_is_told_and_holds_until_they_rejoin(
    setup: Any,
) -> None:
    _, component, ctx, moderation, _ = wired(setup)
    listener = f"{LISTENER}/pontis"
    kick = presence(component, f"{ROOM}/Alice", ALICE_PUPPET, muc_x("307", "110", reason="spam"),
                    ptype="unavailable")  # fmt: skip
    moderation.on_presence(kick)  # the listener is not known to be in the room yet
    assert moderation.refusal(ROOM, ALICE_MXID) is None and not ctx.queued
    moderation.on_presence(presence(component, f"{ROOM}/bridge", listener, muc_x("110")))
    # A kick "from" a JID that is no room the listener is in changes nothing.
    moderation.on_presence(presence(component, "mallory@xmpp.example/x", ALICE_PUPPET,
                                    muc_x("307", "110"), ptype="unavailable"))  # fmt: skip
    assert moderation.refusal("mallory@xmpp.example", ALICE_MXID) is None
    moderation.on_presence(kick)
    refused = moderation.refusal(ROOM, ALICE_MXID)
    assert refused is not None and "rejoin" in (refused.user_message or "")
    assert ctx.journal[-1] == f"notice kicked {ROOM}"
    for coro in ctx.pending:
        await coro
    [notice] = ctx.queued
    assert "kicked @alice:hub.example" in notice.parts[0].text and "(spam)" in notice.parts[0].text
    moderation.matrix_rejoined(ROOM, ALICE_MXID)
    assert moderation.refusal(ROOM, ALICE_MXID) is None


async def test_the_subject_is_stored_and_shown_once_per_change(setup: Any) -> None:
    inbound, component, ctx, _, _ = wired(setup)
    for _ in range(2):  # every join repeats it
        await inbound.groupchat(incoming(component, "<subject>Plans</subject>", frm=ROOM,
                                         to=f"{LISTENER}/pontis", mtype="groupchat"))  # fmt: skip
    assert ctx.store.kv[subject_key(ROOM)] == "Plans"
    [info] = ctx.queued
    assert isinstance(info, RemoteChatInfo) and info.info.topic == "Plans"
    assert not ctx.accepted


def test_requests_and_announcements_say_what_xep_0425_asks(setup: Any) -> None:
    _, component, *_ = setup
    iq = moderation_request(component, ROOM, ALICE_PUPPET, "S1", "spam")
    moderate = iq.xml.find(f"{{{MODERATE_NS}}}moderate")
    assert iq["type"] == "set" and str(iq["to"]) == ROOM and moderate is not None
    assert moderate.get("id") == "S1" and moderate.find(f"{{{RETRACT_NS}}}retract") is not None
    msg = moderation_announcement(component, "lobby@rooms", "xeno@x/phone", "m1", "Alice", "a1")
    retract = msg.xml.find(f"{{{RETRACT_NS}}}retract")
    assert str(msg["from"]) == "lobby@rooms" and msg["type"] == "groupchat"
    assert retract is not None and retract.get("id") == "m1"
    moderated = retract.find(f"{{{MODERATE_NS}}}moderated")
    assert moderated is not None and moderated.get("by") == "lobby@rooms/Alice"


def test_a_ghost_is_found_by_its_nick_its_occupant_id_or_its_real_jid() -> None:
    occupants: dict[str, str | None] = {"Xena": None, "Yan": "yan@xmpp.example"}
    ids = {"Xena": "XENA-ID"}
    ghost = occupant_ghost(ROOM, "XENA-ID")
    assert nick_of_ghost(ROOM, ghost, occupants, ids) == ("Xena", None)
    assert nick_of_ghost(ROOM, f"{ROOM}/Xena", occupants, ids) == ("Xena", None)
    assert nick_of_ghost(ROOM, "yan@xmpp.example", occupants, ids) == ("Yan", "yan@xmpp.example")
    # Gone from the room, or a ghost of another room: nobody here to kick by nick.
    assert nick_of_ghost(ROOM, f"{ROOM}/Zed", occupants, ids) == (None, None)
    assert nick_of_ghost(ROOM, occupant_ghost(OTHER_ROOM, "XENA-ID"), occupants, ids) == (
        None, "other@muc.xmpp.example/occupant-id:" + ghost.rsplit(":", 1)[1],
    )  # fmt: skip


def test_a_removal_presence_says_kicked_or_banned_and_why(setup: Any) -> None:
    _, component, *_ = setup
    x = muc_x().replace("role='none'", "role='participant'")
    banned = mark_removed(presence(component, f"{ROOM}/Xeno", "xeno@x/phone", x,
                                   ptype="unavailable"), ban=True, reason="spamming")  # fmt: skip
    item = banned.xml.find(f".//{{{MUC_USER_NS}}}item")
    assert item is not None and (item.get("role"), item.get("affiliation")) == ("none", "outcast")
    assert item.findtext(f"{{{MUC_USER_NS}}}reason") == "spamming"
    codes = {s.get("code") for s in banned.xml.iterfind(f".//{{{MUC_USER_NS}}}status")}
    assert codes == {"301"}
    kicked = mark_removed(presence(component, f"{ROOM}/Xeno", "xeno@x/phone", muc_x(),
                                   ptype="unavailable"), ban=False, reason="")  # fmt: skip
    codes = {s.get("code") for s in kicked.xml.iterfind(f".//{{{MUC_USER_NS}}}status")}
    assert codes == {"307"}


async def test_an_xmpp_kick_or_ban_of_a_person_kicks_or_bans_their_ghost(setup: Any) -> None:
    _, component, ctx, moderation, _ = wired(setup)
    listener = f"{LISTENER}/pontis"
    room = setup[0]._mucs.room(ROOM)
    room.nicks[ALICE_PUPPET] = "Alice"

    def gone(nick: str, *codes: str, reason: str = "") -> Presence:
        return presence(component, f"{ROOM}/{nick}", listener, muc_x(*codes, reason=reason),
                        ptype="unavailable")  # fmt: skip

    moderation.on_presence(gone("Xena", "307"))  # before the listener is in: nothing
    moderation.on_presence(presence(component, f"{ROOM}/bridge", listener,
                                    muc_x("110") + occupant_id("ours")))  # fmt: skip
    moderation.on_presence(presence(component, f"{ROOM}/Xena", listener,
                                    muc_x() + occupant_id("XENA")))  # fmt: skip
    moderation.on_presence(gone("Xena", "307", reason="rude"))
    moderation.on_presence(gone("Yan", "301"))
    moderation.on_presence(gone("Alice", "307"))  # our own puppet: handled as a notice instead
    moderation.on_presence(gone("Zed"))  # an ordinary leave
    for coro in ctx.pending:
        await coro
    kicks = [(e.target, e.ban, e.reason) for e in ctx.queued if isinstance(e, RemoteKick)]
    assert kicks == [(occupant_ghost(ROOM, "XENA"), False, "rude"), (f"{ROOM}/Yan", True, "")]


async def test_occupants_announced_before_our_own_join_keep_their_occupant_id(setup: Any) -> None:
    _, component, ctx, moderation, _ = wired(setup)
    listener = f"{LISTENER}/pontis"
    # XEP-0045 §7.2.3: the others' presence first, our own (110) last.
    moderation.on_presence(presence(component, f"{ROOM}/Xena", listener,
                                    muc_x() + occupant_id("XENA")))  # fmt: skip
    assert moderation.occupant_ids(ROOM) == {}  # not yet vouched for
    moderation.on_presence(presence(component, f"{ROOM}/bridge", listener,
                                    muc_x("110") + occupant_id("ours")))  # fmt: skip
    assert moderation.occupant_ids(ROOM) == {"Xena": "XENA"}
    moderation.on_presence(presence(component, f"{ROOM}/Xena", listener, muc_x("307"),
                                    ptype="unavailable"))  # fmt: skip
    for coro in ctx.pending:
        await coro
    [kick] = ctx.queued
    assert isinstance(kick, RemoteKick) and kick.target == occupant_ghost(ROOM, "XENA")


@pytest.mark.parametrize(("condition", "hint"), [
    ("forbidden", "not a moderator"),
    ("feature-not-implemented", "does not support moderation"),
    ("service-unavailable", "does not support moderation"),
    ("item-not-found", "no longer knows"),
    ("internal-server-error", "internal-server-error"),
])  # fmt: skip
async def test_a_refused_moderation_tells_the_matrix_moderator_why(
    setup: Any, monkeypatch: pytest.MonkeyPatch, condition: str, hint: str
) -> None:
    _, component, *_ = setup

    async def refuse(iq: Iq, *_: Any, **__: Any) -> None:
        error = iq.reply(clear=False)
        error["type"] = "error"
        error["error"]["condition"] = condition
        raise IqError(error)

    monkeypatch.setattr(Iq, "send", refuse)
    with pytest.raises(PermanentError) as refused:
        await send_moderation(component, ROOM, ALICE_PUPPET, "S1")
    assert hint in (refused.value.user_message or "")
    assert "removed in Matrix only" in (refused.value.user_message or "")

    async def silent(iq: Iq, *_: Any, **__: Any) -> None:
        raise IqTimeout(iq)

    monkeypatch.setattr(Iq, "send", silent)
    with pytest.raises(TransientError):  # the portal tries again
        await send_moderation(component, ROOM, ALICE_PUPPET, "S1")


async def test_affiliations_and_roles_become_the_ghosts_power_levels(setup: Any) -> None:
    _, component, ctx, moderation, _ = wired(setup)
    listener = f"{LISTENER}/pontis"
    setup[0]._mucs.room(ROOM).nicks[ALICE_PUPPET] = "Alice"

    def seen(nick: str, affiliation: str, role: str, extra: str = "") -> Presence:
        item = f"<item affiliation='{affiliation}' role='{role}'/>"
        return presence(component, f"{ROOM}/{nick}", listener,
                        f"<x xmlns='{MUC_USER_NS}'>{item}</x>{extra}")  # fmt: skip

    moderation.on_presence(seen("Xena", "owner", "moderator", occupant_id("XENA")))
    moderation.on_presence(seen("Yan", "member", "participant"))
    moderation.on_presence(seen("Alice", "admin", "moderator"))  # our own puppet: not a ghost
    assert ctx.pending == []  # nothing before the room vouches for its occupant-ids
    moderation.on_presence(presence(component, f"{ROOM}/bridge", listener,
                                    muc_x("110") + occupant_id("ours")))  # fmt: skip
    moderation.on_presence(seen("Yan", "member", "moderator"))  # given voice… and moderation
    moderation.on_presence(seen("Yan", "member", "moderator"))  # the same again: nothing
    moderation.on_presence(seen("Yan", "member", "participant"))  # taken back
    for coro in ctx.pending:
        await coro
    levels = [(e.target, e.level) for e in ctx.queued if isinstance(e, RemotePowerLevel)]
    assert levels == [(occupant_ghost(ROOM, "XENA"), 100), (f"{ROOM}/Yan", 50), (f"{ROOM}/Yan", 0)]


async def test_a_copied_origin_id_does_not_take_over_the_first_messages_stanza_id(
    setup: Any,
) -> None:
    """Mallory reuses Xena's origin-id: the room's id of Xena's message stays Xena's, and a
    moderation of Mallory's message does not redact Xena's."""
    inbound, component, ctx, _, _ = wired(setup)
    me = f"{LISTENER}/pontis"

    def msg(nick: str, sid: str) -> Any:
        inner = (f"<body>hi</body><origin-id xmlns='urn:xmpp:sid:0' id='X'/>"
                 f"<stanza-id xmlns='urn:xmpp:sid:0' id='{sid}' by='{ROOM}'/>")  # fmt: skip
        return incoming(component, inner, frm=f"{ROOM}/{nick}", to=me, mtype="groupchat", mid="X")

    await inbound.groupchat(msg("Xena", "S1"))
    await inbound.groupchat(msg("Mallory", "S2"))
    for item in list(ctx.accepted):
        await inbound.convert(item)
    assert ctx.store.kv[reverse_stanza_id_key(ROOM, "X")] == "S1"
    assert stanza_id_key(ROOM, "S2") not in ctx.store.kv
    await inbound.groupchat(incoming(component, moderated_v1("S2"), frm=ROOM, to=me,
                                     mtype="groupchat", mid="m"))  # fmt: skip
    [event] = await inbound.convert(ctx.accepted[-1])
    assert isinstance(event, RemoteRedaction) and event.target != "X"


async def test_a_matrix_unban_asks_a_bridged_muc_nothing(setup: Any, monkeypatch: Any) -> None:
    """Lifting a Matrix ban must not kick the person, who may be in the MUC, from it."""
    inbound, component, ctx, moderation, _ = wired(setup)
    inbound._mucs.room(ROOM).occupants["Xena"] = "xena@x.example"
    sent: list[Iq] = []

    async def capture(iq: Iq, *_: Any, **__: Any) -> None:
        sent.append(iq)

    monkeypatch.setattr(Iq, "send", capture)

    async def puppet_in(room: str, mxid: str, name: str) -> str:
        return ALICE_PUPPET

    moderator = MatrixModerator(ctx, component, None, inbound._mucs, moderation, puppet_in)
    ghost = ctx.ghost_names.mxid(NetworkID("xmpp"), RemoteUserID("xena@x.example"))
    portal = Portal(NetworkID("xmpp"), RemoteChatID(ROOM), mxid="!portal:hub.example")
    await moderator.kick(MatrixKick(portal=portal, event_id="$unban", sender=ALICE_MXID,
                                    sender_name="Alice", timestamp=0, target=ghost, unban=True))  # fmt: skip
    assert sent == []


async def test_a_nick_spelling_an_occupant_id_ghost_does_not_speak_as_it(setup: Any) -> None:
    inbound, component, ctx, _, _ = wired(setup)
    xena = occupant_ghost(ROOM, "XENA")
    nick = xena.split("/", 1)[1]
    await inbound.groupchat(incoming(component, "<body>I am Xena</body>", frm=f"{ROOM}/{nick}",
                                     to=f"{LISTENER}/pontis", mtype="groupchat", mid="b"))  # fmt: skip
    [item] = ctx.accepted
    assert item.payload["sender"] != xena
    assert nick_of_ghost(ROOM, item.payload["sender"], {nick: None}, {}) == (nick, None)


async def test_a_strangers_groupchat_and_presence_make_no_room_key_or_poller(setup: Any) -> None:
    """Anyone can send "groupchat" to the listener: only rooms we joined are heard."""
    inbound, component, ctx, moderation, _ = wired(setup)
    me, evil = f"{LISTENER}/pontis", "m@evil.example"
    kv_before = dict(ctx.store.kv)
    for n in range(20):
        inner = (f"<body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' id='s{n}' by='{evil}'/>"
                 if n % 2 else "<subject>s</subject>")  # fmt: skip
        await inbound.groupchat(incoming(component, inner, frm=f"{evil}/r", to=me,
                                         mtype="groupchat", mid=f"a{n}"))  # fmt: skip
    assert evil not in inbound._mucs.rooms and ctx.accepted == [] and ctx.store.kv == kv_before
    await inbound.marks.write()
    assert evil not in inbound.marks._store.marks
    item = "<item affiliation='owner' role='moderator'/>"
    moderation.on_presence(
        presence(
            component,
            f"{evil}/self",
            me,
            f"<x xmlns='{MUC_USER_NS}'>{item}<status code='110'/></x>",
        )
    )
    moderation.on_presence(
        presence(component, f"{evil}/n", me, f"<x xmlns='{MUC_USER_NS}'>{item}</x>")
    )
    assert ctx.pending == []


async def test_a_crowded_room_waits_for_its_portal_once(setup: Any) -> None:
    _, component, ctx, moderation, _ = wired(setup)
    me = f"{LISTENER}/pontis"
    moderation.on_presence(presence(component, f"{ROOM}/bridge", me, muc_x("110")))
    item = "<item affiliation='admin' role='moderator'/>"
    for n in range(50):
        moderation.on_presence(presence(component, f"{ROOM}/n{n}", me,
                                        f"<x xmlns='{MUC_USER_NS}'>{item}</x>"))  # fmt: skip
    assert len(ctx.pending) == 1
    await ctx.pending[0]
    levels = [e.target for e in ctx.queued if isinstance(e, RemotePowerLevel)]
    assert levels == [f"{ROOM}/n{n}" for n in range(50)]


async def test_a_matrix_users_occupant_under_a_forgotten_nick_gets_no_ghost(setup: Any) -> None:
    """After a reconnect our nicks are forgotten: the room still shows Alice's occupant with
    her real JID. It is hers, not an XMPP person's: no power level, no kick of a ghost."""
    _, component, ctx, moderation, _ = wired(setup)
    me = f"{LISTENER}/pontis"

    def alice(extra: str = "", aff: str = "admin", role: str = "moderator") -> str:
        return (f"<x xmlns='{MUC_USER_NS}'><item affiliation='{aff}' role='{role}' "
                f"jid='{ALICE_PUPPET}'/>{extra}</x>")  # fmt: skip

    moderation.on_presence(presence(component, f"{ROOM}/bridge", me, muc_x("110")))
    moderation.on_presence(presence(component, f"{ROOM}/Alice", me, alice()))
    moderation.on_presence(presence(component, f"{ROOM}/Alice", me,
                                    alice("<status code='307'/>", "none", "none"),
                                    ptype="unavailable"))  # fmt: skip
    for coro in ctx.pending:
        await coro
    assert ctx.queued == []


async def test_a_kick_of_the_relay_bots_occupant_does_not_stop_the_relay(setup: Any) -> None:
    _, component, ctx, moderation, _ = wired(setup)
    ctx.background = lambda coro, name="": coro.close()  # the notice to Matrix: not looked at
    bot, bot_jid = ctx.bot_mxid, f"bot\\3ahub.example@{DOMAIN}"
    moderation._puppet_mxid = lambda jid: bot if jid == bot_jid else None
    moderation.on_presence(presence(component, f"{ROOM}/bridge", f"{LISTENER}/pontis",
                                    muc_x("110")))  # fmt: skip
    kicked = presence(component, f"{ROOM}/relay", f"{bot_jid}/pontis", muc_x("307", "110"),
                      ptype="unavailable")  # fmt: skip
    moderation.on_presence(kicked)
    assert moderation.refusal(ROOM, bot) is None  # the bot never "rejoins in Matrix"
    # A bot known only from the messages it relays (another bot name than the context's):
    other, other_jid = "@relay:hub.example", f"relay\\3ahub.example@{DOMAIN}"
    moderation._puppet_mxid = lambda jid: other if jid == other_jid else None
    kicked = presence(component, f"{ROOM}/relay2", f"{other_jid}/pontis", muc_x("307", "110"),
                      ptype="unavailable")  # fmt: skip
    moderation.on_presence(kicked)
    assert moderation.refusal(ROOM, other) is not None
    moderation.relayed_by(other)
    assert moderation.refusal(ROOM, other) is None
