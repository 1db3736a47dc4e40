"""The hub end to end, from a Matrix user's side of the bot: the management room, commands,
and ghosts found by inviting them (real Synapse, the real bridge, the reference network)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.hub import eventually
from tests.e2e.reference_portal import _body, _chats, _management_room

pytestmark = pytest.mark.e2e


async def test_management_room_help(hub: Hub) -> None:
    alice = await hub.user("alice")
    room_id = await _management_room(hub, alice)
    await alice.send_text(room_id, "help")
    reply = await alice.wait_for(
        lambda e: e["sender"] == hub.bot and "login <network>" in _body(e), room_id=room_id
    )
    assert "reference" in _body(reply)
    assert reply["content"]["msgtype"] == "m.notice"


async def test_unpermitted_user_is_refused_politely(hub: Hub) -> None:
    outsider = await hub.user(localpart="outsider")
    room_id = await outsider.create_room(invite=[hub.bot], is_direct=True)
    refusal = await outsider.wait_for(
        lambda e: e["sender"] == hub.bot and e["type"] == "m.room.message", room_id=room_id
    )
    assert "not open to" in _body(refusal) and "bridge.permissions" in _body(refusal)
    await outsider.wait_for(
        lambda e: (
            e["type"] == "m.room.member"
            and e["state_key"] == hub.bot
            and e["content"]["membership"] == "leave"
        ),
        room_id=room_id,
    )


async def test_login_and_logout_through_the_management_room(hub: Hub) -> None:
    carol = await hub.user("carol")
    room_id = await _management_room(hub, carol)
    await carol.send_text(room_id, "login reference")
    await carol.wait_for(
        lambda e: "user name" in _body(e) and e["sender"] == hub.bot, room_id=room_id
    )
    await carol.send_text(room_id, "carol-remote")
    await carol.wait_for(
        lambda e: "Logged in to the reference network as carol-remote" in _body(e), room_id=room_id
    )
    await carol.send_text(room_id, "list")
    await carol.wait_for(lambda e: "reference: carol-remote" in _body(e), room_id=room_id)
    await carol.send_text(room_id, "logout reference")
    await carol.wait_for(lambda e: "Logged out of Reference network" in _body(e), room_id=room_id)
    assert hub.bridge.query("SELECT count(*) FROM login WHERE user_mxid = ?", carol.mxid) == [(0,)]


async def test_bot_is_registered_with_its_display_name(hub: Hub) -> None:
    user = await hub.user("profile")
    assert (await user.get_profile(hub.bot))["displayname"] == "Pontis bridge"


async def test_user_query_creates_a_resolvable_ghost_on_demand(hub: Hub) -> None:
    # Synapse asks the appservice about an unknown user in its namespace when a member event
    # names them, e.g. when a Matrix user invites a ghost to start a chat.
    user = await hub.user("query")
    hub.remote.users["erin"] = {"name": "Erin Remote"}
    await user.create_room(invite=[f"@reference_erin:{DOMAIN}"], is_direct=True)
    await eventually(
        lambda: (
            hub.bridge.query("SELECT name FROM ghost WHERE remote_id = 'erin'")
            == [("Erin Remote",)]
        ),
        "the ghost to be created",
    )
    assert (await user.get_profile(f"@reference_erin:{DOMAIN}"))["displayname"] == "Erin Remote"

    url = f"http://127.0.0.1:{hub.as_port}/_matrix/app/v1/users/@reference_nobody:{DOMAIN}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {hub.hs_token}"}) as resp:
            assert resp.status == 404
        async with http.get(
            f"http://127.0.0.1:{hub.as_port}/_matrix/app/v1/users/@reference_erin:{DOMAIN}"
        ) as resp:
            assert resp.status == 401
    assert hub.bridge.query("SELECT count(*) FROM ghost WHERE remote_id = 'nobody'") == [(0,)]


async def test_inviting_a_ghost_starts_a_direct_chat(hub: Hub) -> None:
    alice = await hub.user("alice")
    hub.remote.users["frank"] = {"name": "Frank Remote"}
    ghost = f"@reference_frank:{DOMAIN}"
    room_id = await alice.create_room(invite=[ghost], is_direct=True)
    await alice.wait_for(
        lambda e: (
            e["type"] == "m.room.member"
            and e["state_key"] == ghost
            and e["content"]["membership"] == "join"
        ),
        room_id=room_id,
    )
    sent = await alice.send_text(room_id, "Hi Frank, from Matrix")
    action = await hub.remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == sent
    )
    assert action.body["chat"] == "dm:frank"
    assert hub.bridge.query("SELECT receiver, is_direct FROM portal WHERE mxid = ?", room_id) == [
        (alice.mxid, 1)
    ]

    nobody = f"@reference_nobody:{DOMAIN}"
    other = await alice.create_room(invite=[nobody], is_direct=True)
    rejected = await alice.wait_for(
        lambda e: (
            e["type"] == "m.room.member"
            and e["state_key"] == nobody
            and e["content"]["membership"] == "leave"
        ),
        room_id=other,
    )
    assert "could not find" in rejected["content"].get("reason", "")


async def test_bridge_command_bridges_an_existing_room(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat = f"chat{next(_chats)}"
    hub.remote.chats[chat] = {"name": "Existing chat"}
    # Bob speaks below, so the network must know him (not left to an earlier test).
    hub.remote.users["bob"] = {"name": "Bob Remote"}
    room_id = await alice.create_room(invite=[hub.bot])
    await alice.wait_for(
        lambda e: (
            e["type"] == "m.room.member"
            and e["state_key"] == hub.bot
            and e["content"]["membership"] == "join"
        ),
        room_id=room_id,
    )
    await alice.send_text(room_id, "just chatting, not a command")
    await alice.send_text(room_id, f"!pontis bridge reference {chat}")
    await alice.wait_for(lambda e: "now bridged" in _body(e), room_id=room_id)
    assert not alice.seen(
        lambda e: e["sender"] == hub.bot and "Unknown command" in _body(e), room_id=room_id
    )
    sent = await alice.send_text(room_id, "into the existing chat")
    action = await hub.remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == sent
    )
    assert action.body["chat"] == chat
    await hub.remote.push(
        {"kind": "message", "chat": chat, "sender": "bob", "id": f"{chat}-x", "text": "welcome"}
    )
    await alice.wait_for(
        lambda e: _body(e) == "welcome" and e["sender"] == f"@reference_bob:{DOMAIN}",
        room_id=room_id,
    )
    # Carol's own account is removed on the network, but Alice did not give the bot the power
    # to kick in her room: the room is told once (not per removal), and the chat goes on.
    carol = await hub.user("carol")
    await alice.invite(room_id, carol.mxid)
    await carol.join(room_id)
    kick = {"kind": "kick", "chat": chat, "target": "carol", "matrix_user": carol.mxid,
            "reason": "Removed from the chat"}  # fmt: skip
    await hub.remote.push(kick)
    await hub.remote.push(kick)
    await hub.remote.push(
        {"kind": "message", "chat": chat, "sender": "bob", "id": f"{chat}-y", "text": "after"}
    )
    await alice.wait_for(lambda e: _body(e) == "after", room_id=room_id)
    told = alice.seen(lambda e: e["sender"] == hub.bot and "cannot remove" in _body(e), room_id)
    assert len(told) == 1
    assert "the power to kick (power level 50)" in _body(told[0])
    assert carol.mxid in await alice.joined_members(room_id)
