"""A Teams user reaches a Matrix user from Teams alone (bridge.teams.service_chat), against a
real Synapse, the bridge as a process and the Graph emulator.

The Teams person has no Matrix account and nobody on Matrix starts anything: they open a chat
with the relay account ("Pontis Relay"), write a Matrix ID, and talk with that person in the
group chat the bridge opens; the Matrix user's reply arrives in that Teams chat. Each test adds
its own Teams person, so their service chat is new. The test hub has one homeserver: its users
stand for the federated ones (the federation policy decides the same way for any server).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bridge.teams.from_matrix import EXTERNAL
from tests.e2e.conftest import DOMAIN, OTHER_MATRIX_SERVER, Hub
from tests.e2e.graph import RELAY_UPN, SERVICE_CONTACT
from tests.e2e.hub import eventually
from tests.e2e.test_teams import _body, _teams_message

pytestmark = pytest.mark.e2e
_people = itertools.count(1)


async def _teams_person(hub: Hub) -> tuple[str, str]:
    """A new Teams person of the tenant and their one-on-one chat with the relay account,
    once the bridge is told of the relay's chats (its subscription is in place)."""
    relay = hub.graph.services.state.find_user(RELAY_UPN)
    assert relay is not None
    await eventually(
        lambda: any(relay.id in s.resource for s in hub.graph.services.state.live_subscriptions()),
        "the relay account's subscription",
        timeout=30,
    )
    n = next(_people)
    person = await hub.graph.control(
        "POST",
        f"/tenants/{hub.graph.tenant_id}/users",
        {"displayName": f"Lidia Holloway{n}", "password": "lidia-pw"},
    )
    chat = await hub.graph.control(
        "POST", "/chats", {"chatType": "oneOnOne", "members": [person["id"], RELAY_UPN]}
    )
    return str(person["id"]), str(chat["id"])


async def _write(hub: Hub, person: str, chat: str, text: str) -> str:
    message = await hub.graph.control(
        "POST", f"/chats/{chat}/messages", {"from": person, "content": text}
    )
    return str(message["id"])


def _from_relay(message: dict[str, Any]) -> bool:
    return bool(message["from"] and message["from"]["user"]["displayName"] == "Pontis Relay")


def _group_chats_of(hub: Hub, person: str) -> list[Any]:
    return [
        c
        for c in hub.graph.services.state.chats.values()
        if c.chat_type == "group" and person in c.members
    ]


async def test_a_teams_user_reaches_a_matrix_user_from_teams_alone(hub: Hub) -> None:
    anna = await hub.user("anna")
    person, service = await _teams_person(hub)
    await _write(hub, person, service, f"<p>chat with {anna.mxid}</p>")

    # Teams: the relay answers in the service chat, and a group chat names Anna's Matrix ID.
    answer = await _teams_message(hub, service, _from_relay, "the service's answer")
    assert "I opened a new chat" in answer["body"]["content"]
    assert anna.mxid in answer["body"]["content"]
    [group] = _group_chats_of(hub, person)
    assert anna.mxid in group.topic

    # Matrix: Anna is invited to a direct chat that says who reached her from Teams.
    room_id = await anna.wait_for_invite(timeout=30)
    await anna.join(room_id)
    notice = await anna.wait_for(
        lambda e: "started this chat from Microsoft Teams" in _body(e), room_id=room_id
    )
    ghost = f"@teams_{person.lower()}:{DOMAIN}"
    assert notice["sender"] == ghost
    assert "Lidia Holloway" in _body(notice) and "(Contoso)" in _body(notice)

    # Both ways: the Teams person writes in the group chat, Anna answers from Matrix.
    await _write(hub, person, group.id, "<p>Hello Anna, from Teams</p>")
    hello = await anna.wait_for(
        lambda e: _body(e) == "Hello Anna, from Teams", room_id=room_id, timeout=30
    )
    assert hello["sender"] == ghost
    await anna.send_text(room_id, "Hi Lidia, from Matrix")
    reply = await _teams_message(
        hub, group.id, lambda m: "Hi Lidia, from Matrix" in m["body"]["content"], "Anna's reply"
    )
    assert _from_relay(reply)
    assert f"<b>{EXTERNAL}</b> · <b>{anna.mxid}</b>" in reply["body"]["content"]

    # The service chat itself never became a Matrix room.
    rows = hub.bridge.query("SELECT mxid FROM portal WHERE remote_id = ?", service)
    assert [r for r in rows if r[0]] == []

    # From Matrix, Anna adds a colleague of the Teams person: Megan joins the Teams chat.
    megan = hub.graph.user("megan")["id"]
    megan_ghost = f"@teams_{megan.lower()}:{DOMAIN}"
    await anna.invite(room_id, megan_ghost)
    await anna.wait_for(
        lambda e: e["type"] == "m.room.member" and e["state_key"] == megan_ghost
        and e["content"]["membership"] == "join",
        room_id=room_id,
    )  # fmt: skip
    assert megan in hub.graph.services.state.chats[group.id].members
    await _write(hub, megan, group.id, "<p>Hello from Megan</p>")
    from_megan = await anna.wait_for(lambda e: _body(e) == "Hello from Megan", room_id=room_id)
    assert from_megan["sender"] == megan_ghost


async def test_a_refused_server_is_explained_in_teams_and_nothing_is_opened(hub: Hub) -> None:
    person, service = await _teams_person(hub)
    await _write(hub, person, service, f"<p>@eve:{OTHER_MATRIX_SERVER}</p>")
    answer = await _teams_message(hub, service, _from_relay, "the refusal")
    text = answer["body"]["content"]
    assert OTHER_MATRIX_SERVER in text and SERVICE_CONTACT in text
    assert _group_chats_of(hub, person) == []


async def test_a_nonexistent_matrix_user_is_explained(hub: Hub) -> None:
    person, service = await _teams_person(hub)
    await _write(hub, person, service, f"<p>@nobody-here:{DOMAIN}</p>")
    answer = await _teams_message(hub, service, _from_relay, "the answer")
    assert "could not find the Matrix user" in answer["body"]["content"]
    assert _group_chats_of(hub, person) == []


async def test_a_request_written_while_the_bridge_is_down_is_answered_after(hub: Hub) -> None:
    anna = await hub.user("anna")
    person, service = await _teams_person(hub)
    hub.bridge.stop()
    try:
        msg = await _write(hub, person, service, f"<p>{anna.mxid}</p>")

        def dropped() -> bool:
            sent = [d for d in hub.graph.services.notifier.deliveries if msg in str(d.payload)]
            return bool(sent) and all(d.state == "failed" for d in sent)

        # Graph's notification finds nobody and is dropped after its retries.
        await eventually(dropped, "the notification to be dropped", timeout=30)
    finally:
        await hub.bridge.start(hub.as_port)
    answer = await _teams_message(hub, service, _from_relay, "the late answer")
    assert "I opened a new chat" in answer["body"]["content"]
    assert len(_group_chats_of(hub, person)) == 1
    room_id = await anna.wait_for_invite(timeout=30)
    await anna.join(room_id)
