"""XEP-0184 receipts and XEP-0333 markers in MUC private messages, without a server: a kept
private message that asks for a receipt gets one from the Matrix user's occupant (or nick), as
in a DM; whatever the private-message rules refuse gets nothing. The real thing (Prosody,
ejabberd, Synapse) is tests/e2e/test_xmpp_private_receipts.py."""

from __future__ import annotations

from typing import Any

from slixmpp import JID, Message

from bridge.core import MatrixReceipt
from bridge.core.federation import FederationPolicy
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import Portal
from bridge.xmpp.chat_states import ChatStates
from bridge.xmpp.ids import NETWORK
from tests.xmpp.test_hosted import ROOM as HOSTED_ROOM
from tests.xmpp.test_hosted import XENA, presence
from tests.xmpp.test_muc_extras import (
    ALICE_MXID,
    ALICE_OCCUPANT,
    ROOM,
    XMPP_ONLY,
    FakeContext,
    bridged,  # noqa: F401 (fixture)
    make_cfg,
    message,
    occupant_presence,
)
from tests.xmpp.test_private_safety import hosted_setup, pm_portal

REQUEST = "<request xmlns='urn:xmpp:receipts'/>"


def receipts(sent: list[Any]) -> list[tuple[str, str, str]]:
    """(from, to, id) of each XEP-0184 receipt sent."""
    messages = [s for s in sent if isinstance(s, Message)]
    return [(str(s["from"]), str(s["to"]), s["receipt"]) for s in messages if s["receipt"]]


# --- hostile first -------------------------------------------------------------------------------


async def test_refused_private_messages_get_no_receipt(bridged: Any) -> None:  # noqa: F811
    private, component, ctx, mucs, sent = bridged
    asking = f"<body>hi</body>{REQUEST}"
    strangers = [
        message(component, asking, frm="other@muc.xmpp.example/Xena", to=ALICE_OCCUPANT),
        message(component, asking, frm=f"{ROOM}/Ghost", to=ALICE_OCCUPANT),  # not an occupant
        message(component, asking, frm=f"{ROOM}/Alice", to=ALICE_OCCUPANT),  # our own
        message(
            component,
            "<body>" + "x" * 61000 + f"</body>{REQUEST}",
            frm=f"{ROOM}/Xena",
            to=ALICE_OCCUPANT,
        ),  # too large
    ]
    for msg in strangers:
        if private.relayed(msg):
            await private.from_bridged(msg)
    # Someone else under Xena's nick, after she began the conversation.
    await private.from_bridged(message(component, "<body>psst</body>", frm=f"{ROOM}/Xena",
                                       to=ALICE_OCCUPANT))  # fmt: skip
    mucs.on_presence(occupant_presence(component, "Xena", ALICE_OCCUPANT, gone=True))
    mucs.on_presence(
        occupant_presence(component, "Xena", ALICE_OCCUPANT, real="mallory@xmpp.example/m")
    )
    await private.from_bridged(message(component, asking, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    # Alice may not be reached from the room's domain (the federation policy).
    ctx.federation = FederationPolicy(
        [{"network": "xmpp", "remote": ["xmpp.example"], "matrix": ["other.example"]}],
        "hub.example",
    )
    await private.from_bridged(message(component, asking, frm=f"{ROOM}/Anon", to=ALICE_OCCUPANT))
    ctx.federation = FederationPolicy(XMPP_ONLY, "hub.example")

    async def store_down(_: Any) -> bool:
        raise OSError("database unreachable")

    ctx.accept_remote = store_down  # not kept: not confirmed
    await private.from_bridged(message(component, asking, frm=f"{ROOM}/Anon", to=ALICE_OCCUPANT))
    assert sent == []


async def test_hosted_private_messages_from_strangers_get_no_receipt() -> None:
    ctx = FakeContext()
    ctx.federation = FederationPolicy(
        [{"network": "xmpp", "remote": ["xmpp.example"], "matrix": ["other.example"]}],
        "hub.example",
    )
    rooms, _, sent = await hosted_setup(ctx)
    comp = rooms.component
    asking = f"<body>x</body>{REQUEST}"
    await rooms._on_stanza(message(comp, asking, frm="mallory@evil.example/x",
                                   to=f"{HOSTED_ROOM}/Alice"))  # not an occupant  # fmt: skip
    await rooms._on_stanza(message(comp, asking, frm=XENA, to=f"{HOSTED_ROOM}/Alice"))  # policy
    assert receipts(sent) == [] and ctx.accepted == []
    answers = [s for s in sent if isinstance(s, Message)]
    conditions = {s["error"]["condition"] for s in answers if s["type"] == "error"}
    assert {"not-acceptable", "forbidden"} <= conditions


# --- receipts ------------------------------------------------------------------------------------


async def test_a_kept_private_message_is_confirmed_by_our_occupant(bridged: Any) -> None:  # noqa: F811
    private, component, ctx, _, sent = bridged
    await private.from_bridged(
        message(component, "<body>no receipt asked</body>", frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT)
    )
    assert sent == []
    await private.from_bridged(
        message(component, f"<body>psst</body>{REQUEST}", frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT)
    )
    assert len(ctx.accepted) == 2
    [receipt] = sent
    assert receipts(sent) == [(ALICE_OCCUPANT, f"{ROOM}/Xena", "m1")]
    assert receipt["type"] == "chat" and not receipt["body"]


async def test_a_hosted_private_message_is_confirmed_by_the_matrix_members_nick() -> None:
    rooms, _, sent = await hosted_setup()
    before = len(sent)
    await rooms._on_stanza(message(rooms.component, f"<body>hello</body>{REQUEST}", frm=XENA,
                                   to=f"{HOSTED_ROOM}/Alice"))  # fmt: skip
    assert receipts(sent[before:]) == [(f"{HOSTED_ROOM}/Alice", XENA, "m1")]


async def test_a_matrix_read_receipt_is_a_marker_from_our_occupant(bridged: Any) -> None:  # noqa: F811
    private, component, _, mucs, sent = bridged

    async def reference(portal: Portal, target: StoredMessage) -> str:
        return target.remote_id

    states = ChatStates(make_cfg(), component, None, mucs, private, reference)
    portal = pm_portal(ROOM, "Xena")
    for sender in ("xena@xmpp.example", ALICE_MXID):  # markers only for the other's messages
        target = StoredMessage(network=NETWORK, portal_id=portal.remote_id, remote_id="m1",
                               mxid="$e", room_id="!dm", sender_id=sender)  # fmt: skip
        await states.receipt(MatrixReceipt(portal=portal, sender=ALICE_MXID, target=target,
                                           event_id="$r", sender_name="Alice", timestamp=0))  # fmt: skip
    [marker] = sent
    assert marker["from"] == JID(ALICE_OCCUPANT) and marker["to"] == JID(f"{ROOM}/Xena")
    assert marker["type"] == "chat" and marker["displayed"]["id"] == "m1"


async def test_hosted_rooms_answer_with_a_receipt_only_after_a_join() -> None:
    rooms, _, sent = await hosted_setup()
    await rooms._on_stanza(presence(rooms, "yann@xmpp.example/y", f"{HOSTED_ROOM}/Yann"))
    await rooms._on_stanza(presence(rooms, "yann@xmpp.example/y", f"{HOSTED_ROOM}/Yann",
                                    "unavailable"))  # fmt: skip
    before = len(sent)
    await rooms._on_stanza(message(rooms.component, f"<body>hi</body>{REQUEST}",
                                   frm="yann@xmpp.example/y", to=f"{HOSTED_ROOM}/Alice"))  # fmt: skip
    assert receipts(sent[before:]) == []
