"""Teams group chats from Matrix, member sync both ways and ghost avatars, against a real
Synapse, the bridge as a process and the Graph emulator.

Adele logs in to Teams (as in test_teams); Carol has no Teams login and writes through the
relay account. Each test makes its own rooms and chats.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_teams import (  # noqa: F401 (adele: the fixture)
    Teams,
    _body,
    _portal,
    _teams_message,
    adele,
    ghost,
)
from tests.e2e.test_teams_durable import _deliveries
from tests.e2e.test_teams_service_chat import _from_relay

pytestmark = pytest.mark.e2e
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _joined(mxid: str) -> Any:
    return lambda e: (
        e["type"] == "m.room.member"
        and e["state_key"] == mxid
        and e["content"]["membership"] == "join"
    )


def _gone(mxid: str) -> Any:
    return lambda e: (
        e["type"] == "m.room.member"
        and e["state_key"] == mxid
        and e["content"]["membership"] in ("leave", "ban")
    )


def _chat_of(hub: Hub, room_id: str) -> str:
    rows = hub.bridge.query("SELECT remote_id FROM portal WHERE mxid = ?", room_id)
    return str(rows[0][0]) if rows else ""


def _members(hub: Hub, chat_id: str) -> set[str]:
    return set(hub.graph.services.state.chats[chat_id].members)


async def _dm(hub: Hub, user: MatrixUser, *first_names: str) -> tuple[str, str]:
    """``user`` opens a room with Teams people's ghosts: (room id, Teams chat id)."""
    people = [ghost(hub, n) for n in first_names]
    room_id = await user.create_room(invite=people, is_direct=True)
    for person in people:
        await user.wait_for(_joined(person), room_id=room_id, timeout=45)
    chat: list[str] = []

    def bridged() -> bool:
        chat[:] = [_chat_of(hub, room_id)]
        return bool(chat[0])

    await eventually(bridged, "the DM to become a portal", timeout=30)
    return room_id, chat[0]


async def test_each_relayed_user_gets_their_own_chat_and_can_add_people(
    hub: Hub,
    adele: Teams,  # noqa: F811 (the relay is watched once a Teams login exists)
) -> None:
    """Carol and Bob, without Teams logins, each open a room with Alex: two Teams group chats
    of the relay account, each named after its Matrix user, never one shared. Bob's room has
    Megan's ghost too (both invited at once), so his chat has her; Carol adds Megan later from
    Matrix. A kick of Megan by Carol (no Teams login) leaves her in Teams and says so."""
    carol, bob = await hub.user("carol"), await hub.user("bob")
    alex, megan = hub.graph.user("alex")["id"], hub.graph.user("megan")["id"]
    carol_room, carol_chat = await _dm(hub, carol, "alex")
    _, bob_chat = await _dm(hub, bob, "alex", "megan")
    assert carol_chat != bob_chat
    state = hub.graph.services.state
    for chat, who in ((carol_chat, carol), (bob_chat, bob)):
        assert state.chats[chat].chat_type == "group"
        assert alex in _members(hub, chat)
        assert who.mxid in (state.chats[chat].topic or "")
    assert len(_members(hub, carol_chat)) == 2  # the relay account and Alex
    assert megan in _members(hub, bob_chat) and len(_members(hub, bob_chat)) == 3

    await carol.invite(carol_room, ghost(hub, "megan"))
    await carol.wait_for(_joined(ghost(hub, "megan")), room_id=carol_room, timeout=45)
    assert megan in _members(hub, carol_chat)
    await hub.graph.post_as("megan", carol_chat, "<p>Hello Carol, from Megan</p>")
    hello = await carol.wait_for(
        lambda e: _body(e) == "Hello Carol, from Megan", room_id=carol_room, timeout=45
    )
    assert hello["sender"] == ghost(hub, "megan")
    await carol.send_text(carol_room, "Hi Megan")
    sent = await _teams_message(
        hub, carol_chat, lambda m: "Hi Megan" in m["body"]["content"], "Carol's answer"
    )
    assert _from_relay(sent)

    # Hostile: Carol may kick in her room, but has no Teams account to remove anyone with.
    mark = carol.mark()
    await carol.kick(carol_room, ghost(hub, "megan"))
    await carol.wait_for(
        lambda e: "still in the Teams chat" in _body(e), room_id=carol_room, after=mark, timeout=45
    )
    assert megan in _members(hub, carol_chat)


async def test_a_dm_widens_into_a_group_chat_and_members_sync_both_ways(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    """Adele (logged in) DMs Alex, then invites Patti (who never logs in, so she is a ghost
    whatever other tests did): Teams cannot widen a one-on-one chat, so
    a group chat of the three is made, in a new room: the DM's history stays with the two
    (Patti's ghost declines there, Adele is pointed to the new room). Alex adds and removes
    Nestor in Teams, and the room follows; Nestor's photo is his ghost's avatar. Adele kicks
    Patti (her own account may), then leaves the room, and her Teams account the chat."""
    user = adele.user
    ids = {n: hub.graph.user(n)["id"] for n in ("adele", "alex", "patti", "nestor")}
    dm_room, one_on_one = await _dm(hub, user, "alex")
    assert hub.graph.services.state.chats[one_on_one].chat_type == "oneOnOne"
    await hub.graph.post_as("alex", one_on_one, "<p>Just between us</p>")
    await user.wait_for(lambda e: _body(e) == "Just between us", room_id=dm_room, timeout=45)

    mark = user.mark()
    await user.invite(dm_room, ghost(hub, "patti"))
    # Hostile: the one-on-one room's history never reaches Patti.
    await user.wait_for(_gone(ghost(hub, "patti")), room_id=dm_room, after=mark, timeout=45)
    notice = await user.wait_for(
        lambda e: "matrix.to" in _body(e), room_id=dm_room, after=mark, timeout=45
    )
    room_id = ""
    while room_id not in _body(notice) or not room_id:
        room_id = await user.wait_for_invite(timeout=45)
    await user.join(room_id)
    assert _chat_of(hub, dm_room) == one_on_one  # the DM stays the one-on-one chat's portal
    await user.wait_for(_joined(ghost(hub, "patti")), room_id=room_id, timeout=45)
    group = _chat_of(hub, room_id)
    assert group != one_on_one
    assert not [e for e in user.events if e["room_id"] == room_id and "between us" in _body(e)]
    assert _members(hub, group) == {ids["adele"], ids["alex"], ids["patti"]}
    assert _members(hub, one_on_one) == {ids["adele"], ids["alex"]}
    await hub.graph.post_as("patti", group, "<p>Three of us now</p>")
    three = await user.wait_for(
        lambda e: _body(e) == "Three of us now", room_id=room_id, timeout=45
    )
    assert three["sender"] == ghost(hub, "patti")

    # Teams → Matrix: Alex adds Nestor (who has a photo), then removes him.
    url = f"{hub.graph.base}/_emulator/users/{ids['nestor']}/photo"
    async with hub.graph.http.put(url, data=PNG, headers={"Content-Type": "image/png"}) as r:
        assert r.status == 200
    nestor = ghost(hub, "nestor")
    await hub.graph.control(
        "POST", f"/chats/{group}/members", {"as": ids["alex"], "user": ids["nestor"]}
    )
    await user.wait_for(_joined(nestor), room_id=room_id, timeout=45)
    await hub.graph.post_as("nestor", group, "<p>Hi, Nestor here</p>")
    await user.wait_for(lambda e: _body(e) == "Hi, Nestor here", room_id=room_id, timeout=45)
    profile = await user.get_profile(nestor)
    assert str(profile.get("avatar_url", "")).startswith("mxc://")
    await hub.graph.control("DELETE", f"/chats/{group}/members/{ids['nestor']}?as={ids['alex']}")
    removed = await user.wait_for(_gone(nestor), room_id=room_id, timeout=45)
    assert removed["sender"] == nestor  # he left: the bot needs no power in Adele's room

    # Matrix → Teams: Adele's kick removes Patti with Adele's own account.
    await user.kick(room_id, ghost(hub, "patti"))
    await eventually(lambda: ids["patti"] not in _members(hub, group), "Patti removed", 45)
    # Adele leaves the room: her Teams account leaves the group chat too (test_teams_member_leave;
    # her client set up encryption, so hers is no deactivated account's leave).
    await user.upload_device_keys()
    await user.leave(room_id)
    await eventually(lambda: _members(hub, group) == {ids["alex"]}, "Adele out of Teams", 45)


async def test_a_matrix_user_removed_in_teams_leaves_the_portal(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    """Alex removes Adele from their Teams chat: Adele's Matrix user no longer reads it."""
    chat, _, room_id, _ = await _portal(hub, adele, "Before the removal")
    ids = {n: hub.graph.user(n)["id"] for n in ("adele", "alex")}
    await hub.graph.control("DELETE", f"/chats/{chat}/members/{ids['adele']}?as={ids['alex']}")
    kicked = await adele.user.wait_for(_gone(adele.user.mxid), room_id=room_id, timeout=45)
    assert kicked["sender"] == hub.bot
    assert kicked["content"].get("reason") == "Removed from the chat in Teams"


async def test_a_removal_made_while_the_hub_is_down_reaches_the_room_at_the_start(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    """Alex is removed from the chat while the hub is stopped (no notification reaches it):
    at the next start the catch-up reads the chat's members, and his ghost leaves the room."""
    chat, _, room_id, _ = await _portal(hub, adele, "Before the outage")
    ids = {n: hub.graph.user(n)["id"] for n in ("adele", "alex")}
    alex = ghost(hub, "alex")
    mark = adele.user.mark()
    hub.bridge.stop()
    try:
        await hub.graph.control("DELETE", f"/chats/{chat}/members/{ids['alex']}?as={ids['adele']}")
        await eventually(  # Graph retries, then gives up on the webhook
            lambda: all(d.state != "pending" for d in _deliveries(hub, chat)), "Graph to give up"
        )
    finally:
        await hub.bridge.start(hub.as_port)
    gone = await adele.user.wait_for(_gone(alex), room_id=room_id, after=mark, timeout=45)
    assert gone["sender"] == alex
    assert gone["content"].get("reason") == "Removed from the chat in Teams"
    assert adele.user.mxid in await adele.user.joined_members(room_id)
