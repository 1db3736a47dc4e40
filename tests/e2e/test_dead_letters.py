"""Dead letters end to end: real Synapse, the bridge process, the reference network.

A permanent refusal becomes a dead letter with a notice; once the cause is fixed the operator
retries it (``pontis dead-letters retry`` while the bridge runs, or ``retry`` in the management
room) and it is delivered; ``drop`` removes one. A transaction with a malformed event among good
ones is answered 200: the good ones are bridged, the bad one is a dead letter.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import ADMIN, DOMAIN, Hub
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.reference_portal import _body, _management_room, _portal

pytestmark = pytest.mark.e2e


async def cli(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    """``pontis -c CONFIG dead-letters …`` beside the running bridge."""
    result = await asyncio.to_thread(hub.bridge.cli, "dead-letters", *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def letter_for(hub: Hub, event_id: str) -> int:
    def parked() -> list[tuple[Any, ...]]:
        return hub.bridge.query("SELECT id FROM dead_letter WHERE event_id = ?", event_id)

    await eventually(lambda: bool(parked()), f"a dead letter for {event_id}")
    ((letter_id,),) = parked()
    return int(letter_id)


async def refused_message(hub: Hub, user: MatrixUser, room_id: str, body: str) -> int:
    """``body`` sent from Matrix and refused by the network for good: its dead letter's id."""
    hub.remote.refused.add(body)
    event_id = await user.send_text(room_id, body)
    await user.wait_for(
        lambda e: (
            e["sender"] == hub.bot and "not delivered" in _body(e) and _replies_to(e, event_id)
        ),
        room_id=room_id,
    )
    return await letter_for(hub, event_id)


def _replies_to(event: dict[str, Any], event_id: str) -> bool:
    relates = event.get("content", {}).get("m.relates_to", {})
    return bool(relates.get("m.in_reply_to", {}).get("event_id") == event_id)


def _sent(hub: Hub, body: str) -> list[str]:
    return [a.body["idempotency_key"] for a in hub.remote.actions
            if a.kind == "send" and a.body.get("body") == body]  # fmt: skip


async def test_a_refused_message_is_retried_from_the_command_line_and_dropped(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    body = f"held back by policy in {chat}"
    letter_id = await refused_message(hub, alice, room_id, body)
    ((event_id,),) = hub.bridge.query("SELECT event_id FROM dead_letter WHERE id = ?", letter_id)

    listing = await cli(hub, "list")
    assert listing.returncode == 0, listing.stderr
    (row,) = [x for x in listing.stdout.splitlines() if x.startswith(f"{letter_id}  ")]
    assert f"  Matrix → network  reference  {room_id}  " in row and "refused" in row
    shown = await cli(hub, "show", str(letter_id))
    assert shown.returncode == 0 and body in shown.stdout and event_id in shown.stdout

    hub.remote.refused.discard(body)  # the cause is fixed
    retried = await cli(hub, "retry", str(letter_id))
    assert retried.returncode == 0, retried.stderr
    assert "back in the inbox" in retried.stdout
    sent = await hub.remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == event_id
    )
    assert sent.body["body"] == body and sent.body["chat"] == chat
    assert hub.bridge.query("SELECT count(*) FROM dead_letter WHERE id = ?", letter_id) == [(0,)]
    await eventually(
        lambda: (
            hub.bridge.query("SELECT count(*) FROM inbox WHERE event_id = ?", event_id) == [(0,)]
        ),
        "the retried row to be finished",
    )

    dropped_body = f"never to be sent in {chat}"
    dropped = await refused_message(hub, alice, room_id, dropped_body)
    hub.remote.refused.discard(dropped_body)
    result = await cli(hub, "drop", str(dropped))
    assert result.returncode == 0 and result.stdout.strip() == f"Dropped dead letter {dropped}."
    assert hub.bridge.query("SELECT count(*) FROM dead_letter WHERE id = ?", dropped) == [(0,)]
    await asyncio.sleep(3)  # longer than the bridge takes to look at its tables
    assert _sent(hub, dropped_body) == []
    assert _sent(hub, body) == [event_id]


async def test_a_network_event_matrix_could_not_take_is_retried_once_fixed(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    stranger = f"stranger-{chat}"  # unknown to the network for now: its ghost cannot be made
    await hub.remote.push(
        {"kind": "message", "chat": chat, "sender": stranger, "id": f"{chat}-late",
         "text": "A message from a stranger"}
    )  # fmt: skip
    await alice.wait_for(
        lambda e: e["sender"] == hub.bot and "could not be bridged" in _body(e),
        room_id=room_id,
        timeout=60,
    )

    def parked() -> list[tuple[Any, ...]]:
        return hub.bridge.query(
            "SELECT id FROM dead_letter WHERE network = 'reference' AND portal_id = ?", chat
        )

    await eventually(lambda: bool(parked()), "the network event's dead letter")
    ((letter_id,),) = parked()
    listing = await cli(hub, "list")
    (row,) = [x for x in listing.stdout.splitlines() if x.startswith(f"{letter_id}  ")]
    assert f"  network → Matrix  reference  portal {chat} ({room_id})  " in row

    hub.remote.users[stranger] = {"name": "Stranger Remote"}  # the cause is fixed
    result = await cli(hub, "retry", str(letter_id))
    assert result.returncode == 0 and "back in the remote inbox" in result.stdout
    arrived = await alice.wait_for(
        lambda e: _body(e) == "A message from a stranger", room_id=room_id, timeout=30
    )
    assert arrived["sender"] == f"@reference_{stranger}:{DOMAIN}"
    await eventually(
        lambda: (
            hub.bridge.query("SELECT count(*) FROM remote_inbox WHERE portal_id = ?", chat)
            == [(0,)]
        ),
        "the remote inbox to be empty",
    )


async def test_dead_letters_in_the_management_room_are_for_admins(hub: Hub) -> None:
    admin = await hub.user(localpart=ADMIN)
    admin_room = await _management_room(hub, admin)
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    body = f"refused for now in {chat}"
    letter_id = await refused_message(hub, alice, room_id, body)
    ((event_id,),) = hub.bridge.query("SELECT event_id FROM dead_letter WHERE id = ?", letter_id)

    alice_room = await _management_room(hub, alice)
    await alice.send_text(alice_room, "dead-letters")
    refusal = await alice.wait_for(
        lambda e: e["sender"] == hub.bot and "Only bridge admins" in _body(e), room_id=alice_room
    )
    assert "`admin`" in _body(refusal) and str(letter_id) not in _body(refusal)

    async def ask(command: str, expect: str) -> str:
        mark = admin.mark()
        await admin.send_text(admin_room, command)
        reply = await admin.wait_for(
            lambda e: e["sender"] == hub.bot and expect in _body(e), room_id=admin_room, after=mark
        )
        return _body(reply)

    listing = await ask("dead-letters", "Dead letters")
    assert f"{letter_id}  Matrix → network  reference  {room_id}" in listing
    hub.remote.refused.discard(body)
    await ask(f"retry {letter_id}", "back in the inbox")
    await hub.remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == event_id
    )
    other = await refused_message(hub, alice, room_id, f"dropped in {chat}")
    await ask(f"drop {other}", f"Dropped dead letter {other}.")
    assert hub.bridge.query("SELECT count(*) FROM dead_letter WHERE id IN (?, ?)", letter_id,
                            other) == [(0,)]  # fmt: skip


async def test_a_malformed_event_among_good_ones_is_a_dead_letter_and_the_rest_bridged(
    hub: Hub,
) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)

    def message(event_id: str, body: str) -> dict[str, Any]:
        return {"event_id": event_id, "room_id": room_id, "sender": alice.mxid,
                "type": "m.room.message", "origin_server_ts": 1,
                "content": {"msgtype": "m.text", "body": body}}  # fmt: skip

    txn_id = f"poison-{chat}"
    body = {
        "events": [
            message(f"$good1-{chat}", "first good"),
            {"room_id": room_id, "type": "m.room.message", "content": {"body": "no ids"}},
            "not an event at all",
            message(f"$good2-{chat}", "second good"),
        ]
    }
    url = f"http://127.0.0.1:{hub.as_port}/_matrix/app/v1/transactions/{txn_id}"
    headers = {"Authorization": f"Bearer {hub.hs_token}"}
    async with aiohttp.ClientSession() as http, http.put(url, json=body, headers=headers) as resp:
        assert resp.status == 200 and await resp.json() == {}
    for key in (f"$good1-{chat}", f"$good2-{chat}"):
        await hub.remote.wait_action(lambda a, k=key: a.kind == "send"  # type: ignore[misc]
                                     and a.body["idempotency_key"] == k)  # fmt: skip
    letters = hub.bridge.query(
        "SELECT kind, room_id, error FROM dead_letter WHERE error LIKE ? ORDER BY id",
        f"%(transaction {txn_id})",
    )
    assert [(kind, room) for kind, room, _ in letters] == [("pdu", room_id), ("pdu", None)]
    assert "events[1].event_id must be a string" in letters[0][2]
    assert "events[2] must be an object" in letters[1][2]
    listing = await cli(hub, "list")
    assert sum(f"(transaction {txn_id})" in x for x in listing.stdout.splitlines()) == 2

    # The stream goes on: what Synapse sends next is bridged.
    after = await alice.send_text(room_id, "after the poison")
    await hub.remote.wait_action(lambda a: a.kind == "send" and a.body["idempotency_key"] == after)
