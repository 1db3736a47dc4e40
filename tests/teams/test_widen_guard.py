"""Hostile: a one-on-one chat is widened into a group chat only by one of its members
(bridge.teams.group_chats.widen), never through the relay for someone the chat is not for."""

from __future__ import annotations

import pytest

from bridge.core import NotSupported, RemoteUserID
from bridge.portal.models import Portal
from bridge.teams import group_chats
from bridge.teams.client import TeamsSharedClient
from bridge.teams.ids import NETWORK, portal_key
from tests.teams.test_group_members import ANNA, _kv, _relay
from tests.teams.test_members import _net
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)


async def test_the_relay_does_not_widen_a_one_on_one_chat_it_is_not_in(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Anna (no Teams login) invites someone into the room of Adele and Alex's one-on-one
    chat: the relay account is no member of it, so no group chat of its people is made."""
    net, link = _net(emulator)
    _kv(net)
    await _relay(link)
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    megan = emulator.user("megan")["id"]
    chat = await emulator.control(
        "POST", "/chats", {"chatType": "oneOnOne", "members": [adele, alex]}
    )
    chat_id = str(chat["id"])
    await net.remember_chat(chat_id, link.id)
    await net.ctx.store.kv_set(group_chats.relay_owner_key(chat_id), ANNA)  # forged: not enough
    before = set(emulator.services.state.chats)
    portal = Portal(NETWORK, portal_key(chat_id).remote_id, mxid="!dm:hub")
    third = RemoteUserID(megan)  # the tenant has three people: Megan is also the relay
    with pytest.raises(NotSupported) as refused:
        await TeamsSharedClient(net).handle_matrix_invite(portal, ANNA, third)
    assert refused.value.user_message == group_chats.NOT_YOURS
    assert set(emulator.services.state.chats) == before


async def test_the_relay_widens_only_for_the_matrix_user_its_chat_is_for(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: Bob (of this hub), in the room of the relay's one-on-one chat opened for Anna, cannot make
    it a group chat; Anna can."""
    net, link = _net(emulator)
    kv = _kv(net)
    await _relay(link)
    megan, alex = emulator.user("megan")["id"], emulator.user("alex")["id"]  # Megan: the relay
    chat = await emulator.control(
        "POST", "/chats", {"chatType": "oneOnOne", "members": [megan, alex]}
    )
    chat_id = str(chat["id"])
    await net.remember_chat(chat_id, link.id)
    kv[group_chats.relay_owner_key(chat_id)] = ANNA
    third = RemoteUserID(emulator.user("adele")["id"])
    graph, me = link.relay, str(link.relay_user_id)
    assert graph is not None
    before = set(emulator.services.state.chats)
    with pytest.raises(NotSupported):
        await group_chats.widen(net, graph, me, chat_id, third, "@bob:hub.example", relay=True)
    assert set(emulator.services.state.chats) == before
    key = await group_chats.widen(net, graph, me, chat_id, third, ANNA, relay=True)
    assert set(emulator.services.state.chats[key.remote_id].members) == {megan, alex, third}
    assert kv[group_chats.relay_owner_key(key.remote_id)] == ANNA


async def test_a_login_not_in_the_chat_does_not_widen_it(emulator: Emulator) -> None:  # noqa: F811
    """Hostile: Alex's own account acting on Adele and Megan's one-on-one chat is refused."""
    net, _ = _net(emulator)
    _kv(net)
    alex = emulator.user("alex")["id"]
    before = set(emulator.services.state.chats)
    third = RemoteUserID(alex)  # asks to add himself to a chat he is not in
    with pytest.raises(NotSupported):
        await group_chats.widen(
            net, emulator.user_client("alex"), alex, emulator.chat(1), third, ANNA, relay=False
        )
    assert set(emulator.services.state.chats) == before


async def test_one_matrix_user_cannot_open_relay_chats_without_end(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: each relay chat is a Teams chat in the relay's name that pings its person;
    one Matrix user opens at most RELAY_CHATS_PER_HOUR an hour (the same one again is free)."""
    net, link = _net(emulator)
    kv = _kv(net)
    await _relay(link)
    alex = RemoteUserID(emulator.user("alex")["id"])
    for _ in range(group_chats.RELAY_CHATS_PER_HOUR):
        kv.pop(f"relay-chat:{link.id}:{ANNA}:{alex}", None)  # forget it: a new one each time
        await group_chats.relay_chat(net, link, alex, ANNA)
    before = set(emulator.services.state.chats)
    again = await group_chats.relay_chat(net, link, alex, ANNA)  # the known one: no new chat
    assert again in before
    kv.pop(f"relay-chat:{link.id}:{ANNA}:{alex}", None)
    with pytest.raises(NotSupported) as refused:
        await group_chats.relay_chat(net, link, alex, ANNA)
    assert "last hour" in refused.value.user_message
    assert set(emulator.services.state.chats) == before
    await group_chats.relay_chat(net, link, alex, "@bob:hub.example")  # others are not held up
