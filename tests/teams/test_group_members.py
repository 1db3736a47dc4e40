"""Group chats from Matrix, member sync both ways and ghost avatars (bridge.teams.group_chats,
members, member_sync, avatars), against the Graph emulator through the unmodified msgraph-sdk.
Megan Bowen plays the relay account (see test_members)."""

from __future__ import annotations

import base64
from typing import Any
from unittest.mock import AsyncMock

import pytest
from kiota_abstractions.api_error import APIError

from bridge.core import (
    LoginID,
    MatrixKick,
    NotFound,
    NotSupported,
    RemoteChatInfo,
    RemoteKick,
    RemoteUserID,
)
from bridge.portal.models import Ghost, Login, Portal
from bridge.teams import group_chats, members
from bridge.teams.avatars import Photos, picture_type
from bridge.teams.client import TeamsSharedClient
from bridge.teams.ids import NETWORK, portal_key
from bridge.teams.member_sync import REMOVED, member_events
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink
from tests.teams.test_members import _group, _net
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

ANNA = "@anna:hub.example"
BOB = "@bob:other.example"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _kv(net: TeamsNetwork) -> dict[str, str]:
    """A real key-value store behind the mocked context."""
    kv: dict[str, str] = {}

    async def get(key: str) -> str | None:
        return kv.get(key)

    async def put(key: str, value: str) -> None:
        kv[key] = value

    net.ctx.store.kv_get = get
    net.ctx.store.kv_set = put
    net.ctx.matrix_profile = AsyncMock(return_value=("Anna", None, ""))
    net.ctx.store.list_logins = AsyncMock(return_value=[])
    return kv


async def _relay(link: TenantLink) -> None:
    await link.resolve_relay()
    assert link.relay is not None and link.relay_user_id


# --- group chats from Matrix -------------------------------------------------------------


async def test_each_matrix_user_gets_their_own_relay_chat(emulator: Emulator) -> None:  # noqa: F811
    """Two Matrix users without a Teams login reach Alex through the relay: two group chats,
    never one shared; the same user asking again gets the same chat."""
    net, link = _net(emulator)
    kv = _kv(net)
    await _relay(link)
    alex = RemoteUserID(emulator.user("alex")["id"])
    first = await group_chats.relay_chat(net, link, alex, ANNA)
    again = await group_chats.relay_chat(net, link, alex, ANNA)
    other = await group_chats.relay_chat(net, link, alex, BOB)
    assert first == again and first != other
    state = emulator.services.state
    assert state.chats[first].chat_type == "group"
    assert set(state.chats[first].members) == {alex, link.relay_user_id}
    assert ANNA in (state.chats[first].topic or "") and "Anna" in (state.chats[first].topic or "")
    assert BOB in (state.chats[other].topic or "")
    assert kv[group_chats.relay_owner_key(first)] == ANNA
    info = await TeamsSharedClient(net).get_chat_info(portal_key(first))
    assert info.is_direct is True and info.matrix_users == [ANNA] and info.members == [alex]


async def test_a_one_on_one_chat_is_widened_into_a_group_chat(emulator: Emulator) -> None:  # noqa: F811
    net, _ = _net(emulator)
    _kv(net)
    adele, megan = emulator.user("adele")["id"], emulator.user("megan")["id"]
    alex = RemoteUserID(emulator.user("alex")["id"])
    one_on_one = emulator.chat(1)  # Adele and Megan
    graph = emulator.user_client("adele")
    assert not await members.add_member(net, graph, one_on_one, alex, ANNA, delegated=True)
    key = await group_chats.widen(net, graph, adele, one_on_one, alex, ANNA, relay=False)
    chat = emulator.services.state.chats[key.remote_id]
    assert chat.chat_type == "group" and set(chat.members) == {adele, megan, alex}
    assert set(emulator.services.state.chats[one_on_one].members) == {adele, megan}


async def test_widening_with_an_unknown_person_creates_nothing(emulator: Emulator) -> None:  # noqa: F811
    net, _ = _net(emulator)
    _kv(net)
    before = len(emulator.services.state.chats)
    nobody = RemoteUserID("00000000-0000-4000-8000-000000000099")
    with pytest.raises(NotFound):
        await group_chats.widen(
            net,
            emulator.user_client("adele"),
            emulator.user("adele")["id"],
            emulator.chat(1),
            nobody,
            ANNA,
            relay=False,
        )
    assert len(emulator.services.state.chats) == before


# --- Matrix → Teams: leaving and kicking ---------------------------------------------------


async def test_a_kick_by_someone_outside_the_chat_changes_nothing(emulator: Emulator) -> None:  # noqa: F811
    """Hostile: a Matrix moderator whose Teams account is not in the chat cannot remove its
    people (Graph would refuse them; the bridge says so before trying)."""
    net, _ = _net(emulator)
    chat = await _group(emulator, "adele", "alex")
    megan = emulator.user("megan")["id"]
    alex = RemoteUserID(emulator.user("alex")["id"])
    with pytest.raises(NotSupported) as refused:
        await members.remove(net, emulator.user_client("megan"), megan, chat, alex)
    assert refused.value.user_message == members.NOT_A_MEMBER
    assert alex in emulator.services.state.chats[chat].members
    assert emulator.requests("/v1.0/chats/*/members/*", "DELETE") == []


async def test_a_member_removes_someone_and_teams_shows_it(emulator: Emulator) -> None:  # noqa: F811
    net, _ = _net(emulator)
    chat = await _group(emulator, "adele", "alex", "megan")
    adele = emulator.user("adele")["id"]
    alex = RemoteUserID(emulator.user("alex")["id"])
    await members.remove(net, emulator.user_client("adele"), adele, chat, alex)
    assert alex not in emulator.services.state.chats[chat].members
    [event] = [m for m in emulator.services.state.chats[chat].messages.values() if m.event_detail]
    assert event.message_type == "systemEventMessage"
    assert event.event_detail is not None
    assert event.event_detail["@odata.type"] == "#microsoft.graph.membersDeletedEventMessageDetail"
    with pytest.raises(NotSupported):  # a one-on-one chat keeps its two people
        await members.remove(
            net, emulator.user_client("adele"), adele, emulator.chat(1), RemoteUserID("x")
        )


async def test_the_emulator_refuses_removal_by_an_outsider(emulator: Emulator) -> None:  # noqa: F811
    chat = await _group(emulator, "adele", "alex")
    page = await emulator.app_client().chats.by_chat_id(chat).members.get()
    assert page is not None and page.value
    membership = page.value[0].id
    assert membership
    with pytest.raises(APIError) as outsider:
        await (
            emulator.user_client("megan")
            .chats.by_chat_id(chat)
            .members.by_conversation_member_id(membership)
            .delete()
        )
    assert outsider.value.response_status_code == 403
    assert len(emulator.services.state.chats[chat].members) == 2


# --- Teams → Matrix: member sync -----------------------------------------------------------


async def _sync_setup(emu: Emulator, chat: str, room_members: dict[str, str]) -> Any:
    net, link = _net(emu)
    _kv(net)
    portal = Portal(network=NETWORK, remote_id=portal_key(chat).remote_id, mxid="!room:hub")
    net.ctx.store.get_portal = AsyncMock(return_value=portal)
    net.ctx.store.list_logins = AsyncMock(return_value=[])
    net.ctx.matrix_members = AsyncMock(return_value=room_members)
    return net, link


async def _last_system_message(emu: Emulator, link: TenantLink, chat: str) -> Any:
    [msg_id] = [m.id for m in emu.services.state.chats[chat].messages.values() if m.event_detail][
        -1:
    ]
    return await link.app.chats.by_chat_id(chat).messages.by_chat_message_id(msg_id).get()


async def test_people_added_in_teams_join_and_removed_ones_leave(emulator: Emulator) -> None:  # noqa: F811
    chat = await _group(emulator, "adele", "alex")
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    megan = emulator.user("megan")["id"]
    net, link = await _sync_setup(emulator, chat, {ANNA: "Anna"})
    await link.resolve_relay()
    # Megan is the relay account in these tests: add and remove Alex's colleague Adele instead.
    await emulator.control("DELETE", f"/chats/{chat}/members/{adele}?as={alex}")
    msg = await _last_system_message(emulator, link, chat)
    events = await member_events(net, link, chat, msg)
    assert [type(e) for e in events] == [RemoteChatInfo, RemoteKick]
    assert events[0].info.members == [alex]
    kick = events[1]
    assert isinstance(kick, RemoteKick) and kick.target == adele and kick.reason == REMOVED
    assert kick.leave  # the ghost leaves by itself: no bot power needed in the room
    await emulator.control("POST", f"/chats/{chat}/members", {"as": alex, "user": adele})
    msg = await _last_system_message(emulator, link, chat)
    events = await member_events(net, link, chat, msg)
    assert [type(e) for e in events] == [RemoteChatInfo]
    assert set(events[0].info.members or []) == {adele, alex}
    assert megan not in (events[0].info.members or [])  # the relay has no ghost


async def test_a_replayed_removal_of_someone_still_in_the_chat_removes_nobody(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: the event's list is checked against Graph's members now."""
    chat = await _group(emulator, "adele", "alex")
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    net, link = await _sync_setup(emulator, chat, {})
    await emulator.control("DELETE", f"/chats/{chat}/members/{adele}?as={alex}")
    msg = await _last_system_message(emulator, link, chat)
    await emulator.control("POST", f"/chats/{chat}/members", {"as": alex, "user": adele})
    events = await member_events(net, link, chat, msg)  # the old removal, again
    assert not [e for e in events if isinstance(e, RemoteKick)]


# --- ghost avatars -------------------------------------------------------------------------


def _photos(net: TeamsNetwork, link: TenantLink, ghost: Ghost | None = None, **kw: Any) -> Photos:
    net.ctx.store.get_ghost = AsyncMock(return_value=ghost)
    return Photos(link.app, net.ctx.store, net.ctx.log, **kw)


async def _set_photo(emu: Emulator, first_name: str, data: bytes, mime: str) -> None:
    url = f"{emu.base}/_emulator/users/{emu.user(first_name)['id']}/photo"
    async with emu.http.put(url, data=data, headers={"Content-Type": mime}) as response:
        assert response.status == 200


async def test_a_photo_becomes_the_avatar_once(emulator: Emulator) -> None:  # noqa: F811
    net, link = _net(emulator)
    alex = RemoteUserID(emulator.user("alex")["id"])
    assert await _photos(net, link).changed(alex) is None  # no photo: 404
    await _set_photo(emulator, "alex", PNG, "image/png")
    avatar = await _photos(net, link).changed(alex)
    assert avatar is not None and avatar.data == PNG and avatar.mimetype == "image/png"
    assert avatar.avatar_id and avatar.avatar_id.startswith("teams-photo:")
    ghost = Ghost(network=NETWORK, remote_id=alex, mxid="@teams_x:hub", avatar_id=avatar.avatar_id)
    downloads = len(emulator.requests("/v1.0/users/*/photo/$value", "GET"))
    assert await _photos(net, link, ghost).changed(alex) is None  # unchanged: not downloaded
    assert len(emulator.requests("/v1.0/users/*/photo/$value", "GET")) == downloads
    now = [0.0]
    photos = _photos(net, link, None, clock=lambda: now[0])
    assert await photos.changed(alex) is not None
    assert await photos.changed(alex) is None  # asked again within the hour: Graph not asked
    now[0] += 4000
    assert await photos.changed(alex) is not None


async def test_a_photo_that_is_no_picture_or_too_big_is_refused(emulator: Emulator) -> None:  # noqa: F811
    net, link = _net(emulator)
    alex = RemoteUserID(emulator.user("alex")["id"])
    await _set_photo(emulator, "alex", b"<html><script>x</script></html>", "image/png")
    assert await _photos(net, link).changed(alex) is None
    await _set_photo(emulator, "alex", PNG + b"\0" * 5000, "image/png")
    assert await _photos(net, link, max_bytes=1000).changed(alex) is None


def test_picture_types_are_read_from_the_bytes() -> None:
    assert picture_type(PNG) == ("image/png", "png")
    assert picture_type(b"\xff\xd8\xff\xe0rest") == ("image/jpeg", "jpg")
    assert picture_type(b"RIFF\0\0\0\0WEBPVP8 ") == ("image/webp", "webp")
    assert picture_type(b"GIF89a...") == ("image/gif", "gif")
    assert picture_type(b"<svg onload=alert(1)>") is None


async def test_a_kick_through_the_relay_removes_nobody_and_says_so(emulator: Emulator) -> None:  # noqa: F811
    """Hostile: a Matrix moderator without a Teams login cannot make the relay account remove
    people from a Teams chat."""
    net, _ = _net(emulator)
    chat = await _group(emulator, "adele", "alex", "megan")
    alex = emulator.user("alex")["id"]
    net.ctx.parse_ghost_mxid = lambda mxid: RemoteUserID(alex)
    portal = Portal(network=NETWORK, remote_id=portal_key(chat).remote_id, mxid="!room:hub")
    kick = MatrixKick(
        portal=portal,
        event_id="$kick",
        sender=BOB,
        sender_name="Bob",
        timestamp=0,
        target=f"@teams_{alex}:hub",
    )
    with pytest.raises(NotSupported) as refused:
        await TeamsSharedClient(net).handle_matrix_kick(kick)
    assert "still in the Teams chat" in refused.value.user_message
    assert alex in emulator.services.state.chats[chat].members
    assert emulator.requests("/v1.0/chats/*/members/*", "DELETE") == []


async def test_a_matrix_user_removed_in_teams_stops_reading_the_chat(emulator: Emulator) -> None:  # noqa: F811
    """Adele's own Teams account is removed from the chat in Teams: the bot removes her Matrix
    user from the room (a ghost would only leave; she is no ghost)."""
    chat = await _group(emulator, "adele", "alex")
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    net, link = await _sync_setup(emulator, chat, {ANNA: "Anna"})
    login = Login(network=NETWORK, login_id=LoginID(adele), user_mxid=ANNA)
    net.ctx.store.list_logins = AsyncMock(return_value=[login])
    await emulator.control("DELETE", f"/chats/{chat}/members/{adele}?as={alex}")
    msg = await _last_system_message(emulator, link, chat)
    events = await member_events(net, link, chat, msg)
    [kick] = [e for e in events if isinstance(e, RemoteKick)]
    assert kick.matrix_user == ANNA and not kick.leave
    # Added back in Teams: she is invited again, and only by the event that added her.
    net.ctx.matrix_members = AsyncMock(return_value={})
    await emulator.control("POST", f"/chats/{chat}/members", {"as": alex, "user": adele})
    msg = await _last_system_message(emulator, link, chat)
    [info] = await member_events(net, link, chat, msg)
    assert isinstance(info, RemoteChatInfo) and info.info.matrix_users == [ANNA]
    assert info.info.members == [alex]  # her account is hers, not a ghost's
    megan = emulator.user("megan")["id"]
    await emulator.control("POST", f"/chats/{chat}/members", {"as": alex, "user": megan})
    await emulator.control("DELETE", f"/chats/{chat}/members/{megan}?as={alex}")
    msg = await _last_system_message(emulator, link, chat)
    info = (await member_events(net, link, chat, msg))[0]
    assert isinstance(info, RemoteChatInfo) and info.info.matrix_users == []
