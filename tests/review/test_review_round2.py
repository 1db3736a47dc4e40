"""Hostile review of the round that added ``guards_joins``, ``bridge-team`` and the core's
removals: what a stranger (no right to use the bridge, or any account a hostile homeserver
mints) can make the bridge do or keep."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.events import ChatInfo, RemoteKick
from bridge.core.ids import PortalKey
from bridge.core.removals import NOTICED
from bridge.portal.store import Store
from bridge.teams.client import TeamsSharedClient
from tests.teams.test_channel_joins import _guarded, _join, _kicked, _member_reads
from tests.teams.test_group_members import BOB
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)
from tests.test_group_bridging import GroupNetwork
from tests.test_group_bridging import Hub as GroupHub
from tests.test_join_guard import STRANGER, _hub
from tests.test_matrix_user_removal import _hub as _removal_hub
from tests.test_matrix_user_removal import _kick
from tests.test_permissions import KEY


async def test_a_strangers_profile_changes_do_not_reach_a_guarding_connector(
    store: Store,
) -> None:
    """Hostile: a stranger already in a guarded room changes their name or avatar in a loop
    (each a join → join member event): only their join was for the connector to check; each
    change would have been one more members read on Graph (up to 50 pages) at their will."""
    hub, client = await _hub(store, guards=True)
    await hub.event(STRANGER, "m.room.member", {"membership": "join"}, state_key=STRANGER)
    for n in range(5):
        await hub.event(STRANGER, "m.room.member", {"membership": "join", "displayname": f"x{n}"},
                        state_key=STRANGER, unsigned={"prev_content": {"membership": "join"}})  # fmt: skip
    assert [(m.membership, m.may_use_bridge) for m in client.memberships] == [("join", False)]


@pytest.mark.parametrize("may_use_bridge", [True, False], ids=["no-login", "not-permitted"])
async def test_a_joiner_without_a_teams_login_costs_no_graph_read(
    emulator: Emulator,  # noqa: F811
    may_use_bridge: bool,
) -> None:
    """Hostile: someone with no Teams login joins a private channel's room again and again.
    They can never be a logged-in member, so they are removed without asking Graph: joins at
    will must not turn into Graph requests (throttling the tenant's app for everyone)."""
    bridged, queued = await _guarded(emulator)
    before = _member_reads(emulator, bridged)
    shared = TeamsSharedClient(bridged.net)
    for _ in range(3):
        await shared.handle_matrix_membership(_join(bridged, BOB, may_use_bridge=may_use_bridge))
    assert _member_reads(emulator, bridged) == before
    assert [who for who, _ in _kicked(queued)] == [BOB] * 3


async def test_removal_marks_do_not_outlive_the_people_they_are_about(store: Store) -> None:
    """Hostile: many accounts (a hostile homeserver mints them for free) join a room where the
    bot may not kick, each is refused once and leaves. The portal's metadata keeps a mark only
    for those still in the room, and no more of the network's reason than the notice shows."""
    hub, matrix = await _removal_hub(store)
    for n in range(30):
        who = f"@sock{n}:evil.test"
        matrix.members[who] = who
        kick = RemoteKick(portal=KEY, target=_kick().target, reason="r" * 500, matrix_user=who)
        await hub.portals.handle(kick, hub.client)  # type: ignore[arg-type]
        del matrix.members[who]  # gone again
    await hub.portals.handle(_kick(), hub.client)  # type: ignore[arg-type]
    portal = await store.get_portal(KEY)
    assert portal is not None
    noticed = portal.metadata.get(NOTICED, {})
    assert not [m for m in noticed if m.endswith(":evil.test")], len(noticed)
    assert all(len(reason) <= 200 for causes in noticed.values() for reason in causes)


async def test_a_chat_bridged_elsewhere_while_bridge_team_waits_is_not_claimed(
    store: Store,
) -> None:
    """Race: while bridge-team waits on the network for a chat, someone's `bridge` command
    puts that chat into their own room. bridge-team must not answer that it bridged the chat
    "in a new invite-only room you are invited to" naming the other person's room."""
    hub = GroupHub(store, GroupNetwork(size=1))
    network: Any = hub.network
    plain = network.bridge_room

    async def racing(remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        key, info = await plain(remote_id, matrix_user)
        await hub.portals.adopt_room(key, "!theirs:hub.test", ChatInfo(name="theirs"))
        return key, info

    network.bridge_room = racing
    done = await hub.run()
    assert [p.mxid for _, p in done.bridged] == []
    assert [p.mxid for _, p in done.already] == ["!theirs:hub.test"]
    assert not [c for c in hub.matrix.created if c["name"] != "Team"]  # no second room
