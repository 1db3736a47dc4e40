"""A whole team: ``bridge-team teams <team link>`` makes one invite-only room per channel its
user can read, under the team's space, each with the channel's own subscription; the hostile
ways in (a stranger to the team, a forged tenant, no Teams login) make no room at all.

Adele (Matrix) logs in to Teams as Adele Vance; each test makes a fresh team.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Hub
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_teams import Teams, adele, ghost  # noqa: F401 (adele: the fixture)
from tests.e2e.test_teams_channels import (  # noqa: F401 (fixtures)
    _body,
    graph_answers_are_valid,
    new_team,
    post_in_channel,
    room_with_bot,
    spec,
)

pytestmark = pytest.mark.e2e


def team_link(hub: Hub, team: str, general: str, tenant: str | None = None) -> str:
    return (
        f"https://teams.microsoft.com/l/team/{quote(general, safe='')}/conversations"
        f"?groupId={team}&tenantId={tenant or hub.graph.tenant_id}"
    )


async def command(hub: Hub, user: MatrixUser, room_id: str, text: str) -> str:
    """The bot's answer to ``text`` in ``room_id``."""
    mark = user.mark()
    await user.send_text(room_id, text)
    answer = await user.wait_for(
        lambda e: e["sender"] == hub.bot and e["type"] == "m.room.message",
        room_id=room_id, after=mark, timeout=60,
    )  # fmt: skip
    return _body(answer)


async def new_channel(hub: Hub, team: str, name: str, kind: str, *members: str) -> str:
    body = {"displayName": name, "membershipType": kind,
            "members": [hub.graph.user(n)["id"] for n in members]}  # fmt: skip
    return str((await hub.graph.control("POST", f"/teams/{team}/channels", body))["id"])


def subscribed(hub: Hub, team: str) -> list[str]:
    return [
        s.resource
        for s in hub.graph.services.state.live_subscriptions()
        if s.resource.startswith(f"/teams/{team}/")
    ]


async def test_a_members_team_becomes_invite_only_rooms_in_its_space_once(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    team, general = await new_team(hub, "adele", "alex")
    design = await new_channel(hub, team, "Design", "standard")
    await new_channel(hub, team, "Board", "private", "alex")  # Adele is not in it
    user = adele.user
    answer = await command(
        hub, user, adele.management_room, f"bridge-team teams {team_link(hub, team, general)}"
    )
    rooms = dict(re.findall(r"^- (\w+): (!\S+)$", answer, re.MULTILINE))
    assert answer.startswith("Bridged 2 chats"), answer
    assert list(rooms) == ["General", "Design"], answer  # not the private channel
    assert sorted(subscribed(hub, team)) == sorted(
        f"/teams/{team}/channels/{c}/messages" for c in (general, design)
    )

    spaces = set()
    for room_id in rooms.values():
        await user.join(room_id)  # she was invited
        assert (await user.get_state(room_id, "m.room.join_rules"))["join_rule"] == "invite"
        parents = [
            e["state_key"]
            for e in await user.get_full_state(room_id)
            if e["type"] == "m.space.parent"
        ]
        spaces.update(parents)
    assert len(spaces) == 1  # both under the team's one space
    space = spaces.pop()
    await user.join(space)
    assert (await user.get_state(space, "m.room.create")).get("type") == "m.space"

    # The Design room works as a channel bridged alone does.
    await post_in_channel(hub, "alex", team, design, "<p>Mockups are up</p>")
    event = await user.wait_for(
        lambda e: _body(e) == "Mockups are up", room_id=rooms["Design"], timeout=30
    )
    assert event["sender"] == ghost(hub, "alex")

    # Again: nothing new, no second room, no second subscription.
    invites = len(user.invites)
    again = await command(
        hub, user, adele.management_room, f"bridge-team teams {team_link(hub, team, general)}"
    )
    assert again.startswith("Already bridged, left as they are:"), again
    assert dict(re.findall(r"^- (\w+): (!\S+)$", again, re.MULTILINE)) == rooms
    assert len(subscribed(hub, team)) == 2
    await asyncio.sleep(1)
    assert len(user.invites) == invites


async def test_a_stranger_a_forged_tenant_and_no_login_get_a_refusal_and_no_room(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    team, general = await new_team(hub, "alex")  # Adele is not a member
    user, room = adele.user, adele.management_room
    invites = len(user.invites)
    answer = await command(hub, user, room, f"bridge-team teams {team_link(hub, team, general)}")
    assert "member of the team" in answer, answer

    her_team, her_general = await new_team(hub, "adele", "alex")
    forged = team_link(hub, her_team, her_general, tenant=str(uuid.uuid4()))
    answer = await command(hub, user, room, f"bridge-team teams {forged}")
    assert "another organisation" in answer, answer

    shared = await room_with_bot(hub, user)  # others may read the answer there: not here
    answer = await command(
        hub, user, shared, f"!pontis bridge-team teams {team_link(hub, her_team, her_general)}"
    )
    assert answer == "Send `bridge-team` in your management room.", answer

    bob = await hub.user("bob")  # no Teams login
    bobs_room = await bob.create_room(invite=[hub.bot], is_direct=True)
    await bob.wait_for(lambda e: "Pontis bridge bot" in _body(e), room_id=bobs_room, timeout=30)
    answer = await command(
        hub, bob, bobs_room, f"bridge-team teams {team_link(hub, her_team, her_general)}"
    )
    assert "send `login teams`" in answer, answer

    await asyncio.sleep(1)
    assert len(user.invites) == invites and bob.invites == []
    assert subscribed(hub, team) == [] and subscribed(hub, her_team) == []


async def test_graph_away_for_one_channel_bridges_the_others_and_names_it(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    """Outage halfway: Graph answers 503 for the second channel only. The first and third are
    bridged and work; the answer names the second; the same command later bridges it alone."""
    team, general = await new_team(hub, "adele", "alex")
    design = await new_channel(hub, team, "Design", "standard")
    await new_channel(hub, team, "Ops", "standard")
    user, room, link = adele.user, adele.management_room, team_link(hub, team, general)
    wire = hub.graph.services.wire
    fault = wire.add_fault(f"/v1.0/teams/{team}/channels/{design}", method="GET", status=503,
                           count=1_000)  # fmt: skip
    try:
        answer = await command(hub, user, room, f"bridge-team teams {link}")
    finally:
        wire.faults.remove(fault)
    rooms = dict(re.findall(r"^- (\w+): (!\S+)$", answer, re.MULTILINE))
    assert list(rooms) == ["General", "Ops"], answer
    assert "Not bridged (send the command again to retry them):\n- Design: Teams is not reachable" in answer  # fmt: skip
    assert f"/teams/{team}/channels/{design}/messages" not in subscribed(hub, team)

    await user.join(rooms["Ops"])
    await post_in_channel(hub, "alex", team, general, "<p>Still here</p>")
    await user.join(rooms["General"])
    await user.wait_for(lambda e: _body(e) == "Still here", room_id=rooms["General"], timeout=30)

    again = await command(hub, user, room, f"bridge-team teams {link}")
    assert again.startswith("Bridged 1 chat,"), again
    assert re.search(r"^- Design: !\S+$", again, re.MULTILINE), again
    assert len(subscribed(hub, team)) == 3
