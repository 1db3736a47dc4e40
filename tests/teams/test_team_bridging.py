"""``bridge-team teams <team link>``: the team link read strictly, and which channels of the team
a user is offered (bridge.teams.team_bridging). Hostile cases first: a stranger, someone with
no Teams login, a link naming another organisation, a policy that keeps the tenant away.
Against the Graph emulator through the unmodified msgraph-sdk."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest

from bridge.core import NotSupported
from bridge.core.federation import FederationPolicy
from bridge.teams.channel_link import (
    BadChannelLink,
    TeamLink,
    parse_channel_link,
    parse_team_link,
)
from bridge.teams.ids import channel_key
from bridge.teams.team_bridging import NEEDS_LOGIN, team_channels
from tests.teams.test_files import _user_graph
from tests.teams.test_members import _net
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

TEAM = "c0ffee00-1111-4222-8333-444455556666"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
THREAD = quote("19:abc123@thread.tacv2", safe="")
LINK = f"https://teams.microsoft.com/l/team/{THREAD}/conversations?groupId={TEAM}&tenantId={TENANT}"
ANNA = "@anna:hub.example"


# --- the link ---------------------------------------------------------------------------------


def test_a_team_link_and_a_bare_team_id_name_the_team() -> None:
    assert parse_team_link(f"<{LINK}>") == TeamLink(TEAM, TENANT)
    assert parse_team_link(f"  {TEAM.upper()} ") == TeamLink(TEAM, None)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (LINK.replace("teams.microsoft.com", "teams.microsoft.com.evil.example"), "not Microsoft"),
        (LINK.replace("https://", "https://user:pw@"), "starts with"),
        (LINK.replace("teams.microsoft.com", "teams.microsoft.com:8443"), "starts with"),
        (LINK.replace("https", "http", 1), "starts with"),
        (LINK.replace("/l/team/", "/l/channel/"), "not a team"),
        (LINK.replace(THREAD, "not-a-thread"), "thread id"),
        (LINK + f"&groupId={TEAM}", "single valid groupId"),
        (LINK.replace(f"tenantId={TENANT}", "tenantId=../../x"), "single valid tenantId"),
        (LINK.replace(f"&tenantId={TENANT}", ""), "single valid tenantId"),
        (LINK + "&x=" + "a" * 3000, "longer than"),
        ("General", "starts with"),
        ("", "starts with"),
    ],
)
def test_anything_but_a_team_link_is_refused_with_how_to_get_one(text: str, why: str) -> None:
    with pytest.raises(BadChannelLink) as bad:
        parse_team_link(text)
    assert why in str(bad.value)
    assert "Get link to team" in str(bad.value)


def test_a_team_link_given_to_bridge_says_to_use_bridge_team() -> None:
    with pytest.raises(BadChannelLink) as bad:
        parse_channel_link(LINK)
    assert "bridge-team teams" in str(bad.value)


# --- who is offered which channels ------------------------------------------------------------


def _team(emu: Emulator) -> dict[str, Any]:
    return dict(emu.seeded["tenants"][0]["teams"][0])


def _link(emu: Emulator, tenant: str | None = None) -> str:
    team = _team(emu)
    thread = quote(team["channels"][0]["id"], safe="")
    return (
        f"https://teams.microsoft.com/l/team/{thread}/conversations"
        f"?groupId={team['id']}&tenantId={tenant or emu.tenant_id}"
    )


async def _channel(emu: Emulator, name: str, kind: str, *members: str) -> str:
    body = {"displayName": name, "membershipType": kind,
            "members": [emu.user(n)["id"] for n in members]}  # fmt: skip
    return str((await emu.control("POST", f"/teams/{_team(emu)['id']}/channels", body))["id"])


async def test_a_stranger_to_the_team_is_refused(emulator: Emulator) -> None:  # noqa: F811
    """Hostile: Megan is in the tenant but not in the team; Graph refuses her token the list."""
    net, link = _net(emulator)
    with pytest.raises(NotSupported) as refused:
        await team_channels(net, (link, _user_graph(emulator, "megan")), _link(emulator), ANNA)
    assert "member of the team" in refused.value.user_message


async def test_without_a_teams_login_nothing_is_read(emulator: Emulator) -> None:  # noqa: F811
    net, _ = _net(emulator)
    before = len(emulator.requests("/v1.0/teams/*"))
    with pytest.raises(NotSupported) as refused:
        await team_channels(net, None, _link(emulator), ANNA)
    assert refused.value.user_message == NEEDS_LOGIN
    assert len(emulator.requests("/v1.0/teams/*")) == before


@pytest.mark.parametrize("tenant", [str(uuid.uuid4()), TENANT])
async def test_a_forged_link_naming_another_organisation_is_refused_unread(
    emulator: Emulator,  # noqa: F811
    tenant: str,
) -> None:
    """Hostile: the team's real id, but another tenant in the link: refused before Graph."""
    net, link = _net(emulator)
    before = len(emulator.requests("/v1.0/teams/*"))
    with pytest.raises(NotSupported) as refused:
        await team_channels(net, (link, _user_graph(emulator, "adele")), _link(emulator, tenant), ANNA)  # fmt: skip
    assert "another organisation" in refused.value.user_message
    assert len(emulator.requests("/v1.0/teams/*")) == before


async def test_a_federation_policy_that_keeps_the_tenant_away_refuses(
    emulator: Emulator,  # noqa: F811
) -> None:
    rules = [{"network": "teams", "remote": ["some-other-tenant"], "matrix": ["local"]}]
    net, link = _net(emulator, FederationPolicy(rules, "hub.example"))
    with pytest.raises(NotSupported):
        await team_channels(net, (link, _user_graph(emulator, "adele")), _link(emulator), ANNA)
    assert emulator.requests("/v1.0/teams/*/channels") == []


async def test_a_member_is_offered_standard_channels_and_the_private_ones_they_are_in(
    emulator: Emulator,  # noqa: F811
) -> None:
    await _channel(emulator, "Design", "standard")
    await _channel(emulator, "Board", "private", "adele")
    await _channel(emulator, "Secret", "private", "alex")
    await _channel(emulator, "Partners", "shared", "alex")
    net, link = _net(emulator)
    chats = await team_channels(
        net, (link, _user_graph(emulator, "adele")), f" {_team(emulator)['id']} ", ANNA
    )  # a bare team id: her own tenant's
    assert [c.name for c in chats] == ["General", "Design", "Board"]
    team = _team(emulator)["id"]
    for chat in chats:  # each is bridged as a channel link would bridge it
        parsed = parse_channel_link(chat.bridge_id)
        assert (parsed.team_id, parsed.tenant_id) == (team, emulator.tenant_id.lower())
        assert chat.key == channel_key(team, parsed.channel_id)
