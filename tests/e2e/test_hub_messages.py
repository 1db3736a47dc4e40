"""The hub end to end, messages both ways through a portal: replies, edits, reactions,
redactions, HTML, media, typing, receipts, threads (real Synapse, the real bridge, the
reference network)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.reference_portal import _body, _portal

pytestmark = pytest.mark.e2e


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
