"""A private Teams channel bridged into Matrix: only its members read it, and the room follows
its membership. Real Synapse, the bridge as a process, the Graph emulator.

Adele (Matrix) logs in to Teams as Adele Vance and bridges the private channel "Board" of a
new team (Adele, Alex, Nestor, Megan and the relay account), of which only she is a member at
first. Bob has no Teams login; Carol logs in as Megan.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.teams.channel_members import CANNOT_REMOVE, NOT_A_MEMBER, REMOVED
from tests.e2e.conftest import Hub
from tests.e2e.graph import RELAY_UPN
from tests.e2e.test_teams import Teams, adele, ghost, teams_login  # noqa: F401 (fixture)
from tests.e2e.test_teams_channels import (  # noqa: F401 (fixtures: every Graph answer valid)
    _body,
    bridge_command,
    channel_link,
    graph_answers_are_valid,
    post_in_channel,
    room_with_bot,
    spec,
)

pytestmark = pytest.mark.e2e


def _membership(mxid: str, *states: str) -> Any:
    return lambda e: (
        e["type"] == "m.room.member"
        and e["state_key"] == mxid
        and e["content"].get("membership") in states
    )


async def test_a_private_channel_is_read_by_its_members_only(
    hub: Hub,
    adele: Teams,  # noqa: F811
) -> None:
    ids = {n: hub.graph.user(n)["id"] for n in ("adele", "alex", "nestor", "megan")}
    team = await hub.graph.control(
        "POST",
        "/teams",
        {"displayName": "Private board team", "members": [*ids.values(), RELAY_UPN]},
    )
    board = await hub.graph.control(
        "POST",
        f"/teams/{team['id']}/channels",
        {"displayName": "Board", "membershipType": "private", "members": [ids["adele"]]},
    )
    team_id, channel = str(team["id"]), str(board["id"])
    user = adele.user
    room_id = await room_with_bot(hub, user)
    answer = await bridge_command(hub, user, room_id, channel_link(hub, team_id, channel))
    assert "now bridged" in answer, answer
    # Alex is in the team but not in the channel: no ghost of his joins.
    await asyncio.sleep(1)
    assert ghost(hub, "alex") not in await user.joined_members(room_id)

    # Nestor is added to the channel in Teams: his ghost joins the room.
    members = f"/teams/{team_id}/channels/{channel}/members"
    await hub.graph.control("POST", members, {"as": ids["adele"], "user": ids["nestor"]})
    nestor = ghost(hub, "nestor")
    await user.wait_for(_membership(nestor, "join"), room_id=room_id, timeout=45)

    # Adele invites Bob, who has no Teams login; he joins.
    bob = await hub.user("bob")
    await user.invite(room_id, bob.mxid)
    await bob.join(room_id)
    await user.wait_for(_membership(bob.mxid, "join"), room_id=room_id, timeout=30)

    # Hostile: the bot has no power to remove Bob from Adele's own room, so nothing of the
    # channel is shown there; the room is told why.
    mark = user.mark()
    await post_in_channel(hub, "nestor", team_id, channel, "<p>Draft minutes</p>")
    await user.wait_for(
        lambda e: e["sender"] == hub.bot and CANNOT_REMOVE in _body(e),
        room_id=room_id, after=mark, timeout=45,
    )  # fmt: skip
    assert not user.seen(lambda e: "Draft minutes" in _body(e), room_id=room_id)

    # Adele makes the bot a moderator: the next message reaches the room after Bob is out.
    levels = await user.get_state(room_id, "m.room.power_levels")
    levels["users"] = {**levels.get("users", {}), hub.bot: 50}
    await user.send_state(room_id, "m.room.power_levels", levels)
    mark = user.mark()
    await post_in_channel(hub, "nestor", team_id, channel, "<p>Board minutes</p>")
    shown = await user.wait_for(
        lambda e: _body(e) == "Board minutes", room_id=room_id, after=mark, timeout=45
    )
    kicked = user.seen(_membership(bob.mxid, "leave"), room_id=room_id)
    assert kicked and kicked[0]["sender"] == hub.bot
    assert kicked[0]["content"].get("reason") == NOT_A_MEMBER
    timeline = [e["event_id"] for e in user.events if e["room_id"] == room_id]
    assert timeline.index(kicked[0]["event_id"]) < timeline.index(shown["event_id"])
    await asyncio.sleep(1)
    assert not bob.seen(lambda e: "minutes" in _body(e))

    # Hostile: Adele invites Bob again and he joins: the bot removes him at once, with no
    # message of the channel to wait for.
    mark = user.mark()
    await user.invite(room_id, bob.mxid)
    await bob.join(room_id)
    out = await user.wait_for(
        _membership(bob.mxid, "leave"), room_id=room_id, after=mark, timeout=30
    )
    assert out["sender"] == hub.bot and out["content"].get("reason") == NOT_A_MEMBER

    # Nestor leaves the channel: his ghost leaves the room.
    await hub.graph.control("DELETE", f"{members}/{ids['nestor']}?as={ids['adele']}")
    gone = await user.wait_for(_membership(nestor, "leave"), room_id=room_id, timeout=45)
    assert gone["sender"] == nestor

    # Carol logs in to Teams as Megan; Megan is added to the channel: Carol is invited, and
    # removed from the room when Megan is removed from the channel.
    carol = await hub.user("carol")
    await teams_login(hub, carol, "megan")
    await hub.graph.control("POST", members, {"as": ids["adele"], "user": ids["megan"]})
    invited = ""
    while invited != room_id:
        invited = await carol.wait_for_invite(timeout=45)
    await carol.join(room_id)
    await user.wait_for(_membership(carol.mxid, "join"), room_id=room_id, timeout=30)
    await hub.graph.control("DELETE", f"{members}/{ids['megan']}?as={ids['adele']}")
    out = await user.wait_for(_membership(carol.mxid, "leave"), room_id=room_id, timeout=45)
    # Her join's check may read the members after Megan's removal, before the member-change
    # message does: then it removes her, as no member.
    assert out["sender"] == hub.bot and out["content"].get("reason") in (REMOVED, NOT_A_MEMBER)
