"""Review of the core's membership hooks (8becdb5): a refused leave must reach the person who
left. The network keeps their account in the chat (Teams: NOT_LEFT), and they can act on it,
but they are no longer in the room where the notice used to go alone."""

from __future__ import annotations

from bridge.core.errors import NotSupported
from bridge.portal.models import BridgeUser, InboxRow
from bridge.portal.store import Store
from tests.test_matrix_profile import _hub
from tests.test_permissions import ALICE, BOT, ROOM

MANAGEMENT = "!alice-and-the-bot:hub.test"
STILL_MEMBER = "They are still a member there and keep reading it in Teams."


def _row(number: int, membership: str, sender: str, state_key: str) -> InboxRow:
    payload = {"type": "m.room.member", "sender": sender, "room_id": ROOM,
               "state_key": state_key, "content": {"membership": membership}}  # fmt: skip
    return InboxRow(number, "t", "pdu", f"$e{number}", ROOM, payload, 0)


async def test_a_refused_leave_is_told_where_the_leaver_still_reads(store: Store) -> None:
    """Hostile (outage at the worst moment): Alice left the room; Teams refused to take her
    account out of the chat. The notice in the room she left is for the others; she is told in
    her management room, where she can act on it."""
    hub, _ = await _hub(store)
    await store.save_user(BridgeUser(mxid=ALICE, management_room=MANAGEMENT))
    refused = NotSupported("403", user_message=STILL_MEMBER)
    await hub.router.notices.of_row(_row(1, "leave", ALICE, ALICE), refused)
    rooms = [room for room, _ in hub.matrix.sent]
    assert ROOM in rooms
    assert MANAGEMENT in rooms, "the leaver never sees why they are still in the Teams chat"
    told = [body for room, body in hub.matrix.sent if room == MANAGEMENT]
    assert STILL_MEMBER in told[0] and ROOM in told[0]  # which room it is about


async def test_joins_and_others_leaves_stay_in_the_room(store: Store) -> None:
    """Only the leaver's own leave goes to their management room: a refused join is told in
    the room they are in; a kick (someone else's leave of them) is not theirs to act on."""
    hub, _ = await _hub(store)
    await store.save_user(BridgeUser(mxid=ALICE, management_room=MANAGEMENT))
    refused = NotSupported("403", user_message="Not added.")
    await hub.router.notices.of_row(_row(1, "join", ALICE, ALICE), refused)
    await hub.router.notices.of_row(_row(2, "leave", "@mod:hub.test", ALICE), refused)
    assert [room for room, _ in hub.matrix.sent] == [ROOM, ROOM]


async def test_a_leaver_without_a_management_room_is_told_in_the_room_only(store: Store) -> None:
    hub, _ = await _hub(store)
    await hub.router.notices.of_row(_row(1, "leave", ALICE, ALICE), NotSupported("x"))
    assert [room for room, _ in hub.matrix.sent] == [ROOM]


async def test_a_declined_invitation_is_no_leave_of_the_chat(store: Store) -> None:
    """Teams added Alice's account to a group chat, so the bot invited her Matrix account;
    she declines (a leave whose previous membership is the invite). She never was in the room,
    so the connector must not hear a leave: Teams would take her account out of a chat she is
    in there (bridge.teams.matrix_members._leave, with her own token). Withdrawing a knock is
    the same. A leave after a join still reaches it."""
    hub, client = await _hub(store)
    for prev in ("invite", "knock"):
        await hub.event(ALICE, "m.room.member", {"membership": "leave"}, state_key=ALICE,
                        unsigned={"prev_content": {"membership": prev}, "prev_sender": BOT})  # fmt: skip
    assert client.memberships == [], "declining an invite removed the account from the chat"
    await hub.event(ALICE, "m.room.member", {"membership": "leave"}, state_key=ALICE,
                    unsigned={"prev_content": {"membership": "join"}})  # fmt: skip
    assert [(m.sender, m.membership) for m in client.memberships] == [(ALICE, "leave")]
