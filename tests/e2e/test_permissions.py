"""Permission levels against real Synapse and the bridge process: a member without the power
level cannot bridge a room, and a relay-level user's message is refused while relay mode is off
(the hub's config leaves ``bridge.relay.enabled`` off), and cannot add mail recipients. Unit tests: tests/test_permissions.py,
tests/test_portal_commands.py."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_email import PASSWORD, bridged_room, ghost_of, person

pytestmark = pytest.mark.e2e
_names = itertools.count(1)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def _chat(hub: Hub) -> str:
    chat = f"perm{next(_names)}"
    hub.remote.chats[chat] = {"name": f"Chat {chat}", "topic": "Permissions"}
    return chat


async def _room_with_bot(hub: Hub, owner: MatrixUser, *members: MatrixUser) -> str:
    room_id = await owner.create_room(invite=[hub.bot, *(m.mxid for m in members)])
    await owner.wait_for(lambda e: e.get("state_key") == hub.bot and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    for member in members:
        await member.join(room_id)
    return room_id


async def _say(user: MatrixUser, room_id: str, text: str, answer: str) -> str:
    await user.send_text(room_id, text)
    reply = await user.wait_for(lambda e: answer in _body(e), room_id=room_id)
    return _body(reply)


async def test_bridge_by_a_member_without_the_power_level_is_refused(hub: Hub) -> None:
    alice, bob = await hub.user("alice"), await hub.user("bob")  # both at the user level
    chat = _chat(hub)
    room_id = await _room_with_bot(hub, alice, bob)  # Alice 100, Bob 0
    reply = await _say(bob, room_id, f"!pontis bridge reference {chat}", "power level")
    assert "`bridge`" in reply
    assert hub.bridge.query("SELECT 1 FROM portal WHERE mxid = ?", room_id) == []
    assert hub.bridge.query("SELECT 1 FROM portal WHERE remote_id = ?", chat) == []
    state = await alice.get_full_state(room_id)
    assert not [e for e in state if e["type"] in ("m.bridge", "uk.half-shot.bridge")]
    # The room's admin may.
    await _say(alice, room_id, f"!pontis bridge reference {chat}", "now bridged")
    assert hub.bridge.query("SELECT mxid FROM portal WHERE remote_id = ?", chat) == [(room_id,)]


async def test_a_relay_level_message_is_refused_while_relay_is_off(hub: Hub) -> None:
    alice, outsider = await hub.user("alice"), await hub.user(localpart="outsider")
    chat = _chat(hub)
    room_id = await _room_with_bot(hub, alice, outsider)
    await _say(alice, room_id, f"!pontis bridge reference {chat}", "now bridged")
    secret = f"outsider says {next(_names)}"
    reply = await _say(outsider, room_id, secret, "not delivered")
    assert reply.startswith(f"{outsider.mxid}: your message was not delivered.")
    assert "bridge.relay.enabled" in reply
    # Alice's message after it reaches the network; the outsider's never did.
    marker = f"alice says {next(_names)}"
    await alice.send_text(room_id, marker)
    await hub.remote.wait_action(lambda a: a.kind == "send" and a.body.get("body") == marker)
    assert not [a for a in hub.remote.actions if secret in str(a.body)]


async def test_a_relay_level_user_cannot_add_mail_recipients(hub: Hub) -> None:
    ivan, mallory = person(hub, "ivan"), person(hub, "mallory")
    alice, outsider = await hub.user("alice"), await hub.user(localpart="outsider")
    room_id = await bridged_room(hub, alice, f"minutes{next(_names)}")
    await alice.invite(room_id, ghost_of(ivan))
    await alice.wait_for(lambda e: e.get("state_key") == ghost_of(ivan) and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    await alice.invite(room_id, outsider.mxid)
    await outsider.join(room_id)
    levels = await alice.get_state(room_id, "m.room.power_levels")
    levels.setdefault("users", {})[outsider.mxid] = 50  # the room lets them invite
    await alice.send_state(room_id, "m.room.power_levels", levels)

    await outsider.invite(room_id, ghost_of(mallory))
    refusal = await outsider.wait_for(lambda e: e.get("state_key") == ghost_of(mallory) and e["content"].get("membership") == "leave", room_id=room_id)  # fmt: skip
    assert "`user` level" in refusal["content"]["reason"]
    await alice.send_text(room_id, "Minutes of Thursday")
    received = await hub.mail.wait_for_mail(ivan, PASSWORD)
    assert [a.addr_spec for a in received["To"].addresses] == [ivan]
    assert not await hub.mail.all_mail(mallory, PASSWORD)
