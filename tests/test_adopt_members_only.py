"""A chat only its members may read (a Teams channel is its team's) is bridged only into a room
nobody else reads yet: before, ``bridge teams <channel link>`` in a public room or a room of
strangers gave all of them the channel, and the relay to post in it."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.adopt import Refused
from bridge.core.events import ChatInfo
from bridge.core.ids import PortalKey
from bridge.portal.store import Store
from tests.test_adopt import ALICE, BOT, Hub

ROOM = "!room:hub.test"


@pytest.fixture
def hub(store: Store) -> Hub:
    hub = Hub(store)
    original = hub.network.get_chat_info

    async def members_only(portal: PortalKey) -> ChatInfo:
        info = await original(portal)
        info.members_only = True
        return info

    hub.network.get_chat_info = members_only  # type: ignore[method-assign]
    return hub


def _audience(hub: Hub, join_rule: str, people: set[str]) -> None:
    async def room_audience(room_id: str) -> tuple[str, set[str]]:
        return join_rule, people

    matrix: Any = hub.matrix
    matrix.room_audience = room_audience


@pytest.mark.parametrize(("join_rule", "people", "why"), [
    ("public", {ALICE, BOT}, "anyone may join it (public)"),
    ("knock", {ALICE, BOT}, "anyone may join it (knock)"),
    ("invite", {ALICE, BOT, "@eve:elsewhere.test"}, "1 other person is in it"),
    ("invite", {ALICE, "@eve:elsewhere.test", "@bob:hub.test"}, "2 other people are in it"),
])  # fmt: skip
async def test_a_members_only_chat_is_not_bridged_into_a_room_others_read(
    hub: Hub, join_rule: str, people: set[str], why: str
) -> None:
    _audience(hub, join_rule, people)
    with pytest.raises(Refused) as refused:
        await hub.bridging.bridge_command(ROOM, ALICE, "reference", "one")
    assert why in refused.value.user_message
    assert await hub.chat_of(ROOM) is None and await hub.room_of("one") is None
    assert hub.matrix.state == []  # no bridge state: the room is not a portal


async def test_a_members_only_chat_goes_into_a_room_of_its_bridger_alone(hub: Hub) -> None:
    ghost = "@reference_bob:hub.test"  # ghosts and the bot are no audience
    _audience(hub, "invite", {ALICE, BOT, ghost})
    portal = await hub.bridging.bridge_command(ROOM, ALICE, "reference", "one")
    assert portal.mxid == ROOM and await hub.chat_of(ROOM) == "one"
