"""Team channels ↔ Matrix: ``!pontis bridge teams <channel link>``, threads, mentions, and
what the hub refuses to read.

Adele (Matrix) logs in to Teams as Adele Vance; each test makes a fresh team (Adele, Alex and
the relay account) and bridges its General channel into a new room of hers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio

from graph_emulator.recording import RECORDING
from tests.e2e.conftest import DOMAIN, Hub
from tests.e2e.graph import RELAY_UPN
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_teams import Teams, ghost, teams_login
from tests.teams_emulator.extract_openapi_slice import SLICE
from tests.teams_emulator.openapi_check import check

pytestmark = pytest.mark.e2e
_teams = itertools.count(1)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(json.loads(Path(SLICE).read_text()))


@pytest.fixture(autouse=True)
def graph_answers_are_valid(hub: Hub, spec: dict[str, Any]) -> Iterator[None]:
    """Every Graph answer the emulator gave during the test, and every change notification it
    sent, validates against Microsoft's OpenAPI description (the committed slice)."""
    assert hub.graph._server is not None
    recording = hub.graph._server.app[RECORDING]
    recording.exchanges.clear()
    recording.enabled = True
    notified = len(hub.graph.services.notifier.deliveries)
    try:
        yield
    finally:
        recording.enabled = False
    notifications = [d.payload for d in hub.graph.services.notifier.deliveries[notified:]]
    results = check(spec, {"exchanges": recording.exchanges, "notifications": notifications})
    invalid = [(label, problems) for label, problems in results if problems]
    assert not invalid, invalid


@pytest_asyncio.fixture(scope="module")
async def adele(hub: Hub) -> AsyncIterator[Teams]:
    user = await hub.user("adele")
    room = await teams_login(hub, user, "adele")
    yield Teams(user, room)


async def new_team(hub: Hub, *first_names: str) -> tuple[str, str]:
    """A new team of these people and the relay account: (team id, General channel id)."""
    members = [hub.graph.user(n)["id"] for n in first_names] + [RELAY_UPN]
    team = await hub.graph.control(
        "POST", "/teams", {"displayName": f"Launch team {next(_teams)}", "members": members}
    )
    return str(team["id"]), str(team["channels"][0]["id"])


def channel_link(hub: Hub, team: str, channel: str, tenant: str | None = None) -> str:
    return (
        f"https://teams.microsoft.com/l/channel/{quote(channel, safe='')}/General"
        f"?groupId={team}&tenantId={tenant or hub.graph.tenant_id}"
    )


async def room_with_bot(hub: Hub, user: MatrixUser) -> str:
    room_id = await user.create_room(name="Channel room")
    await user.invite(room_id, hub.bot)
    await user.wait_for(lambda e: e.get("state_key") == hub.bot and e["content"].get("membership") == "join", room_id=room_id)  # fmt: skip
    await user.wait_for(
        lambda e: "To bridge this room" in _body(e), room_id=room_id
    )  # the greeting
    return room_id


async def bridge_command(hub: Hub, user: MatrixUser, room_id: str, link: str) -> str:
    """The bot's answer to ``!pontis bridge teams <link>`` in ``room_id``."""
    mark = user.mark()
    await user.send_text(room_id, f"!pontis bridge teams {link}")
    answer = await user.wait_for(
        lambda e: e["sender"] == hub.bot and e["type"] == "m.room.message",
        room_id=room_id, after=mark, timeout=30,
    )  # fmt: skip
    return _body(answer)


async def bridged_channel(hub: Hub, adele: Teams) -> tuple[str, str, str]:
    """(team id, channel id, room id) of a new team's channel bridged into a room of Adele's."""
    team, channel = await new_team(hub, "adele", "alex")
    room_id = await room_with_bot(hub, adele.user)
    answer = await bridge_command(hub, adele.user, room_id, channel_link(hub, team, channel))
    assert "now bridged" in answer, answer
    return team, channel, room_id


async def post_in_channel(
    hub: Hub, first_name: str, team: str, channel: str, content: str, **extra: Any
) -> str:
    body = {"from": hub.graph.user(first_name)["id"], "content": content, **extra}
    message = await hub.graph.control("POST", f"/teams/{team}/channels/{channel}/messages", body)
    return str(message["id"])


async def channel_messages(hub: Hub, path: str) -> list[dict[str, Any]]:
    page = await hub.graph.graph_as_app("GET", path)
    return list(reversed(page["value"]))


async def until_teams_shows(hub: Hub, path: str, predicate: Any, what: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        found = [m for m in await channel_messages(hub, path) if predicate(m)]
        if found:
            return found[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"Teams never showed {what}: {await channel_messages(hub, path)}")
        await asyncio.sleep(0.3)


async def test_a_channel_with_a_thread_is_bridged_both_ways(hub: Hub, adele: Teams) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    # The channel has a subscription of its own (no tenant-wide one).
    resources = [s.resource for s in hub.graph.services.state.live_subscriptions()]
    assert f"/teams/{team}/channels/{channel}/messages" in resources
    assert not any("getAllMessages" in r and "/teams" in r for r in resources)
    # The team is a space with the room in it; Adele is invited to it.
    space = await adele.user.wait_for_invite(timeout=30, inviter=hub.bot)
    await adele.user.join(space)
    create = await adele.user.get_state(space, "m.room.create")
    assert create.get("type") == "m.space"
    assert (await adele.user.get_state(space, "m.space.child", room_id))["via"] == [DOMAIN]
    assert (await adele.user.get_state(space, "m.room.name"))["name"].startswith("Launch team")

    # Teams → Matrix: a top-level message, then a reply in its thread.
    root = await post_in_channel(hub, "alex", team, channel, "<p>Release plan</p>")
    root_event = await adele.user.wait_for(lambda e: _body(e) == "Release plan", room_id=room_id, timeout=30)  # fmt: skip
    assert root_event["sender"] == ghost(hub, "alex")
    await post_in_channel(hub, "alex", team, channel, "<p>First step</p>", replyToId=root)
    reply = await adele.user.wait_for(lambda e: _body(e) == "First step", room_id=room_id, timeout=30)  # fmt: skip
    relates = reply["content"]["m.relates_to"]
    assert relates["rel_type"] == "m.thread"
    assert relates["event_id"] == root_event["event_id"]

    # Matrix → Teams: a top-level message, and a reply in the same thread.
    adele_id = hub.graph.user("adele")["id"]
    messages = f"/teams/{team}/channels/{channel}/messages"
    await adele.user.send_text(room_id, "Top level from Matrix")
    top = await until_teams_shows(hub, messages, lambda m: "Top level from Matrix" in m["body"]["content"], "the message")  # fmt: skip
    assert top["from"]["user"]["id"] == adele_id
    assert top["replyToId"] is None
    await adele.user.send_text(room_id, "Second step, from Matrix", thread_root=root_event["event_id"])  # fmt: skip
    replies = f"{messages}/{root}/replies"
    sent = await until_teams_shows(hub, replies, lambda m: "Second step" in m["body"]["content"], "the reply")  # fmt: skip
    assert sent["from"]["user"]["id"] == adele_id
    assert sent["replyToId"] == root
    # Nothing sent from Matrix comes back as Adele's ghost.
    await asyncio.sleep(1)
    assert not adele.user.seen(lambda e: e["sender"] == ghost(hub, "adele"), room_id=room_id)


async def test_mentions_in_a_channel_notify_the_right_person_both_ways(
    hub: Hub, adele: Teams
) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    adele_id, alex_id = hub.graph.user("adele")["id"], hub.graph.user("alex")["id"]
    mention = {
        "id": 0,
        "mentionText": "Adele Vance",
        "mentioned": {
            "user": {"id": adele_id, "displayName": "Adele Vance", "userIdentityType": "aadUser"}
        },
    }
    root = await post_in_channel(
        hub, "alex", team, channel, '<p>Over to you, <at id="0">Adele Vance</at></p>',
        mentions=[mention],
    )  # fmt: skip
    event = await adele.user.wait_for(lambda e: _body(e) == "Over to you, Adele Vance", room_id=room_id, timeout=30)  # fmt: skip
    assert event["content"]["m.mentions"] == {"user_ids": [adele.user.mxid]}

    alex = ghost(hub, "alex")
    await adele.user.send_text(
        room_id, "Alex Wilber (Contoso): on it",
        html=f'<a href="https://matrix.to/#/{alex}">Alex Wilber (Contoso)</a>: on it',
        thread_root=event["event_id"],
    )  # fmt: skip
    replies = f"/teams/{team}/channels/{channel}/messages/{root}/replies"
    sent = await until_teams_shows(hub, replies, lambda m: "on it" in m["body"]["content"], "the mention")  # fmt: skip
    assert sent["body"]["content"].startswith('<at id="0">Alex Wilber</at>')
    assert [m["mentioned"]["user"]["id"].lower() for m in sent["mentions"]] == [alex_id.lower()]


async def test_malformed_and_foreign_channel_links_are_refused(hub: Hub, adele: Teams) -> None:
    """Hostile: links that are not a channel of this tenant bridge nothing and read nothing."""
    team, channel = await new_team(hub, "adele", "alex")
    room_id = await room_with_bot(hub, adele.user)
    good = channel_link(hub, team, channel)
    foreign_tenant = "11111111-2222-3333-4444-555555555555"
    reads_before = await hub.graph.reads(f"/v1.0/teams/{team}*")
    refused = {
        "http://teams.microsoft.com" + good.removeprefix("https://teams.microsoft.com"): "https://",
        good.replace("teams.microsoft.com", "teams.evil.example"): "is not Microsoft Teams",
        good.replace("/l/channel/", "/l/message/"): "not a channel",
        good.replace(f"groupId={team}", "groupId=not-a-guid"): "groupId",
        good + f"&groupId={team}": "groupId",
        good.replace("%40thread.tacv2", "%40evil.example"): "channel id",
        good + "&x=" + "a" * 3000: "longer than any Teams link",
        channel_link(hub, team, channel, foreign_tenant): "another organisation",
    }
    for link, reason in refused.items():
        answer = await bridge_command(hub, adele.user, room_id, link)
        assert reason in answer, (link, answer)
    # Nothing was read from Graph for any of them, and the room is still no portal.
    assert await hub.graph.reads(f"/v1.0/teams/{team}*") == reads_before
    assert hub.bridge.query(f"SELECT count(*) FROM portal WHERE mxid = '{room_id}'") == [(0,)]


async def test_a_stranger_cannot_bridge_a_channel(hub: Hub, adele: Teams) -> None:
    """Hostile: a Matrix user without a Teams login, and Adele for a team she is not in."""
    team, channel = await new_team(hub, "alex", "megan")
    bob = await hub.user("bob")
    bobs_room = await room_with_bot(hub, bob)
    answer = await bridge_command(hub, bob, bobs_room, channel_link(hub, team, channel))
    assert "login teams" in answer, answer
    room_id = await room_with_bot(hub, adele.user)
    answer = await bridge_command(hub, adele.user, room_id, channel_link(hub, team, channel))
    assert "member of its team" in answer, answer
    assert hub.bridge.query(f"SELECT count(*) FROM portal WHERE remote_id LIKE '%{team}%'") == [(0,)]  # fmt: skip
    assert not [s for s in hub.graph.services.state.live_subscriptions() if team in s.resource]


async def test_notifications_of_unbridged_channels_are_not_read(hub: Hub, adele: Teams) -> None:
    """Hostile: with the right clientState (a leaked one), a notification naming a channel
    nobody bridged — or a bridged channel, from a subscription that is not its own — makes
    the hub read nothing from Graph and changes nothing in Matrix."""
    team, channel, room_id = await bridged_channel(hub, adele)
    other_team, other_channel = await new_team(hub, "adele", "alex")
    secret = await post_in_channel(hub, "alex", other_team, other_channel, "<p>Not for Matrix</p>")
    (own,) = [
        s for s in hub.graph.services.state.live_subscriptions()
        if s.resource == f"/teams/{team}/channels/{channel}/messages"
    ]  # fmt: skip
    chat_sub = next(s for s in hub.graph.services.state.live_subscriptions() if "chats" in s.resource)  # fmt: skip
    bridged_msg = await post_in_channel(hub, "alex", team, channel, "<p>Bridged one</p>")
    await adele.user.wait_for(lambda e: _body(e) == "Bridged one", room_id=room_id, timeout=30)
    reads = await hub.graph.reads(f"/v1.0/teams/{other_team}/*")
    bridged_reads = await hub.graph.reads(f"/v1.0/teams/{team}/channels/*/messages/{bridged_msg}")
    mark = adele.user.mark()

    def item(resource: str, sub_id: str, change: str = "created") -> dict[str, Any]:
        return {
            "subscriptionId": sub_id, "changeType": change, "resource": resource,
            "clientState": own.client_state, "tenantId": hub.graph.tenant_id,
        }  # fmt: skip

    forged = {
        "value": [
            item(f"teams('{other_team}')/channels('{other_channel}')/messages('{secret}')", own.id),
            item(
                f"teams('{team}')/channels('{channel}')/messages('{bridged_msg}')",
                chat_sub.id,
                "deleted",
            ),
            item(f"teams('{team}')/channels('{channel}')/messages('{bridged_msg}')/x", own.id),
        ]
    }
    url = f"http://127.0.0.1:{hub.as_port}/_pontis/teams/notifications"
    async with aiohttp.ClientSession() as http, http.post(url, json=forged) as resp:
        assert resp.status in (200, 202)
    await asyncio.sleep(2)
    assert await hub.graph.reads(f"/v1.0/teams/{other_team}/*") == reads
    assert await hub.graph.reads(f"/v1.0/teams/{team}/channels/*/messages/{bridged_msg}") == bridged_reads  # fmt: skip
    later = [e for e in adele.user.events[mark:] if e["room_id"] == room_id]
    assert not [e for e in later if e["type"] == "m.room.redaction" or "Not for Matrix" in _body(e)]
    assert "not from its own subscription" in hub.bridge.log_path.read_text()
    # The channel's own notifications still come through.
    await post_in_channel(hub, "alex", team, channel, "<p>Still bridged</p>")
    await adele.user.wait_for(lambda e: _body(e) == "Still bridged", room_id=room_id, timeout=30)


async def test_channel_messages_written_while_the_bridge_was_down_are_caught_up(
    hub: Hub, adele: Teams
) -> None:
    team, channel, room_id = await bridged_channel(hub, adele)
    await post_in_channel(hub, "alex", team, channel, "<p>Before the outage</p>")
    await adele.user.wait_for(
        lambda e: _body(e) == "Before the outage", room_id=room_id, timeout=30
    )
    hub.bridge.kill()
    try:
        failed = len([d for d in hub.graph.services.notifier.deliveries if d.state == "failed"])
        await post_in_channel(hub, "alex", team, channel, "<p>Written during the outage</p>")
        # Graph retries and then gives up on the webhook.
        await eventually(
            lambda: (
                len([d for d in hub.graph.services.notifier.deliveries if d.state == "failed"])
                > failed
            ),
            "the emulator to give up on the notification",
        )
    finally:
        await hub.bridge.start(hub.as_port)
    caught = await adele.user.wait_for(
        lambda e: _body(e) == "Written during the outage", room_id=room_id, timeout=45
    )
    assert caught["sender"] == ghost(hub, "alex")
    await asyncio.sleep(1)
    assert len(adele.user.seen(lambda e: _body(e) == "Before the outage", room_id=room_id)) == 1


async def test_graph_away_while_bridging_bridges_nothing_until_it_is_back(
    hub: Hub, adele: Teams
) -> None:
    """Outage at the worst moment: the channel was read, its subscription cannot be made."""
    team, channel = await new_team(hub, "adele", "alex")
    room_id = await room_with_bot(hub, adele.user)
    wire = hub.graph.services.wire
    fault = wire.add_fault("/v1.0/subscriptions", method="POST", status=503, count=1_000)
    try:
        answer = await bridge_command(hub, adele.user, room_id, channel_link(hub, team, channel))
    finally:
        wire.faults.remove(fault)
    assert "not reachable right now" in answer, answer
    assert hub.bridge.query(f"SELECT count(*) FROM portal WHERE mxid = '{room_id}'") == [(0,)]
    # Once Graph is back, the same command works and messages flow.
    answer = await bridge_command(hub, adele.user, room_id, channel_link(hub, team, channel))
    assert "now bridged" in answer, answer
    await post_in_channel(hub, "alex", team, channel, "<p>After the outage</p>")
    await adele.user.wait_for(lambda e: _body(e) == "After the outage", room_id=room_id, timeout=30)
