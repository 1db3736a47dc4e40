"""The hub core end to end: real Synapse, the real bridge process, the reference network."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser

pytestmark = pytest.mark.e2e
_chats = itertools.count(1)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


async def _management_room(hub: Hub, user: MatrixUser) -> str:
    room_id = await user.create_room(invite=[hub.bot], is_direct=True)
    await user.wait_for(
        lambda e: e["sender"] == hub.bot and "Pontis bridge bot" in _body(e), room_id=room_id
    )
    return room_id


async def _portal(
    hub: Hub, user: MatrixUser, *, sender: str = "bob", name: str = "Bob Remote"
) -> tuple[str, str, str]:
    """A remote message in a new chat; returns (chat id, portal room id, Matrix event id)."""
    chat = f"chat{next(_chats)}"
    hub.remote.users[sender] = {"name": name}
    hub.remote.chats[chat] = {
        "name": f"Project {chat}",
        "topic": "Bridged",
        "matrix_users": [user.mxid],
    }
    await hub.remote.push(
        {
            "kind": "message",
            "chat": chat,
            "sender": sender,
            "id": f"{chat}-m1",
            "text": "Hello from the remote side",
        }
    )
    room_id = await user.wait_for_invite()
    await user.join(room_id)
    event = await user.wait_for(lambda e: _body(e) == "Hello from the remote side", room_id=room_id)
    return chat, room_id, event["event_id"]


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


async def test_remote_message_creates_portal_with_named_ghost(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice, sender="dora", name="Dora Remote")
    ghost = f"@reference_dora:{DOMAIN}"
    event = await alice.wait_for(
        lambda e: _body(e) == "Hello from the remote side", room_id=room_id
    )
    assert event["sender"] == ghost
    assert (await alice.get_profile(ghost))["displayname"] == "Dora Remote"
    bridge_state = await alice.get_state(room_id, "m.bridge", f"pontis/reference/{chat}")
    assert bridge_state["protocol"]["id"] == "reference"
    assert bridge_state["channel"]["id"] == chat
    assert (await alice.get_state(room_id, "m.room.name"))["name"] == f"Project {chat}"


async def test_matrix_reply_edit_reaction_redaction_reach_the_network(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, ghost_event = await _portal(hub, alice)
    remote = hub.remote

    reply_id = await alice.send_text(room_id, "A reply from Matrix", reply_to=ghost_event)
    sent = await remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == reply_id
    )
    assert sent.body["body"] == "A reply from Matrix"
    assert sent.body["reply_to"] == f"{chat}-m1"
    assert (
        sent.body["sender"] == alice.mxid
        and sent.body["sender_name"] == alice.mxid.split(":")[0][1:].capitalize()
    )

    await alice.edit(room_id, reply_id, "A corrected reply")
    edit = await remote.wait_action(lambda a: a.kind == "edit" and a.body["chat"] == chat)
    assert edit.body["body"] == "A corrected reply"
    assert edit.body["target"] == sent_id(remote, reply_id)

    reaction_id = await alice.react(room_id, ghost_event, "👍")
    react = await remote.wait_action(lambda a: a.kind == "react" and a.body["chat"] == chat)
    assert react.body == {"chat": chat, "target": f"{chat}-m1", "emoji": "👍", "sender": alice.mxid}

    await alice.redact(room_id, reaction_id)
    await remote.wait_action(
        lambda a: a.kind == "unreact" and a.body["chat"] == chat and a.body["emoji"] == "👍"
    )

    await alice.redact(room_id, reply_id)
    redact = await remote.wait_action(lambda a: a.kind == "redact" and a.body["chat"] == chat)
    assert redact.body["target"] == sent_id(remote, reply_id)


def sent_id(remote: Any, event_id: str) -> str:
    return str(remote._by_key[event_id])


async def test_remote_edit_reaction_redaction_reach_matrix(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, original = await _portal(hub, alice)
    ghost = f"@reference_bob:{DOMAIN}"

    await hub.remote.push(
        {
            "kind": "edit",
            "chat": chat,
            "sender": "bob",
            "target": f"{chat}-m1",
            "text": "Hello, edited",
        }
    )
    edit = await alice.wait_for(
        lambda e: e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace",
        room_id=room_id,
    )
    assert edit["sender"] == ghost
    assert edit["content"]["m.relates_to"]["event_id"] == original
    assert edit["content"]["m.new_content"]["body"] == "Hello, edited"

    await hub.remote.push(
        {"kind": "react", "chat": chat, "sender": "bob", "target": f"{chat}-m1", "emoji": "🎉"}
    )
    reaction = await alice.wait_for(lambda e: e["type"] == "m.reaction", room_id=room_id)
    assert reaction["sender"] == ghost
    assert reaction["content"]["m.relates_to"] == {
        "rel_type": "m.annotation",
        "event_id": original,
        "key": "🎉",
    }

    await hub.remote.push({"kind": "redact", "chat": chat, "sender": "bob", "target": f"{chat}-m1"})
    redaction = await alice.wait_for(lambda e: e["type"] == "m.room.redaction", room_id=room_id)
    assert redaction["sender"] == ghost
    assert original in (redaction.get("redacts"), redaction["content"].get("redacts"))


async def test_remote_reply_and_hostile_html(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, original = await _portal(hub, alice)
    html = '<b>bold</b><img src="https://tracker.example/p.png"><script>alert(1)</script><a href="javascript:x">x</a>'
    await hub.remote.push(
        {
            "kind": "message",
            "chat": chat,
            "sender": "bob",
            "id": f"{chat}-m2",
            "text": "bold",
            "html": html,
            "reply_to": f"{chat}-m1",
        }
    )
    event = await alice.wait_for(lambda e: _body(e) == "bold", room_id=room_id)
    assert event["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": original}}
    formatted = event["content"]["formatted_body"]
    assert "<b>bold</b>" in formatted
    assert (
        "tracker.example" not in formatted
        and "script" not in formatted
        and "javascript" not in formatted
    )


async def test_replayed_transaction_is_not_processed_twice(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    url = f"http://127.0.0.1:{hub.as_port}/_matrix/app/v1/transactions"
    headers = {"Authorization": f"Bearer {hub.hs_token}"}

    def txn(event_id: str, body: str) -> dict[str, Any]:
        return {
            "events": [
                {
                    "event_id": event_id,
                    "room_id": room_id,
                    "sender": alice.mxid,
                    "type": "m.room.message",
                    "origin_server_ts": 1,
                    "content": {"msgtype": "m.text", "body": body},
                }
            ]
        }

    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{url}/replay-{chat}", json=txn(f"$first-{chat}", "first"), headers=headers
        ) as resp:
            assert resp.status == 200
        # The same transaction again (the homeserver retrying it): nothing new.
        async with http.put(
            f"{url}/replay-{chat}", json=txn(f"$first-{chat}", "first"), headers=headers
        ) as resp:
            assert resp.status == 200
        # The same id with other events: Synapse numbers transactions anew after a restart, so
        # this is a new transaction, not a replay (it used to be dropped, losing messages).
        async with http.put(
            f"{url}/replay-{chat}", json=txn(f"$second-{chat}", "second"), headers=headers
        ) as resp:
            assert resp.status == 200
        async with http.put(
            f"{url}/after-{chat}", json=txn(f"$third-{chat}", "third"), headers=headers
        ) as resp:
            assert resp.status == 200
    await hub.remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == f"$third-{chat}"
    )
    keys = [
        a.body["idempotency_key"]
        for a in hub.remote.actions
        if a.kind == "send" and a.body["chat"] == chat
    ]
    assert keys == [f"$first-{chat}", f"$second-{chat}", f"$third-{chat}"]
    assert hub.remote.send_attempts[f"$first-{chat}"] == 1


@pytest.mark.parametrize(
    ("headers", "body", "status", "errcode"),
    [
        ({"Authorization": "Bearer wrong-token"}, b'{"events": []}', 403, "M_FORBIDDEN"),
        ({}, b'{"events": []}', 401, "M_UNAUTHORIZED"),
        (None, b'{"events": [', 400, "M_NOT_JSON"),
        (None, b'{"events": "nope"}', 400, "M_BAD_JSON"),
        (None, b"[]", 400, "M_BAD_JSON"),
        (None, b"[" * 100_000, 400, "M_NOT_JSON"),
    ],
)
async def test_bad_transactions_are_refused_and_store_nothing(
    hub: Hub, headers: dict[str, str] | None, body: bytes, status: int, errcode: str
) -> None:
    txn_id = f"bad-{status}-{errcode}-{len(body)}-{len(headers or {'x': 1})}"
    if headers is None:
        headers = {"Authorization": f"Bearer {hub.hs_token}"}
    url = f"http://127.0.0.1:{hub.as_port}/_matrix/app/v1/transactions/{txn_id}"
    async with aiohttp.ClientSession() as http, http.put(url, data=body, headers=headers) as resp:
        assert resp.status == status
        assert (await resp.json())["errcode"] == errcode
    assert hub.bridge.query("SELECT count(*) FROM as_transaction WHERE txn_id = ?", txn_id) == [
        (0,)
    ]
    assert hub.bridge.query("SELECT count(*) FROM inbox WHERE txn_id = ?", txn_id) == [(0,)]


async def test_crash_with_events_in_the_inbox_processes_each_exactly_once(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    hub.remote.paused = True  # the network is down: events stay in the inbox, retrying
    try:
        event_ids = [await alice.send_text(room_id, f"during outage {i}") for i in range(5)]
        await eventually(
            lambda: (
                {
                    e
                    for (e,) in hub.bridge.query(
                        "SELECT event_id FROM inbox WHERE room_id = ?", room_id
                    )
                }
                >= set(event_ids)
            ),
            "the events to reach the inbox",
        )
        hub.bridge.kill()
    finally:
        hub.remote.paused = False
    await hub.bridge.start(hub.as_port)
    for event_id in event_ids:
        await hub.remote.wait_action(
            lambda a, e=event_id: a.kind == "send" and a.body["idempotency_key"] == e, timeout=30
        )
    assert [hub.remote.send_attempts[e] for e in event_ids] == [1] * 5
    keys = [
        a.body["idempotency_key"]
        for a in hub.remote.actions
        if a.kind == "send" and a.body["chat"] == chat
    ]
    assert [k for k in keys if k in event_ids] == event_ids  # order kept
    await eventually(
        lambda: hub.bridge.query("SELECT count(*) FROM inbox WHERE room_id = ?", room_id) == [(0,)],
        "the inbox to drain",
    )


async def test_health_and_metrics(hub: Hub) -> None:
    user = await hub.user("metrics")
    await _management_room(hub, user)  # at least one transaction since any restart
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{hub.as_port}/_pontis/health") as resp:
            assert resp.status == 200
            health = await resp.json()
        async with http.get(f"http://127.0.0.1:{hub.metrics_port}/metrics") as resp:
            metrics = await resp.text()
    assert health["ready"] is True
    assert health["clients"] == {
        "reference/shared": True,
        "xmpp/shared": True,
        "email/shared": True,
        "teams/shared": True,
    }
    stored = re.search(
        r'^pontis_appservice_transactions_total\{outcome="stored"\} (\S+)$', metrics, re.M
    )
    assert stored is not None and float(stored.group(1)) >= 1
    assert re.search(
        r'^pontis_matrix_events_total\{.*type="m.room.member".*\} [1-9]', metrics, re.M
    )
    assert "pontis_inbox_depth" in metrics
    assert hub.hs_token not in metrics and hub.hs_token not in json.dumps(health)
    assert hub.hs_token not in hub.bridge.log_path.read_text()
    assert hub.graph.app["clientSecret"] not in hub.bridge.log_path.read_text()


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


async def test_refused_message_is_parked_and_the_sender_told(hub: Hub) -> None:
    alice = await hub.user("alice")
    _, room_id, _ = await _portal(hub, alice)
    event_id = await alice.send_text(room_id, "reject me")
    notice = await alice.wait_for(
        lambda e: e["sender"] == hub.bot and "not delivered" in _body(e), room_id=room_id
    )
    assert "message refused by policy" in _body(notice)
    assert notice["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": event_id}}
    parked = hub.bridge.query("SELECT error FROM dead_letter WHERE event_id = ?", event_id)
    assert len(parked) == 1 and "refused" in parked[0][0]
    assert hub.bridge.query("SELECT count(*) FROM inbox WHERE event_id = ?", event_id) == [(0,)]


async def test_ghost_messages_are_not_echoed_back(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    marker = await alice.send_text(room_id, "after the ghost spoke")
    await hub.remote.wait_action(lambda a: a.kind == "send" and a.body["idempotency_key"] == marker)
    sends = [
        a.body["idempotency_key"]
        for a in hub.remote.actions
        if a.kind == "send" and a.body["chat"] == chat
    ]
    assert sends == [marker]  # the ghost's own message never went back to the network


async def test_media_both_ways(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    await hub.remote.push(
        {
            "kind": "message",
            "chat": chat,
            "sender": "bob",
            "id": f"{chat}-img",
            "media": {
                "data": base64.b64encode(picture).decode(),
                "mimetype": "image/png",
                "filename": "plan.png",
            },
        }
    )
    event = await alice.wait_for(
        lambda e: e["content"].get("msgtype") == "m.image", room_id=room_id
    )
    assert event["content"]["body"] == "plan.png"
    assert await alice.download(event["content"]["url"]) == picture

    report = b"%PDF-1.4 quarterly report" * 100
    mxc = await alice.upload(report, "application/pdf", "report.pdf")
    sent = await alice.send_event(
        room_id,
        "m.room.message",
        {
            "msgtype": "m.file",
            "body": "report.pdf",
            "url": mxc,
            "info": {"mimetype": "application/pdf"},
        },
    )
    action = await hub.remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == sent
    )
    assert action.body["media"] == {
        "data": report,
        "mimetype": "application/pdf",
        "filename": "report.pdf",
    }


async def test_typing_and_read_receipts_both_ways(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, ghost_event = await _portal(hub, alice)
    ghost = f"@reference_bob:{DOMAIN}"

    await hub.remote.push({"kind": "typing", "chat": chat, "sender": "bob", "typing": True})
    await alice.wait_for_ephemeral(
        lambda e: e["type"] == "m.typing" and ghost in e["content"]["user_ids"], room_id=room_id
    )
    await alice.typing(room_id, True)
    await hub.remote.wait_action(
        lambda a: (
            a.kind == "typing" and a.body == {"chat": chat, "sender": alice.mxid, "typing": True}
        )
    )

    mine = await alice.send_text(room_id, "read this")
    await hub.remote.wait_action(lambda a: a.kind == "send" and a.body["idempotency_key"] == mine)
    await hub.remote.push(
        {"kind": "read", "chat": chat, "sender": "bob", "up_to": sent_id(hub.remote, mine)}
    )
    await alice.wait_for_ephemeral(
        lambda e: (
            e["type"] == "m.receipt" and ghost in e["content"].get(mine, {}).get("m.read", {})
        ),
        room_id=room_id,
    )
    await alice.read_receipt(room_id, ghost_event)
    await hub.remote.wait_action(
        lambda a: (
            a.kind == "read"
            and a.body == {"chat": chat, "sender": alice.mxid, "up_to": f"{chat}-m1"}
        )
    )


async def test_threads_reach_the_network_and_matrix(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, root = await _portal(hub, alice)
    in_thread = await alice.send_text(room_id, "in the thread", thread_root=root)
    action = await hub.remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == in_thread
    )
    assert action.body["thread_root"] == f"{chat}-m1" and action.body["reply_to"] is None
    await hub.remote.push(
        {
            "kind": "message",
            "chat": chat,
            "sender": "bob",
            "id": f"{chat}-t2",
            "text": "remote thread reply",
            "thread_root": f"{chat}-m1",
        }
    )
    event = await alice.wait_for(lambda e: _body(e) == "remote thread reply", room_id=room_id)
    relates = event["content"]["m.relates_to"]
    assert relates["rel_type"] == "m.thread" and relates["event_id"] == root


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


async def _metric(hub: Hub, name: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{hub.metrics_port}/metrics") as resp,
    ):
        found = re.search(rf"^{name} (\S+)$", await resp.text(), re.M)
    return float(found.group(1)) if found else 0.0


async def test_the_bridges_own_echoes_are_dropped_before_the_inbox(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    before = await _metric(hub, "pontis_echoes_dropped_total")
    for n in range(3):
        await hub.remote.push(
            {
                "kind": "message",
                "chat": chat,
                "sender": "bob",
                "id": f"{chat}-e{n}",
                "text": f"echo {n}",
            }
        )
    await alice.wait_for(lambda e: _body(e) == "echo 2", room_id=room_id)
    for _ in range(100):
        if await _metric(hub, "pontis_echoes_dropped_total") >= before + 3:
            break
        await asyncio.sleep(0.05)
    assert await _metric(hub, "pontis_echoes_dropped_total") >= before + 3
    # and they were never bridged back to the network
    assert not [a for a in hub.remote.actions if a.kind == "send" and a.body["chat"] == chat]
