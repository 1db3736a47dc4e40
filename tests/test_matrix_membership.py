"""What ``SupportsMembership`` hears of Matrix member events: a user's own join (with whose
invite it accepted) and leave, never a kick of them (the bridge bot's removal of someone the
network removed must not echo back). Real store, router and Matrix event handler, as in
tests/test_matrix_profile.py."""

from __future__ import annotations

from bridge.core.errors import NotSupported
from bridge.portal.models import InboxRow
from bridge.portal.store import Store
from tests.test_matrix_profile import _hub
from tests.test_permissions import ALICE, BOT, ROOM

BOB = "@bob:hub.test"


async def test_a_join_says_whose_invite_it_accepted(store: Store) -> None:
    hub, client = await _hub(store)
    invited = {"prev_content": {"membership": "invite"}, "prev_sender": BOB}
    await hub.event(ALICE, "m.room.member", {"membership": "join"}, state_key=ALICE,
                    unsigned=invited)  # fmt: skip
    await hub.event(ALICE, "m.room.member", {"membership": "leave"}, state_key=ALICE,
                    unsigned={"prev_content": {"membership": "join"}, "prev_sender": ALICE})  # fmt: skip
    await hub.event(ALICE, "m.room.member", {"membership": "join"}, state_key=ALICE)
    assert [(m.sender, m.membership, m.inviter) for m in client.memberships] == [
        (ALICE, "join", BOB), (ALICE, "leave", ""), (ALICE, "join", ""),
    ]  # fmt: skip


async def test_a_rejoin_or_a_malformed_prev_sender_names_no_inviter(store: Store) -> None:
    """Hostile: only a join that accepted an invite has an inviter, and only a string one."""
    hub, client = await _hub(store)
    await hub.event(ALICE, "m.room.member", {"membership": "join"}, state_key=ALICE,
                    unsigned={"prev_content": {"membership": "join"}, "prev_sender": BOB})  # fmt: skip
    await hub.event(ALICE, "m.room.member", {"membership": "join"}, state_key=ALICE,
                    unsigned={"prev_content": {"membership": "invite"}, "prev_sender": [BOB]})  # fmt: skip
    assert [m.inviter for m in client.memberships] == ["", ""]


async def test_a_kick_of_a_matrix_user_is_no_membership_change_of_theirs(store: Store) -> None:
    """The bot kicks a Matrix user the network removed (or a moderator does): the connector
    hears nothing, so it does not remove them from the network again."""
    hub, client = await _hub(store)
    for kicker in (BOT, BOB):
        await hub.event(kicker, "m.room.member", {"membership": "leave"}, state_key=ALICE,
                        unsigned={"prev_content": {"membership": "join"}})  # fmt: skip
    assert client.memberships == []


async def test_a_refused_membership_change_is_told_as_itself_not_as_a_lost_message(
    store: Store,
) -> None:
    hub, _ = await _hub(store)
    refused = NotSupported("x", user_message="They are still a member there.")
    for number, etype in enumerate(("m.room.member", "m.room.message")):
        payload = {"type": etype, "sender": ALICE, "room_id": ROOM, "content": {}}
        row = InboxRow(number, "t", "pdu", f"$e{number}", ROOM, payload, 0)
        await hub.router.notices.of_row(row, refused)
    assert [body for _, body in hub.matrix.sent] == [
        f"{ALICE}: They are still a member there.",
        f"{ALICE}: your message was not delivered. They are still a member there.",
    ]
