"""Bridging existing rooms and reaching chats through aliases, refused where it must be: real
Synapse, Prosody and the bridge process (the paths of bridge.core.adopt)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from slixmpp.exceptions import PresenceError

from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.matrix_client import MatrixRequestError, MatrixUser
from tests.e2e.test_xmpp import xmpp_account

pytestmark = pytest.mark.e2e
_names = itertools.count(1)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def _chat(hub: Hub) -> str:
    chat = f"adopt{next(_names)}"
    hub.remote.chats[chat] = {"name": f"Chat {chat}", "topic": "Bridged"}
    return chat


def _portal_of(hub: Hub, chat: str) -> list[tuple[Any, ...]]:
    return hub.bridge.query(
        "SELECT mxid FROM portal WHERE network = 'reference' AND remote_id = ?", chat
    )


async def _room_with_bot(hub: Hub, user: MatrixUser, **kwargs: Any) -> str:
    room_id = await user.create_room(**kwargs)
    await user.invite(room_id, hub.bot)
    await user.wait_for(lambda e: e.get("state_key") == hub.bot and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    return room_id


async def _say(user: MatrixUser, room_id: str, text: str, answer: str) -> str:
    await user.send_text(room_id, text)
    reply = await user.wait_for(lambda e: answer in _body(e), room_id=room_id)
    return _body(reply)


async def test_a_chat_bridged_into_one_room_is_not_bridged_into_another(hub: Hub) -> None:
    # (In a portal, `!pontis …` is a message to the network like any other, so "this room is
    # already bridged" is for the core's other callers: tests/test_adopt.py.)
    alice = await hub.user("alice")
    first = _chat(hub)
    room_id = await _room_with_bot(hub, alice)
    await _say(alice, room_id, f"!pontis bridge reference {first}", "now bridged")
    other = await _room_with_bot(hub, alice)
    reply = await _say(alice, other, f"!pontis bridge reference {first}", "already bridged")
    assert reply == f"`{first}` is already bridged to {room_id}."
    assert _portal_of(hub, first) == [(room_id,)]
    assert hub.bridge.query("SELECT 1 FROM portal WHERE mxid = ?", other) == []


async def test_a_sender_without_the_user_level_cannot_bridge(hub: Hub) -> None:
    alice, outsider = await hub.user("alice"), await hub.user(localpart="outsider")
    chat = _chat(hub)
    room_id = await _room_with_bot(hub, alice, invite=[outsider.mxid])
    await outsider.join(room_id)
    reply = await _say(outsider, room_id, f"!pontis bridge reference {chat}", "not open to")
    assert outsider.mxid in reply
    assert _portal_of(hub, chat) == []
    assert hub.bridge.query("SELECT 1 FROM portal WHERE mxid = ?", room_id) == []


@pytest.mark.parametrize("alias", ["#nonet_one", "#reference_nosuchchat", "#reference_=zz"])
async def test_an_alias_that_names_no_chat_is_not_found(hub: Hub, alias: str) -> None:
    alice = await hub.user("alice")
    with pytest.raises(MatrixRequestError) as refused:
        await alice.join(f"{alias}:{DOMAIN}")
    assert refused.value.status == 404


async def test_an_alias_reaches_a_chat_bridged_by_command_in_its_room(hub: Hub) -> None:
    alice, bob = await hub.user("alice"), await hub.user("bob")
    chat = _chat(hub)
    room_id = await _room_with_bot(hub, alice, preset="public_chat")
    await _say(alice, room_id, f"!pontis bridge reference {chat}", "now bridged")
    assert await bob.join(f"#reference_{chat}:{DOMAIN}") == room_id
    assert _portal_of(hub, chat) == [(room_id,)]


async def test_an_xmpp_user_cannot_take_over_a_portal_through_its_alias(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, localpart = _chat(hub), f"taken{next(_names)}"
    room_id = await _room_with_bot(hub, alice, preset="public_chat", room_alias_name=localpart)
    await _say(alice, room_id, f"!pontis bridge reference {chat}", "now bridged")
    async with xmpp_account(hub, "xeno") as xeno:
        with pytest.raises(PresenceError) as refused:
            await xeno.join_muc(f"{localpart}\\3a{DOMAIN}@rooms.xmpp.test", "Xeno", timeout=10)
        assert refused.value.condition == "item-not-found"
    assert _portal_of(hub, chat) == [(room_id,)]
    assert hub.bridge.query("SELECT network, remote_id FROM portal WHERE mxid = ?", room_id) == [
        ("reference", chat)
    ]
