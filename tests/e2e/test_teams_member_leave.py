"""A Matrix user's own Teams account follows their leaves and joins of a group chat's portal
room (bridge.teams.matrix_members), against a real Synapse, the bridge as a process and the
Graph emulator.

Adele and Megan log in to Teams (as in test_teams and test_outages); Carol has no Teams login
and writes through the relay account.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.test_teams import (  # noqa: F401 (adele: the fixture)
    Teams,
    _body,
    adele,
    teams_login,
)
from tests.e2e.test_teams_members import _gone, _joined, _members

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module")
async def megan(hub: Hub) -> AsyncIterator[Teams]:
    """A Matrix user logged in as the Teams user Megan Bowen (as in test_outages)."""
    user = await hub.user("megan")
    room = await teams_login(hub, user, "megan")
    yield Teams(user, room)


async def _group_portal(hub: Hub, adele: Teams, megan: Teams) -> tuple[str, str]:  # noqa: F811
    """Alex writes in a new group chat of his, Adele's and Megan's: (chat id, room id) once
    both Matrix users are in its room."""
    chat = await hub.graph.new_chat("Leaving and coming back", "adele", "alex", "megan")
    await hub.graph.post_as("alex", chat, "<p>Who reads this?</p>")
    room_id = await adele.user.wait_for_invite(timeout=45)
    await adele.user.join(room_id)
    while await megan.user.wait_for_invite(timeout=45) != room_id:
        pass
    await megan.user.join(room_id)
    for user in (adele.user, megan.user):
        await user.wait_for(lambda e: _body(e) == "Who reads this?", room_id=room_id, timeout=45)
    return chat, room_id


async def test_a_logged_in_user_leaves_the_teams_chat_and_comes_back_by_invite(
    hub: Hub,
    adele: Teams,  # noqa: F811
    megan: Teams,
) -> None:
    """Carol (no Teams login) joins and leaves: nothing changes in Teams. Adele leaves: her
    Teams account leaves the chat (and the bridge does not kick her back out of Matrix for
    it). Megan invites her again: Megan's login adds Adele's account to the chat, once."""
    chat, room_id = await _group_portal(hub, adele, megan)
    ids = {n: hub.graph.user(n)["id"] for n in ("adele", "alex", "megan")}
    before = _members(hub, chat)
    assert {ids["adele"], ids["alex"], ids["megan"]} <= before

    # Hostile: a relay user's join and leave are nobody's membership in Teams.
    carol = await hub.user("carol")
    await adele.user.invite(room_id, carol.mxid)
    await carol.join(room_id)
    await adele.user.wait_for(_joined(carol.mxid), room_id=room_id, timeout=45)
    await carol.leave(room_id)
    await adele.user.wait_for(_gone(carol.mxid), room_id=room_id, timeout=45)

    mark = megan.user.mark()
    # Her client set up encryption (a deactivated account has no device: its leave stays here).
    await adele.user.upload_device_keys()
    await adele.user.leave(room_id)
    # The portal's queue is ordered: Carol's events were handled before Adele's leave.
    await eventually(lambda: ids["adele"] not in _members(hub, chat), "Adele out of Teams", 45)
    assert _members(hub, chat) == before - {ids["adele"]}
    left = await megan.user.wait_for(_gone(adele.user.mxid), room_id=room_id, timeout=45)
    assert left["sender"] == adele.user.mxid  # she left; nobody kicked her
    await hub.graph.post_as("alex", chat, "<p>Adele has gone</p>")
    await megan.user.wait_for(
        lambda e: _body(e) == "Adele has gone", room_id=room_id, after=mark, timeout=45
    )
    assert not [
        e for e in megan.user.events[mark:]
        if e["room_id"] == room_id and e["type"] == "m.room.member"
        and e["state_key"] == adele.user.mxid and e["sender"] != adele.user.mxid
    ]  # fmt: skip

    await megan.user.invite(room_id, adele.user.mxid)
    while await adele.user.wait_for_invite(timeout=45) != room_id:
        pass
    await adele.user.join(room_id)
    await eventually(lambda: ids["adele"] in _members(hub, chat), "Adele back in Teams", 45)
    assert _members(hub, chat) == before
    # Teams announces the addition; the bridge sees Adele in the room and adds nothing more.
    mark = adele.user.mark()
    await hub.graph.post_as("alex", chat, "<p>Welcome back</p>")
    await adele.user.wait_for(
        lambda e: _body(e) == "Welcome back", room_id=room_id, after=mark, timeout=45
    )
    posts = hub.graph.services.wire.requests
    adds = [
        r for r in posts if r["method"] == "POST" and r["path"] == f"/v1.0/chats/{chat}/members"
    ]
    assert len(adds) == 1
    assert adele.user.mxid in await megan.user.joined_members(room_id)


async def test_a_removal_teams_refuses_is_told_and_the_room_goes_on(
    hub: Hub,
    adele: Teams,  # noqa: F811
    megan: Teams,
) -> None:
    """Hostile: Graph answers 403 to Adele's removal. The room is told her Teams account is
    still in the chat, it is, and the portal's next events still arrive."""
    chat, room_id = await _group_portal(hub, adele, megan)
    adele_id = hub.graph.user("adele")["id"]
    await hub.graph.control(
        "POST",
        "/faults",
        {"path": f"/v1.0/chats/{chat}/members/*", "method": "DELETE", "status": 403},
    )
    mark = megan.user.mark()
    await adele.user.upload_device_keys()
    await adele.user.leave(room_id)
    notice = await megan.user.wait_for(
        lambda e: "still a member there" in _body(e), room_id=room_id, after=mark, timeout=45
    )
    assert notice["sender"] == hub.bot and "Teams refused it" in _body(notice)
    assert adele_id in _members(hub, chat)
    await hub.graph.post_as("alex", chat, "<p>Still going</p>")
    await megan.user.wait_for(
        lambda e: _body(e) == "Still going", room_id=room_id, after=mark, timeout=45
    )
