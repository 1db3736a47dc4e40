"""A Matrix member's new avatar or display name reaches a connector that shows profiles
(``SupportsProfileChanges``), once per portal room; joins, ghosts, relay-level users and member
events that change nothing do not. Presence goes both ways (``SupportsPresence``,
``ctx.set_ghost_presence``) and stops, logged once, where the homeserver keeps none. Real
store, router and Matrix event handler, as in tests/test_matrix_moderation.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bridge.core.events import MatrixMembership, MatrixPresence, MatrixProfile
from bridge.core.ghost_presence import GhostPresence
from bridge.core.ids import RemoteUserID
from bridge.portal.models import Ghost, InboxRow
from bridge.portal.store import Store
from tests.test_permissions import ALICE, BOT, NET, OUTSIDER, Hub, MailClient

GHOST = "@mail_mallory=40evil.test:hub.test"
AVATAR = "mxc://hub.test/new"


def _joined(**prev: Any) -> dict[str, Any]:
    return {"prev_content": {"membership": "join", **prev}}


class ProfileClient(MailClient):
    def __init__(self) -> None:
        super().__init__()
        self.profiles: list[MatrixProfile] = []
        self.memberships: list[MatrixMembership] = []
        self.presences: list[MatrixPresence] = []

    async def handle_matrix_presence(self, presence: MatrixPresence) -> None:
        self.presences.append(presence)

    async def handle_matrix_membership(self, change: MatrixMembership) -> None:
        self.memberships.append(change)

    async def handle_matrix_profile(self, change: MatrixProfile) -> None:
        self.profiles.append(change)


async def _hub(store: Store) -> tuple[Hub, ProfileClient]:
    hub = Hub(store, relay_enabled=True)
    client = ProfileClient()
    hub.router.add_client(NET, client)  # type: ignore[arg-type]  # replaces the mail client
    await hub.portal(relay=True)
    return hub, client


async def test_a_new_avatar_or_name_reaches_the_network(store: Store) -> None:
    hub, client = await _hub(store)
    await hub.event(ALICE, "m.room.member",
                    {"membership": "join", "displayname": "Alice", "avatar_url": AVATAR},
                    state_key=ALICE, unsigned=_joined(displayname="Alice"))  # fmt: skip
    await hub.event(ALICE, "m.room.member", {"membership": "join", "displayname": "Alicia"},
                    state_key=ALICE, unsigned=_joined(displayname="Alice", avatar_url=AVATAR))  # fmt: skip
    assert [(p.sender, p.sender_name, p.avatar_url, p.avatar_changed, p.name_changed)
            for p in client.profiles] == [
        (ALICE, "Alice", AVATAR, True, False),
        (ALICE, "Alicia", None, True, True),  # the avatar was removed, and the name changed
    ]  # fmt: skip
    assert len(client.memberships) == 2  # the membership hook still sees each join


async def test_joins_ghosts_relayed_users_and_no_change_are_no_profile_change(
    store: Store,
) -> None:
    hub, client = await _hub(store)
    same = {"membership": "join", "displayname": "Alice", "avatar_url": AVATAR}
    await hub.event(ALICE, "m.room.member", same, state_key=ALICE)  # a first join
    await hub.event(ALICE, "m.room.member", same, state_key=ALICE,
                    unsigned={"prev_content": {"membership": "invite"}})  # fmt: skip
    await hub.event(ALICE, "m.room.member", same, state_key=ALICE,
                    unsigned=_joined(displayname="Alice", avatar_url=AVATAR))  # fmt: skip
    # A ghost's avatar came from its network; a relay-level user is no member there.
    for who in (GHOST, OUTSIDER):
        await hub.event(who, "m.room.member", {"membership": "join", "avatar_url": AVATAR},
                        state_key=who, unsigned=_joined())  # fmt: skip
    # Someone else's member event for Alice (an admin's) is no change of hers.
    await hub.event(GHOST, "m.room.member", {"membership": "join", "avatar_url": "mxc://x/y"},
                    state_key=ALICE, unsigned=_joined(avatar_url=AVATAR))  # fmt: skip
    assert client.profiles == []


async def test_matrix_presence_reaches_shared_clients_only_for_matrix_users(
    store: Store,
) -> None:
    hub, client = await _hub(store)
    for number, (sender, content) in enumerate([
        (ALICE, {"presence": "unavailable", "status_msg": "lunch"}),
        (GHOST, {"presence": "online"}), (BOT, {"presence": "online"}),  # our own
        (OUTSIDER, {"presence": "online"}),  # relay-level: no member on the network
        (ALICE, {"presence": "sleeping"}), (ALICE, {"presence": ["online"]}),  # malformed
        (ALICE, {"presence": "online", "status_msg": {"html": "<b>"}}),
    ]):  # fmt: skip
        payload = {"type": "m.presence", "sender": sender, "content": content}
        await hub.router._handle_inbox_row(InboxRow(number, "t", "ephemeral", None, None,
                                                     payload, 0))  # fmt: skip
    assert [(p.sender, p.presence, p.status) for p in client.presences] == [
        (ALICE, "unavailable", "lunch"), (ALICE, "online", None),
    ]  # fmt: skip


class PresenceServer:
    def __init__(self, *, kept: bool) -> None:
        self.kept = kept
        self.set: list[tuple[str, str, str | None]] = []

    async def set_presence(self, mxid: str, presence: str, status: str | None) -> None:
        self.set.append((mxid, presence, status))

    async def get_presence(self, mxid: str) -> str:
        return self.set[-1][1] if self.kept else "offline"


async def test_ghost_presence_is_set_once_per_change(store: Store) -> None:
    server = PresenceServer(kept=True)
    presence = GhostPresence(server, store, logging.getLogger("test"))  # type: ignore[arg-type]
    await store.save_ghost(Ghost(NET, RemoteUserID("romeo"), GHOST))
    await presence.set(NET, RemoteUserID("romeo"), "online", None)
    await presence.set(NET, RemoteUserID("romeo"), "online", None)  # no change
    await presence.set(NET, RemoteUserID("romeo"), "unavailable", "away")
    await presence.set(NET, RemoteUserID("juliet"), "online", None)  # no ghost: none made
    assert server.set == [(GHOST, "online", None), (GHOST, "unavailable", "away")]
    with pytest.raises(ValueError):
        await presence.set(NET, RemoteUserID("romeo"), "dnd", None)


async def test_ghost_presence_stops_where_the_homeserver_keeps_none(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    server = PresenceServer(kept=False)
    presence = GhostPresence(server, store, logging.getLogger("test"))  # type: ignore[arg-type]
    await store.save_ghost(Ghost(NET, RemoteUserID("romeo"), GHOST))
    with caplog.at_level(logging.INFO):
        # A burst (a MUC full of occupants coming online): one of them finds out.
        await asyncio.gather(
            *(presence.set(NET, RemoteUserID("romeo"), "online", None) for _ in range(5))
        )
        for state in ("online", "unavailable", "online"):
            await presence.set(NET, RemoteUserID("romeo"), state, None)
    assert server.set == [(GHOST, "online", None)] and presence.kept is False
    assert len([r for r in caplog.records if "keeps no presence" in r.message]) == 1


async def test_a_presence_that_comes_while_the_first_is_read_back_is_not_lost(
    store: Store,
) -> None:
    """XMPP clients say "online" then at once "away": the second came while the bridge was
    still finding out whether the homeserver keeps presence, and was dropped."""
    server = PresenceServer(kept=True)
    answer = asyncio.Event()
    get_presence = server.get_presence

    async def slow_read_back(mxid: str) -> str:
        await answer.wait()
        return await get_presence(mxid)

    server.get_presence = slow_read_back  # type: ignore[method-assign]
    presence = GhostPresence(server, store, logging.getLogger("test"))  # type: ignore[arg-type]
    await store.save_ghost(Ghost(NET, RemoteUserID("romeo"), GHOST))
    first = asyncio.create_task(presence.set(NET, RemoteUserID("romeo"), "online", None))
    await asyncio.sleep(0)
    second = asyncio.create_task(presence.set(NET, RemoteUserID("romeo"), "unavailable", "lunch"))
    await asyncio.sleep(0.01)
    answer.set()
    await asyncio.gather(first, second)
    assert server.set[-1] == (GHOST, "unavailable", "lunch") and presence.kept is True


async def test_present_ghosts_are_refreshed_before_the_homeserver_times_them_out(
    store: Store,
) -> None:
    """Synapse takes a user offline 30 s after their last update unless they sync; ghosts
    never sync, so their presence is repeated (and an offline one is not)."""
    server = PresenceServer(kept=True)
    presence = GhostPresence(server, store, logging.getLogger("test"))  # type: ignore[arg-type]
    away = "@xmpp_juliet:hub.test"
    await store.save_ghost(Ghost(NET, RemoteUserID("romeo"), GHOST))
    await store.save_ghost(Ghost(NET, RemoteUserID("juliet"), away))
    await presence.set(NET, RemoteUserID("romeo"), "online", None)
    await presence.set(NET, RemoteUserID("juliet"), "unavailable", "lunch")
    await presence.set(NET, RemoteUserID("romeo"), "offline", None)
    server.set.clear()
    await presence.refresh()
    assert server.set == [(away, "unavailable", "lunch")]
