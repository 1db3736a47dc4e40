"""A network that cannot add someone to a chat makes a new chat with them
(``SupportsInvites.handle_matrix_invite`` returning a key: Teams widening a one-on-one chat into
a group chat). A room with bridged history keeps it to itself: the new chat gets a new room.
Only a room where nothing was bridged yet (several people invited into a new room at once)
becomes the new chat's portal. Uses the router doubles of test_permissions."""

from __future__ import annotations

from bridge.core.errors import NotSupported
from bridge.core.events import ChatInfo
from bridge.core.ids import PortalKey, RemoteChatID
from bridge.portal.models import Message, Portal
from bridge.portal.store import Store
from tests.test_permissions import ALICE, KEY, NET, ROOM, Hub, _text

NEW = PortalKey(NET, RemoteChatID("group-1@bridge.test"))
GHOST = "@mail_megan=40example.test:hub.test"


async def test_a_room_with_history_stays_and_the_new_chat_gets_a_room_of_its_own(
    store: Store,
) -> None:
    """Hostile: what was said in the one-on-one room is never shown to the people added: the
    ghost declines there, and the inviter is pointed to the new group chat's room."""
    hub = Hub(store, relay_enabled=False)
    await hub.portal(relay=False)
    await store.add_message(
        Message(network=NET, portal_id=KEY.remote_id, remote_id="m1", mxid="$private",
                room_id=ROOM, sender_id="someone")
    )  # fmt: skip

    async def widen(portal: Portal, inviter: str, user: str) -> PortalKey:
        return NEW

    async def info(key: PortalKey) -> ChatInfo:
        assert key == NEW
        return ChatInfo(name="Group", members=["megan@example.test", "bob@example.test"])

    hub.client.handle_matrix_invite = widen  # type: ignore[method-assign]
    hub.client.get_chat_info = info  # type: ignore[method-assign]
    await hub.event(ALICE, "m.room.member", {"membership": "invite"}, state_key=GHOST)
    old = await hub.portals.portal_by_room(ROOM)
    assert old is not None and old.key == KEY  # the one-on-one room is left alone
    [created] = hub.matrix.created
    assert ALICE in created["invite"] and GHOST in created["invite"]
    new = await store.get_portal(NEW)
    assert new is not None and new.mxid and new.mxid != ROOM
    [(room, ghost, reason)] = hub.matrix.left
    assert (room, ghost) == (ROOM, GHOST) and f"https://matrix.to/#/{new.mxid}" in reason
    assert (ROOM, GHOST) not in hub.matrix.joined
    assert any(room == ROOM and f"https://matrix.to/#/{new.mxid}" in body
               for room, body in hub.matrix.sent)  # fmt: skip
    await hub.event(ALICE, "m.room.message", _text("still only the two of us"))
    (msg,) = hub.client.messages
    assert msg.portal.key == KEY


async def test_a_room_without_history_moves_to_the_chat_the_network_made(store: Store) -> None:
    hub = Hub(store, relay_enabled=False)
    await hub.portal(relay=False)

    async def widen(portal: Portal, inviter: str, user: str) -> PortalKey:
        assert (portal.key, inviter) == (KEY, ALICE)
        return NEW

    hub.client.handle_matrix_invite = widen  # type: ignore[method-assign]
    await hub.event(ALICE, "m.room.member", {"membership": "invite"}, state_key=GHOST)
    assert hub.matrix.joined == [(ROOM, GHOST)]  # the ghost accepts in the same room
    moved = await hub.portals.portal_by_room(ROOM)
    assert moved is not None and moved.key == NEW
    old = await store.get_portal(KEY)
    assert old is not None and old.mxid is None  # its next message opens a new room
    await hub.event(ALICE, "m.room.message", _text("hello, all three"))
    (msg,) = hub.client.messages
    assert msg.portal.key == NEW


async def test_a_refused_invite_moves_nothing(store: Store) -> None:
    hub = Hub(store, relay_enabled=False)
    await hub.portal(relay=False)

    async def refuse(portal: Portal, inviter: str, user: str) -> PortalKey:
        raise NotSupported("no", user_message="Not that person.")

    hub.client.handle_matrix_invite = refuse  # type: ignore[method-assign]
    await hub.event(ALICE, "m.room.member", {"membership": "invite"}, state_key=GHOST)
    assert hub.matrix.left == [(ROOM, GHOST, "Not that person.")]
    portal = await hub.portals.portal_by_room(ROOM)
    assert portal is not None and portal.key == KEY
