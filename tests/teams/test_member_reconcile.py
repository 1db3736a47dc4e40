"""Member removals made in Teams while the bridge was down reach the room at the next catch-up
(bridge.teams.member_sync.reconcile), and only Matrix users who are there through their own
Teams account are removed. Against the Graph emulator through the unmodified msgraph-sdk."""

from __future__ import annotations

from unittest.mock import AsyncMock

from bridge.core import LoginID, RemoteChatInfo, RemoteKick
from bridge.portal.models import Login
from bridge.teams.group_chats import relay_owner_key
from bridge.teams.ids import NETWORK
from bridge.teams.member_sync import REMOVED, member_events, reconcile
from tests.teams.test_group_members import ANNA, BOB, _last_system_message, _sync_setup
from tests.teams.test_members import _group
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)


def _kicks(events: list) -> list[RemoteKick]:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, RemoteKick)]


async def test_removals_while_down_reach_the_room_at_the_catch_up(emulator: Emulator) -> None:  # noqa: F811
    chat = await _group(emulator, "adele", "alex", "megan")
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    net, link = await _sync_setup(emulator, chat, {ANNA: "Anna"})
    await link.resolve_relay()
    login = Login(network=NETWORK, login_id=LoginID(adele), user_mxid=ANNA)
    net.ctx.store.list_logins = AsyncMock(return_value=[login])
    first = await reconcile(net, link, chat)
    assert [type(e) for e in first] == [RemoteChatInfo] and first[0].info.members == [alex]
    # Down: Alex is removed, then Adele (Anna's own account); no notification reaches the hub.
    megan = emulator.user("megan")["id"]
    await emulator.control("DELETE", f"/chats/{chat}/members/{alex}?as={megan}")
    await emulator.control("DELETE", f"/chats/{chat}/members/{adele}?as={megan}")
    events = await reconcile(net, link, chat)
    kicks = {k.target: k for k in _kicks(events)}
    assert set(kicks) == {adele, alex}
    assert kicks[alex].leave and kicks[alex].reason == REMOVED  # his ghost leaves
    assert kicks[adele].matrix_user == ANNA and not kicks[adele].leave
    assert _kicks(await reconcile(net, link, chat)) == []  # once


async def test_a_matrix_user_not_there_through_their_teams_account_stays(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: Bob has a Teams login (Alex's account) but is in the room for another reason
    (the relay's chat was opened for him, or his account was never seen in the chat): a
    member list without his account does not remove him, nor does a message naming it."""
    chat = await _group(emulator, "adele", "alex", "megan")
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    megan = emulator.user("megan")["id"]
    await emulator.control("DELETE", f"/chats/{chat}/members/{alex}?as={megan}")
    net, link = await _sync_setup(emulator, chat, {BOB: "Bob", ANNA: "Anna"})
    await link.resolve_relay()
    logins = [
        Login(network=NETWORK, login_id=LoginID(alex), user_mxid=BOB),
        Login(network=NETWORK, login_id=LoginID(adele), user_mxid=ANNA),
    ]
    net.ctx.store.list_logins = AsyncMock(return_value=logins)
    assert _kicks(await reconcile(net, link, chat)) == []  # never seen as a member
    # He was a member once, and the relay's chat is his: still there through the relay.
    await emulator.control("POST", f"/chats/{chat}/members", {"as": megan, "user": alex})
    await reconcile(net, link, chat)
    await net.ctx.store.kv_set(relay_owner_key(chat), BOB)
    await emulator.control("DELETE", f"/chats/{chat}/members/{alex}?as={megan}")
    msg = await _last_system_message(emulator, link, chat)
    assert [k for k in _kicks(await member_events(net, link, chat, msg)) if k.matrix_user] == []


async def test_a_catch_up_converted_again_after_a_crash_finds_the_same_removals(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: the process dies after a catch-up read the members but before its kick
    reached Matrix. The same input converted again must remove Alex again (the saved list
    is the input's, not a plain "last seen" that already lacks him); a later input does not."""
    chat = await _group(emulator, "adele", "alex", "megan")
    alex, megan = emulator.user("alex")["id"], emulator.user("megan")["id"]
    net, link = await _sync_setup(emulator, chat, {ANNA: "Anna"})
    await link.resolve_relay()
    net.ctx.store.list_logins = AsyncMock(return_value=[])
    await reconcile(net, link, chat, token="t0")
    await emulator.control("DELETE", f"/chats/{chat}/members/{alex}?as={megan}")
    first = [k.target for k in _kicks(await reconcile(net, link, chat, token="t1"))]
    assert first == [alex]
    # Crash: the kick never reached Matrix; the inbox converts the same input again.
    again = [k.target for k in _kicks(await reconcile(net, link, chat, token="t1"))]
    assert again == [alex]
    assert _kicks(await reconcile(net, link, chat, token="t2")) == []  # the next gap: once
