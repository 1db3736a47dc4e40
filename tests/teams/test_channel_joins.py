"""Someone joining a bridged channel's room (bridge.teams.channel_members.joined): in a private
or shared channel's room, whoever is not a logged-in member of the channel (as Graph lists
its members now) is removed at once; a channel message's sender gets their Teams photo.
Against the Graph emulator through the unmodified msgraph-sdk. Anna's Teams login is Adele's
account (a member of the channel), Carol's is Alex's (in the team, not in the channel); Bob
has none."""

from __future__ import annotations

import base64
from typing import Any
from unittest.mock import AsyncMock

import pytest

from bridge.core import MatrixMembership, RemoteKick, RemoteMessage, TransientError
from bridge.portal.models import Portal
from bridge.teams import channel_members
from bridge.teams.client import TeamsSharedClient
from tests.teams.test_channel_members import BOT, CAROL, _bridged, _Channel, _inbound
from tests.teams.test_group_members import ANNA, BOB
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def _guarded(emu: Emulator, kind: str = "private") -> tuple[_Channel, AsyncMock]:
    """A channel bridged with Adele as its only member; the kicks it queues are returned."""
    bridged = await _bridged(emu, kind, ("adele",))
    bridged.login(adele=ANNA, alex=CAROL)
    await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id)
    bridged.net.ctx.parse_ghost_mxid = lambda mxid: None
    queued = AsyncMock()
    bridged.net.ctx.queue_remote_event = queued
    return bridged, queued


def _join(bridged: _Channel, sender: str, *, may_use_bridge: bool = True) -> MatrixMembership:
    portal = Portal(network=bridged.key.network, remote_id=bridged.portal_id, mxid="!room:hub")
    return MatrixMembership(portal=portal, event_id="$j", sender=sender, sender_name=sender,
                            timestamp=0, membership="join", inviter=ANNA,
                            may_use_bridge=may_use_bridge)  # fmt: skip


def _kicked(queued: AsyncMock) -> list[tuple[str, str]]:
    events = [call.args[0] for call in queued.await_args_list]
    assert all(isinstance(e, RemoteKick) for e in events), events
    return [(e.matrix_user, e.reason) for e in events]


def _member_reads(emu: Emulator, bridged: _Channel) -> int:
    return len(emu.requests(f"/v1.0{bridged.members_path()}", "GET"))


# --- hostile first -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["private", "shared"])
@pytest.mark.parametrize(
    ("who", "may_use_bridge"),
    [(BOB, True), (BOB, False), (CAROL, True)],
    ids=["no-login", "not-permitted", "logged-in-non-member"],
)
async def test_an_outsider_joining_is_removed_at_once(
    emulator: Emulator,  # noqa: F811
    kind: str,
    who: str,
    may_use_bridge: bool,
) -> None:
    """Hostile: Bob (no Teams login; or not even allowed to use the bridge) and Carol (logged
    in as Alex, who is in the team but not in the channel) join at a member's invite: each is
    removed with the notice channel messages give, before the channel says anything more."""
    bridged, queued = await _guarded(emulator, kind)
    before = _member_reads(emulator, bridged)
    shared = TeamsSharedClient(bridged.net)
    await shared.handle_matrix_membership(_join(bridged, who, may_use_bridge=may_use_bridge))
    assert _kicked(queued) == [(who, channel_members.NOT_A_MEMBER)]
    # Carol is judged by the members Graph lists now; Bob, with no login, can be on no page
    # of them: he is removed without asking Graph (joins at will cost Graph nothing).
    expected = before + 1 if who == CAROL else before
    assert _member_reads(emulator, bridged) == expected


async def test_someone_removed_in_teams_since_the_last_read_is_removed_on_joining(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: Anna's account left the channel in Teams and no message has said so yet: her
    (re)join is judged by the members Graph lists now, not by the list read at bridging, and
    she is told her account was removed (not that she needs another login)."""
    bridged, queued = await _guarded(emulator)
    adele = emulator.user("adele")["id"]
    await emulator.control("DELETE", f"{bridged.members_path()}/{adele}?as={adele}")
    await TeamsSharedClient(bridged.net).handle_matrix_membership(_join(bridged, ANNA))
    assert _kicked(queued) == [(ANNA, channel_members.REMOVED)]


async def test_a_join_while_graph_is_away_is_tried_again_and_decides_nothing(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: Graph answers 503 to every try of the members' read: the join raises
    TransientError (the core tries it again, holding the room's queue), and nobody is removed
    or taken for a member on it; once Graph answers, the outsider is removed."""
    bridged, queued = await _guarded(emulator)
    path = f"/v1.0{bridged.members_path()}"
    fault = {"path": path, "method": "GET", "status": 503, "count": 4, "retryAfter": 0}
    await emulator.control("POST", "/faults", fault)
    shared = TeamsSharedClient(bridged.net)
    with pytest.raises(TransientError):
        await shared.handle_matrix_membership(_join(bridged, CAROL))
    assert queued.await_args_list == []
    await shared.handle_matrix_membership(_join(bridged, CAROL))
    assert _kicked(queued) == [(CAROL, channel_members.NOT_A_MEMBER)]


async def test_a_member_joining_stays(emulator: Emulator) -> None:  # noqa: F811
    bridged, queued = await _guarded(emulator, "shared")
    await TeamsSharedClient(bridged.net).handle_matrix_membership(_join(bridged, ANNA))
    assert queued.await_args_list == []


async def test_the_bot_and_ghosts_joining_are_not_checked(emulator: Emulator) -> None:  # noqa: F811
    bridged, queued = await _guarded(emulator)
    bridged.net.ctx.parse_ghost_mxid = lambda mxid: "x" if mxid.startswith("@teams_") else None
    before = _member_reads(emulator, bridged)
    shared = TeamsSharedClient(bridged.net)
    await shared.handle_matrix_membership(_join(bridged, BOT))
    await shared.handle_matrix_membership(_join(bridged, "@teams_alex:hub.example"))
    assert queued.await_args_list == []
    assert _member_reads(emulator, bridged) == before


async def test_a_standard_channels_room_keeps_whoever_joins(emulator: Emulator) -> None:  # noqa: F811
    """A standard channel's room is the bridging user's to answer for (its readers are not
    held to the team's): a join there is not checked, and Graph is not asked."""
    bridged, queued = await _guarded(emulator, "standard")
    before = _member_reads(emulator, bridged)
    await TeamsSharedClient(bridged.net).handle_matrix_membership(_join(bridged, BOB))
    assert queued.await_args_list == []
    assert _member_reads(emulator, bridged) == before


async def test_a_message_queued_before_the_removal_still_removes_the_outsider_first(
    emulator: Emulator,  # noqa: F811
) -> None:
    """The removal queued at the join runs after what the room's queue already held: a
    channel message waiting there removes the outsider itself before it is shown."""
    bridged, _ = await _guarded(emulator)
    bridged.room = {ANNA: "Anna", BOB: "Bob", BOT: "Pontis"}
    posted = await emulator.control(
        "POST", f"/teams/{bridged.team}/channels/{bridged.channel}/messages",
        {"from": emulator.user("adele")["id"], "content": "board minutes"},
    )  # fmt: skip
    events = list(await _inbound(bridged.net).convert(await bridged.notification(posted["id"])))
    assert [type(e) for e in events] == [RemoteKick, RemoteMessage]
    assert isinstance(events[0], RemoteKick) and events[0].matrix_user == BOB


# --- photos ----------------------------------------------------------------------------------


async def _photo(emu: Emulator, user: str, data: bytes) -> None:
    url = f"{emu.base}/_emulator/users/{user}/photo"
    async with emu.http.put(url, data=data, headers={"Content-Type": "image/png"}) as response:
        assert response.status in (200, 204), await response.text()


async def test_a_channel_messages_sender_gets_their_teams_photo_once(
    emulator: Emulator,  # noqa: F811
) -> None:
    """As in chats: the sender's photo comes with their first message, and the next message
    within the hour asks Graph nothing (the tenant's photo cache)."""
    bridged, _ = await _guarded(emulator)
    bridged.room = {ANNA: "Anna", BOT: "Pontis"}
    adele = emulator.user("adele")["id"]
    await _photo(emulator, adele, PNG)
    messages: list[Any] = []
    for text in ("first", "second"):
        posted = await emulator.control(
            "POST", f"/teams/{bridged.team}/channels/{bridged.channel}/messages",
            {"from": adele, "content": text},
        )  # fmt: skip
        events = await _inbound(bridged.net).convert(await bridged.notification(posted["id"]))
        messages += [e for e in events if isinstance(e, RemoteMessage)]
    first, second = (m.sender_info for m in messages)
    assert first is not None and first.avatar is not None and first.avatar.data == PNG
    assert first.name
    assert second is not None and second.avatar is None and second.name == first.name
    assert len(emulator.requests(f"/v1.0/users/{adele}/photo", "GET")) == 1
