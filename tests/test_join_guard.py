"""A connector that ``guards_joins`` (a chat only its members may read: a Teams private channel)
hears every join of its portal rooms, even of users who may not use the bridge, marked so;
any other connector hears only those who may, as before. Real store, router and Matrix event
handler, as in tests/test_matrix_membership.py."""

from __future__ import annotations

import pytest

from bridge.core.permissions import Permissions
from bridge.portal.store import Store
from tests.test_matrix_profile import ProfileClient
from tests.test_permissions import ALICE, NET, OUTSIDER, Connector, Hub

STRANGER = "@stranger:nowhere.test"
"""Not even relay level: the bridge ignores everything else of theirs."""
AVATAR = "mxc://nowhere.test/a"


class GuardingConnector(Connector):
    guards_joins = True


async def _hub(store: Store, *, guards: bool) -> tuple[Hub, ProfileClient]:
    hub = Hub(store, relay_enabled=True)
    permissions = Permissions({"hub.test": "user", "elsewhere.test": "relay"}, relay_enabled=True)
    hub.router._permissions = hub.router._events._permissions = permissions
    if guards:
        hub.router._connectors[NET] = GuardingConnector()  # the event handler's too
    client = ProfileClient()
    hub.router.add_client(NET, client)  # type: ignore[arg-type]
    await hub.portal(relay=True)
    return hub, client


async def _join_and_leave(hub: Hub, who: str) -> None:
    await hub.event(who, "m.room.member", {"membership": "join"}, state_key=who,
                    unsigned={"prev_content": {"membership": "invite"}, "prev_sender": ALICE})  # fmt: skip
    await hub.event(who, "m.room.member", {"membership": "join", "avatar_url": AVATAR},
                    state_key=who, unsigned={"prev_content": {"membership": "join"}})  # fmt: skip
    await hub.event(who, "m.room.member", {"membership": "leave"}, state_key=who,
                    unsigned={"prev_content": {"membership": "join"}})  # fmt: skip


@pytest.mark.parametrize("who", [OUTSIDER, STRANGER], ids=["relay-level", "not-permitted"])
async def test_a_guarding_connector_hears_an_outsiders_joins_marked_and_nothing_else(
    store: Store, who: str
) -> None:
    """Hostile: someone who may not use the bridge joins a guarded portal room (at a member's
    invite): the connector hears the join, marked ``may_use_bridge=False``, so it can remove
    them; never their leave, nor a profile change (nothing of theirs reaches the network, and
    a name they change at will does not make the connector check them again)."""
    hub, client = await _hub(store, guards=True)
    await _join_and_leave(hub, who)
    assert [(m.sender, m.membership, m.inviter, m.may_use_bridge) for m in client.memberships] == [
        (who, "join", ALICE, False),
    ]  # fmt: skip
    assert client.profiles == [] and client.messages == []


@pytest.mark.parametrize("who", [OUTSIDER, STRANGER], ids=["relay-level", "not-permitted"])
async def test_other_connectors_hear_nothing_of_outsiders(store: Store, who: str) -> None:
    hub, client = await _hub(store, guards=False)
    await _join_and_leave(hub, who)
    assert client.memberships == [] and client.profiles == []


async def test_a_user_of_the_bridge_is_heard_as_before(store: Store) -> None:
    hub, client = await _hub(store, guards=True)
    await _join_and_leave(hub, ALICE)
    assert [(m.membership, m.may_use_bridge) for m in client.memberships] == [
        ("join", True), ("join", True), ("leave", True),
    ]  # fmt: skip
    assert [p.avatar_url for p in client.profiles] == [AVATAR]
