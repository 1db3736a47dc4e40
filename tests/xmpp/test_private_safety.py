"""Private messages in MUCs, the hostile cases of the review of private.py: a nick taken over by
someone else, errors a bridged MUC would punish, answers that would rejoin a Matrix user into a
room they left, and hosted rooms' policy and ambiguous names."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core import MatrixReceipt, PermanentError
from bridge.core.federation import FederationPolicy
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import Portal
from bridge.xmpp.chat_states import ChatStates
from bridge.xmpp.ids import NETWORK
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.private import PrivateMessages
from tests.xmpp.test_hosted import ROOM as HOSTED_ROOM
from tests.xmpp.test_hosted import XENA, MemoryStore, make_rooms, presence
from tests.xmpp.test_muc_extras import (
    ALICE_MXID,
    ALICE_OCCUPANT,
    ROOM,
    FakeContext,
    bridged,  # noqa: F401 (fixture)
    make_cfg,
    make_component,
    message,
    occupant_presence,
)

PORTAL_ROOM = "!r:hub.example"


def joined(ctx: FakeContext, membership: str = "join") -> None:
    ctx.portals[ROOM] = Portal(network=NETWORK, remote_id=ROOM, mxid=PORTAL_ROOM)
    ctx.memberships[(PORTAL_ROOM, ALICE_MXID)] = membership


def pm_portal(room: str, nick: str) -> Portal:
    return Portal(network=NETWORK, remote_id=f"{room}/{nick}", receiver=ALICE_MXID, is_direct=True)


async def test_relayed_private_messages_are_never_answered_with_an_error(
    bridged: Any,  # noqa: F811
) -> None:
    private, component, ctx, _, sent = bridged
    sent.clear()
    huge = message(component, "<body>" + "x" * 61000 + "</body>", frm=f"{ROOM}/Xena",
                   to=ALICE_OCCUPANT)  # fmt: skip
    await private.from_bridged(huge)

    async def store_down(_: Any) -> bool:
        raise OSError("database unreachable")

    ctx.accept_remote = store_down
    await private.from_bridged(
        message(component, "<body>hi</body>", frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT)
    )
    assert sent == []  # an error to an occupant gets ours kicked (307)


async def test_a_bridged_nick_taken_over_by_someone_else_is_refused_both_ways(
    bridged: Any,  # noqa: F811
) -> None:
    private, component, ctx, mucs, sent = bridged
    joined(ctx)
    await private.from_bridged(
        message(component, "<body>psst</body>", frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT)
    )
    assert len(ctx.accepted) == 1
    mucs.on_presence(occupant_presence(component, "Xena", ALICE_OCCUPANT, gone=True))
    mucs.on_presence(
        occupant_presence(component, "Xena", ALICE_OCCUPANT, real="mallory@xmpp.example/m")
    )
    await private.from_bridged(
        message(component, "<body>it's me</body>", frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT)
    )
    assert len(ctx.accepted) == 1 and sent == []  # dropped, no error into the room
    with pytest.raises(PermanentError) as err:
        await private.route(pm_portal(ROOM, "Xena"), ALICE_MXID, "Alice")
    assert "left" in err.value.user_message and "someone else" in err.value.user_message
    # Xena comes back: the conversation goes on.
    mucs.on_presence(occupant_presence(component, "Xena", ALICE_OCCUPANT, gone=True))
    mucs.on_presence(
        occupant_presence(component, "Xena", ALICE_OCCUPANT, real="xena@xmpp.example/b")
    )
    assert (await private.route(pm_portal(ROOM, "Xena"), ALICE_MXID, "Alice"))[2] == f"{ROOM}/Xena"


@pytest.mark.parametrize("membership", ["leave", "ban", None])
async def test_an_answer_does_not_rejoin_a_matrix_user_who_left_the_room(
    bridged: Any,  # noqa: F811
    membership: str | None,
) -> None:
    private, _, ctx, _, _ = bridged
    calls: list[str] = []

    async def puppet_in(room: str, mxid: str, name: str) -> str:
        calls.append(room)
        return ALICE_OCCUPANT

    private._puppet_in = puppet_in
    if membership is not None:
        joined(ctx, membership)
    with pytest.raises(PermanentError) as err:
        await private.route(pm_portal(ROOM, "Xena"), ALICE_MXID, "Alice")
    assert calls == [] and "no longer in" in err.value.user_message


async def hosted_setup(ctx: FakeContext | None = None) -> tuple[Any, PrivateMessages, list[Any]]:
    rooms, sent, hctx = await make_rooms(MemoryStore())
    await rooms._on_stanza(presence(rooms, XENA, f"{HOSTED_ROOM}/Xena"))
    private = PrivateMessages(ctx or FakeContext(), make_cfg(), make_component([]), rooms,
                              MucTracker(), None, None, None)  # type: ignore[arg-type]  # fmt: skip
    rooms.on_private = private.from_hosted
    rooms._test_ctx = hctx  # kept alive with the rooms
    return rooms, private, sent


async def test_a_hosted_nick_taken_over_by_someone_else_is_refused_both_ways() -> None:
    rooms, private, sent = await hosted_setup()
    comp = rooms.component
    await rooms._on_stanza(message(comp, "<body>hi Alice</body>", frm=XENA,
                                   to=f"{HOSTED_ROOM}/Alice"))  # fmt: skip
    await rooms._on_stanza(presence(rooms, XENA, f"{HOSTED_ROOM}/Xena", "unavailable"))
    await rooms._on_stanza(presence(rooms, "mallory@xmpp.example/m", f"{HOSTED_ROOM}/Xena"))
    with pytest.raises(PermanentError) as err:
        await private.route(pm_portal(HOSTED_ROOM, "Xena"), ALICE_MXID, "Alice")
    assert "left" in err.value.user_message
    before = len(sent)
    await rooms._on_stanza(message(comp, "<body>me now</body>", frm="mallory@xmpp.example/m",
                                   to=f"{HOSTED_ROOM}/Alice"))  # fmt: skip
    [refused] = sent[before:]
    assert refused["type"] == "error" and refused["error"]["condition"] == "conflict"
    assert len(private._ctx.accepted) == 1


async def test_hosted_private_messages_follow_the_policy_per_matrix_user() -> None:
    ctx = FakeContext()
    ctx.federation = FederationPolicy(
        [{"network": "xmpp", "remote": ["xmpp.example"], "matrix": ["other.example"]}],
        "hub.example",
    )
    rooms, _, sent = await hosted_setup(ctx)
    before = len(sent)
    await rooms._on_stanza(message(rooms.component, "<body>hi</body>", frm=XENA,
                                   to=f"{HOSTED_ROOM}/Alice"))  # fmt: skip
    [refused] = sent[before:]
    assert refused["error"]["condition"] == "forbidden" and ctx.accepted == []


async def test_hosted_private_messages_to_an_ambiguous_name_are_refused() -> None:
    rooms, private, sent = await hosted_setup()
    members = {ALICE_MXID: "Alice", "@alice:other.example": "Alice"}
    rooms.members = lambda room: members
    before = len(sent)
    await rooms._on_stanza(message(rooms.component, "<body>hi</body>", frm=XENA,
                                   to=f"{HOSTED_ROOM}/Alice"))  # fmt: skip
    [refused] = sent[before:]
    assert refused["error"]["condition"] == "conflict"
    assert "Several Matrix members" in refused["error"]["text"]
    with pytest.raises(PermanentError) as err:
        await private.route(pm_portal(HOSTED_ROOM, "Xena"), ALICE_MXID, "Alice")
    assert "display name" in err.value.user_message


async def test_private_messages_between_xmpp_occupants_are_explained() -> None:
    rooms, _, sent = await hosted_setup()
    await rooms._on_stanza(presence(rooms, "yann@xmpp.example/y", f"{HOSTED_ROOM}/Yann"))
    before = len(sent)
    await rooms._on_stanza(message(rooms.component, "<body>hi</body>", frm=XENA,
                                   to=f"{HOSTED_ROOM}/Yann"))  # fmt: skip
    [refused] = [s for s in sent[before:] if s["type"] == "error"]
    assert "between XMPP occupants" in refused["error"]["text"]


async def test_read_markers_stay_out_of_room_archives_but_not_of_dms() -> None:
    sent: list[Any] = []
    component = make_component(sent)
    mucs = MucTracker()
    mucs.room(ROOM)
    mucs.on_presence(occupant_presence(component, "Alice", ALICE_OCCUPANT, own=True))

    async def reference(*_: Any) -> str:
        return "sid"

    states = ChatStates(make_cfg(), component, None, mucs, None, reference)  # type: ignore[arg-type]
    room = Portal(network=NETWORK, remote_id=ROOM, mxid=PORTAL_ROOM)
    dm = Portal(network=NETWORK, remote_id="xena@xmpp.example", receiver=ALICE_MXID,
                is_direct=True)  # fmt: skip
    for portal in (room, dm):
        target = StoredMessage(network=NETWORK, portal_id=portal.remote_id, remote_id="m1",
                               mxid="$e", room_id="!x", sender_id="xena@xmpp.example")  # fmt: skip
        await states.receipt(
            MatrixReceipt(
                portal=portal,
                sender=ALICE_MXID,
                target=target,
                event_id="$r",
                sender_name="Alice",
                timestamp=0,
            )
        )
    in_room, in_dm = sent
    hints = "{urn:xmpp:hints}"
    assert in_room["type"] == "groupchat" and in_room.xml.find(f"{hints}no-store") is not None
    assert in_room.xml.find(f"{hints}store") is None
    assert in_dm["type"] == "chat" and in_dm.xml.find(f"{hints}store") is not None
