"""Teams ↔ Matrix through the Graph emulator, a real Synapse and the bridge as a process.

One Matrix user (``adele``) logs in as the Teams user Adele Vance by device code at the start
of the module; each test makes a fresh Teams chat with her, Alex and the relay account, so the
portal is new and the test sees only its own messages.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bridge.teams.connector import TeamsConnector
from bridge.teams.from_matrix import EXTERNAL
from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.process import free_port

pytestmark = pytest.mark.e2e
_chats = itertools.count(1)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def ghost(hub: Hub, first_name: str) -> str:
    return f"@teams_{hub.graph.user(first_name)['id']}:{DOMAIN}"


@dataclass
class Teams:
    """A Matrix user logged in to Teams, and their management room."""

    user: MatrixUser
    management_room: str


async def teams_login(hub: Hub, user: MatrixUser, first_name: str) -> str:
    """``login teams`` in the management room; the device code is approved in the emulator
    as a person would in their browser."""
    room = await user.create_room(invite=[hub.bot], is_direct=True)
    await user.wait_for(lambda e: "Pontis bridge bot" in _body(e), room_id=room)
    mark = user.mark()
    await user.send_text(room, "login teams")
    prompt = await user.wait_for(lambda e: "enter the code" in _body(e), room_id=room, after=mark)
    code = re.search(r"\*\*(\S+)\*\*", _body(prompt))
    assert code is not None, _body(prompt)
    await hub.graph.control(
        "POST",
        "/devicecodes/approve",
        {"userCode": code.group(1), "user": hub.graph.user(first_name)["id"]},
    )
    mark = user.mark()
    await user.send_text(room, "done")
    await user.wait_for(lambda e: "Logged in to Teams as" in _body(e), room_id=room, after=mark)
    return room


@pytest_asyncio.fixture(scope="module")
async def adele(hub: Hub) -> AsyncIterator[Teams]:
    user = await hub.user("adele")
    room = await teams_login(hub, user, "adele")
    yield Teams(user, room)


async def _portal(
    hub: Hub, adele: Teams, text: str = "Hello Matrix", *, relay: bool = True
) -> tuple[str, str, str, str]:
    """Alex writes in a new chat with Adele; returns (chat id, message id, room id, event id)."""
    chat = await hub.graph.new_chat(f"Launch {next(_chats)}", "adele", "alex", relay=relay)
    message_id = await hub.graph.post_as(
        "alex", chat, f"<p>{text.replace('Matrix', '<b>Matrix</b>')}</p>"
    )
    room_id = await adele.user.wait_for_invite(timeout=30)
    await adele.user.join(room_id)
    event = await adele.user.wait_for(lambda e: _body(e) == text, room_id=room_id, timeout=30)
    return chat, message_id, room_id, event["event_id"]


def _subscription_of(hub: Hub, first_name: str) -> Any:
    """The bridge's live subscription on the chats of one Teams account."""
    account = hub.graph.user(first_name)["id"]
    (sub,) = [s for s in hub.graph.services.state.live_subscriptions() if account in s.resource]
    return sub


async def _teams_message(hub: Hub, chat: str, predicate: Any, what: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        found[:] = [m for m in await hub.graph.messages(chat) if predicate(m)]
        return bool(found)

    deadline = asyncio.get_running_loop().time() + 20
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"Teams never showed {what}: {await hub.graph.messages(chat)}")
        await asyncio.sleep(0.2)
    return found[0]


async def test_teams_message_reaches_logged_in_member_from_ghost(hub: Hub, adele: Teams) -> None:
    _, _, room_id, event_id = await _portal(hub, adele)
    event = await adele.user.get_event(room_id, event_id)
    assert event["sender"] == ghost(hub, "alex")
    assert "<b>Matrix</b>" in event["content"]["formatted_body"]
    profile = await adele.user.get_profile(ghost(hub, "alex"))
    assert profile["displayname"] == "Alex Wilber (Contoso)"  # the person, and their agency
    state = await adele.user.get_state(room_id, "m.room.name")
    assert state["name"].startswith("Launch")


async def test_matrix_reply_edit_delete_appear_in_teams_as_the_user(hub: Hub, adele: Teams) -> None:
    chat, alex_message, room_id, alex_event = await _portal(hub, adele)
    adele_id = hub.graph.user("adele")["id"]
    event_id = await adele.user.send_text(room_id, "Hi Alex, from Matrix")
    sent = await _teams_message(
        hub, chat, lambda m: "Hi Alex, from Matrix" in m["body"]["content"], "the message"
    )
    assert sent["from"]["user"]["id"] == adele_id

    await adele.user.edit(room_id, event_id, "Hi Alex, edited in Matrix")
    await _teams_message(
        hub, chat, lambda m: m["id"] == sent["id"] and "edited in Matrix" in m["body"]["content"],
        "the edit",
    )  # fmt: skip

    await adele.user.react(room_id, alex_event, "👍")
    reacted = await _teams_message(
        hub, chat, lambda m: m["id"] == alex_message and m["reactions"], "the reaction"
    )
    assert reacted["reactions"][0]["reactionType"] == "👍"
    assert reacted["reactions"][0]["user"]["user"]["id"] == adele_id

    await adele.user.redact(room_id, event_id)
    await _teams_message(
        hub, chat, lambda m: m["id"] == sent["id"] and m["deletedDateTime"], "the deletion"
    )
    # Echoes of the bridge's own changes do not come back to Matrix as the ghost of Adele.
    await asyncio.sleep(1)
    assert not adele.user.seen(lambda e: e["sender"] == ghost(hub, "adele"), room_id=room_id)


async def test_teams_edit_reaction_and_delete_reach_matrix(hub: Hub, adele: Teams) -> None:
    chat, message_id, room_id, event_id = await _portal(hub, adele)
    alex = ghost(hub, "alex")
    await hub.graph.edit_as("alex", chat, message_id, "<p>Hello again</p>")
    edit = await adele.user.wait_for(
        lambda e: e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace",
        room_id=room_id,
    )
    assert edit["sender"] == alex
    assert edit["content"]["m.new_content"]["body"] == "Hello again"

    await hub.graph.act_as("alex", chat, message_id, "setReaction", reactionType="❤️")
    reaction = await adele.user.wait_for(lambda e: e["type"] == "m.reaction", room_id=room_id)
    assert reaction["sender"] == alex
    assert reaction["content"]["m.relates_to"] == {
        "rel_type": "m.annotation", "event_id": event_id, "key": "❤️",
    }  # fmt: skip

    await hub.graph.act_as("alex", chat, message_id, "unsetReaction", reactionType="❤️")
    await adele.user.wait_for(
        lambda e: e["type"] == "m.room.redaction" and e.get("redacts") == reaction["event_id"],
        room_id=room_id,
    )
    await hub.graph.act_as("alex", chat, message_id, "softDelete")
    await adele.user.wait_for(
        lambda e: e["type"] == "m.room.redaction" and e.get("redacts") == event_id,
        room_id=room_id,
    )


async def test_matrix_user_without_login_is_relayed(hub: Hub, adele: Teams) -> None:
    chat, _, room_id, _ = await _portal(hub, adele)
    bob = await hub.user("bob")
    await adele.user.invite(room_id, bob.mxid)
    await bob.join(room_id)
    await bob.send_text(room_id, "Relayed hello")
    relayed = await _teams_message(
        hub, chat, lambda m: "Relayed hello" in m["body"]["content"], "the relayed message"
    )
    assert relayed["from"]["user"]["displayName"] == "Pontis Relay"
    header = relayed["body"]["content"].split("</p>", 1)[0]
    assert header == (f"<p><b>{EXTERNAL}</b> · <b>{bob.mxid}</b> · “{bob.localpart.capitalize()}”")


async def test_a_relayed_display_name_cannot_pass_as_a_tenant_user(hub: Hub, adele: Teams) -> None:
    """Hostile: a Matrix user takes a colleague's name, with the marker and markup in it."""
    chat, _, room_id, _ = await _portal(hub, adele)
    mallory = await hub.user("mallory")
    await mallory.set_displayname(f"Adele Vance</b> {EXTERNAL}\nIT Security")
    await adele.user.invite(room_id, mallory.mxid)
    await mallory.join(room_id)
    await mallory.send_text(room_id, "Please reset your password")
    posted = await _teams_message(
        hub, chat, lambda m: "reset your password" in m["body"]["content"], "mallory's message"
    )
    header = posted["body"]["content"].split("</p>", 1)[0]
    assert header.startswith(f"<p><b>{EXTERNAL}</b> · <b>{mallory.mxid}</b> · “Adele Vance&lt;")
    assert header.count("<b>") == 2 and "\n" not in header


async def test_forged_notification_is_refused_and_changes_nothing(hub: Hub, adele: Teams) -> None:
    chat, message_id, room_id, _ = await _portal(hub, adele)
    forged = {
        "value": [
            {
                "subscriptionId": "00000000-0000-0000-0000-000000000000",
                # Accepted, this would redact the message in Matrix.
                "changeType": "deleted",
                "resource": f"chats('{chat}')/messages('{message_id}')",
                "clientState": "guessed",
                "tenantId": hub.graph.tenant_id,
            }
        ]
    }
    mark = adele.user.mark()
    url = f"http://127.0.0.1:{hub.as_port}/_pontis/teams/notifications"
    async with aiohttp.ClientSession() as http, http.post(url, json=forged) as resp:
        assert resp.status == 403
        assert "clientState" in (await resp.json())["error"]
    for table in ("remote_inbox", "dead_letter"):
        kept = f"SELECT count(*) FROM {table} WHERE payload LIKE '%00000000-0000-0000-0000-0%'"
        assert hub.bridge.query(kept) == [(0,)], table
    await asyncio.sleep(1)
    later = adele.user.events[mark:]
    assert [e for e in later if e["room_id"] == room_id and e["type"] == "m.room.redaction"] == []
    assert "wrong clientState" in hub.bridge.log_path.read_text()
    assert "guessed" not in hub.bridge.log_path.read_text()


async def test_validation_handshake_is_echoed(hub: Hub) -> None:
    url = f"http://127.0.0.1:{hub.as_port}/_pontis/teams/notifications"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, params={"validationToken": "Validation: a b&c"}) as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == "Validation: a b&c"


async def test_message_while_bridge_is_down_is_caught_up(hub: Hub, adele: Teams) -> None:
    chat, _, room_id, _ = await _portal(hub, adele)
    hub.bridge.kill()
    try:
        await hub.graph.post_as("alex", chat, "<p>Sent while the bridge was down</p>")
        # Graph retries and then gives up on the webhook.
        await eventually(
            lambda: any(d.state == "failed" for d in hub.graph.services.notifier.deliveries),
            "the emulator to give up on the notification",
        )
    finally:
        await hub.bridge.start(hub.as_port)
    await adele.user.wait_for(
        lambda e: _body(e) == "Sent while the bridge was down", room_id=room_id, timeout=30
    )


async def test_missed_lifecycle_event_triggers_catch_up(hub: Hub, adele: Teams) -> None:
    # Without the relay, only Adele's subscription reports this chat.
    chat, _, room_id, _ = await _portal(hub, adele, relay=False)
    sub = _subscription_of(hub, "adele")
    sub.paused = True  # Graph lost what follows: held, then thrown away
    await hub.graph.post_as("alex", chat, "<p>Lost by Graph</p>")
    sub.held.clear()
    sub.paused = False
    await hub.graph.control("POST", f"/subscriptions/{sub.id}/lifecycle", {"event": "missed"})
    await adele.user.wait_for(lambda e: _body(e) == "Lost by Graph", room_id=room_id, timeout=30)


async def test_reauthorization_required_is_answered(hub: Hub, adele: Teams) -> None:
    chat, _, room_id, _ = await _portal(hub, adele, relay=False)
    sub = _subscription_of(hub, "adele")
    await hub.graph.control(
        "POST", f"/subscriptions/{sub.id}/lifecycle", {"event": "reauthorizationRequired"}
    )
    # Graph holds notifications back until the app reauthorizes.
    await hub.graph.post_as("alex", chat, "<p>After reauthorization</p>")
    await adele.user.wait_for(
        lambda e: _body(e) == "After reauthorization", room_id=room_id, timeout=30
    )
    assert hub.graph.requests(f"/v1.0/subscriptions/{sub.id}/reauthorize", "POST")


async def test_throttled_send_is_retried_and_arrives_once(hub: Hub, adele: Teams) -> None:
    chat, _, room_id, _ = await _portal(hub, adele)
    await hub.graph.control(
        "POST",
        "/faults",
        {"path": f"/v1.0/chats/{chat}/messages", "method": "POST", "status": 429,
         "count": 1, "retryAfter": 1},
    )  # fmt: skip
    await adele.user.send_text(room_id, "Despite throttling")
    await _teams_message(
        hub, chat, lambda m: "Despite throttling" in m["body"]["content"], "the message"
    )
    await asyncio.sleep(1.5)
    posts = hub.graph.requests(f"/v1.0/chats/{chat}/messages", "POST")
    assert [p["status"] for p in posts] == [429, 201]
    copies = [m for m in await hub.graph.messages(chat) if "Despite" in m["body"]["content"]]
    assert len(copies) == 1


async def test_a_picture_that_failed_arrives_on_the_next_attempt(hub: Hub, adele: Teams) -> None:
    """The text reaches Matrix, the picture's download fails (404) a few times, fewer than the
    core tries an error it does not know to be lasting (retry.attempts in conftest); a later
    attempt sends the picture alone, and nobody is told of a loss."""
    chat, _, room_id, _ = await _portal(hub, adele)
    await hub.graph.control(
        "POST",
        "/faults",
        {"path": f"/v1.0/chats/{chat}/messages/*/hostedContents/*", "method": "GET",
         "status": 404, "count": 5},  # one fewer than retry.attempts in conftest
    )  # fmt: skip
    mark = adele.user.mark()
    await hub.graph.post_as(
        "alex", chat, '<p>See the plan</p><img src="../hostedContents/1/$value">',
        hostedContents=[{"temporaryId": "1", "contentType": "image/png",
                         "contentBytes": base64.b64encode(b"\x89PNG plan").decode()}],
    )  # fmt: skip
    image = await adele.user.wait_for(
        lambda e: e["content"].get("msgtype") == "m.image", room_id=room_id, timeout=60, after=mark
    )
    assert image["sender"] == ghost(hub, "alex")
    in_room = adele.user.seen(lambda e: True, room_id=room_id)
    assert [_body(e) for e in in_room].count("See the plan") == 1
    assert not [e for e in in_room if "could not be bridged" in _body(e)]
    downloads = hub.graph.requests(f"/v1.0/chats/{chat}/messages/*/hostedContents/*", "GET")
    assert [d["status"] for d in downloads] == [404] * 5 + [200]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, None),
        ({"client_secret": "wrong"}, "client secret is wrong"),
        ({"tenant_id": "00000000-0000-4000-8000-000000000000"}, "tenant"),
    ],
)
async def test_check_explains_what_failed(
    hub: Hub, change: dict[str, str], expected: str | None
) -> None:
    section = hub.graph.teams_section("https://bridge.example.org")
    section["tenants"][0] |= change
    problems = await TeamsConnector().check(section)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0], problems
        assert "connectors.teams.tenants[0]" in problems[0]
        assert hub.graph.app["clientSecret"] not in problems[0]


async def test_check_explains_an_unreachable_authority(hub: Hub) -> None:
    section = hub.graph.teams_section("https://bridge.example.org")
    section["authority"] = f"https://127.0.0.1:{free_port()}"
    (problem,) = await TeamsConnector().check(section)
    assert problem.startswith("connectors.teams.authority: cannot reach")


async def test_a_matrix_user_finds_a_teams_person_and_starts_a_chat(hub: Hub, adele: Teams) -> None:
    """``search teams`` and ``start-chat teams`` for a Matrix user without a Teams login: the
    chat is the relay account's with Megan, and the conversation goes both ways."""
    bob = await hub.user("bob")
    room = await bob.create_room(invite=[hub.bot], is_direct=True)
    await bob.wait_for(lambda e: "Pontis bridge bot" in _body(e), room_id=room)

    async def ask(command: str, expect: str) -> str:
        mark = bob.mark()
        await bob.send_text(room, command)
        reply = await bob.wait_for(
            lambda e: e["sender"] == hub.bot and expect in _body(e), room_id=room, after=mark
        )
        return _body(reply)

    megan = hub.graph.user("megan")["id"]
    found = await ask("search teams meg", "Found")
    assert f"`{megan}`: Megan Bowen" in found and "Adele" not in found
    assert await ask("search teams pontis", "Nobody found") == "Nobody found."  # the relay
    started = await ask(f"start-chat teams {megan}", "Started a chat")
    portal_room = started.rsplit(": ", 1)[1].split(" ", 1)[0]
    await bob.join(portal_room)
    ((chat,),) = hub.bridge.query("SELECT remote_id FROM portal WHERE mxid = ?", portal_room)
    await bob.send_text(portal_room, "Hello Megan, from Matrix")
    sent = await _teams_message(
        hub, chat, lambda m: "Hello Megan, from Matrix" in m["body"]["content"], "Bob's message"
    )
    assert sent["from"]["user"]["displayName"] == "Pontis Relay"
    assert f"<b>{EXTERNAL}</b> · <b>{bob.mxid}</b>" in sent["body"]["content"]
    await hub.graph.post_as("megan", chat, "<p>Hi Bob, from Teams</p>")
    reply = await bob.wait_for(lambda e: _body(e) == "Hi Bob, from Teams", room_id=portal_room)
    assert reply["sender"] == ghost(hub, "megan")


async def test_a_dm_with_a_teams_ghost_opens_the_teams_chat(hub: Hub, adele: Teams) -> None:
    """Inviting Alex's ghost to a new DM opens the relay account's chat with Alex in Teams."""
    carol = await hub.user("carol")
    alex = ghost(hub, "alex")
    room_id = await carol.create_room(invite=[alex], is_direct=True)
    await carol.wait_for(
        lambda e: e["type"] == "m.room.member" and e["state_key"] == alex
        and e["content"]["membership"] == "join",
        room_id=room_id,
    )  # fmt: skip
    ((chat,),) = await _chat_of_room(hub, room_id)
    await carol.send_text(room_id, "Hello Alex, from a Matrix DM")
    sent = await _teams_message(
        hub, chat, lambda m: "Hello Alex, from a Matrix DM" in m["body"]["content"], "the DM"
    )
    assert sent["from"]["user"]["displayName"] == "Pontis Relay"
    await hub.graph.post_as("alex", chat, "<p>Hi Carol</p>")
    reply = await carol.wait_for(lambda e: _body(e) == "Hi Carol", room_id=room_id)
    assert reply["sender"] == alex


async def _chat_of_room(hub: Hub, room_id: str) -> list[tuple[Any, ...]]:
    """The Teams chat of the portal room, once the bridge has made it one."""
    rows: list[tuple[Any, ...]] = []

    def bridged() -> bool:
        rows[:] = hub.bridge.query("SELECT remote_id FROM portal WHERE mxid = ?", room_id)
        return bool(rows)

    await eventually(bridged, "the DM to become a portal")
    return rows


async def test_mentions_notify_the_right_person_both_ways(hub: Hub, adele: Teams) -> None:
    """Teams → Matrix: Alex mentions Adele; her Matrix event is a pill with ``m.mentions``.
    Matrix → Teams: Adele mentions Alex's ghost; the Graph message has ``<at>`` and
    ``mentions[]`` naming Alex's account."""
    chat, _, room_id, _ = await _portal(hub, adele)
    adele_id, alex_id = hub.graph.user("adele")["id"], hub.graph.user("alex")["id"]
    mention = {
        "id": 0,
        "mentionText": "Adele Vance",
        "mentioned": {
            "user": {"id": adele_id, "displayName": "Adele Vance", "userIdentityType": "aadUser"}
        },
    }
    await hub.graph.post_as(
        "alex", chat, '<p>Over to you, <at id="0">Adele Vance</at></p>', mentions=[mention]
    )
    event = await adele.user.wait_for(
        lambda e: _body(e) == "Over to you, Adele Vance", room_id=room_id, timeout=30
    )
    assert event["content"]["m.mentions"] == {"user_ids": [adele.user.mxid]}
    assert f'href="https://matrix.to/#/{adele.user.mxid}"' in event["content"]["formatted_body"]

    alex = ghost(hub, "alex")
    await adele.user.send_text(
        room_id,
        "Alex Wilber (Contoso): thanks",
        html=f'<a href="https://matrix.to/#/{alex}">Alex Wilber (Contoso)</a>: thanks',
    )
    sent = await _teams_message(
        hub, chat, lambda m: "thanks" in m["body"]["content"], "Adele's mention"
    )
    # The mention shows Alex's own Teams name, not the pill's text.
    assert sent["body"]["content"].startswith('<at id="0">Alex Wilber</at>')
    ((only,),) = [[m["mentioned"]["user"]["id"] for m in sent["mentions"]]]
    assert only.lower() == alex_id.lower()
