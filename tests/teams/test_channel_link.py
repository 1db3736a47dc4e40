"""Teams channel links and channel ids, read strictly (bridge.teams.channel_link, ids)."""

from __future__ import annotations

import pytest

from bridge.teams.channel_link import BadChannelLink, parse_channel_link
from bridge.teams.ids import channel_key, parse_channel, parse_channel_resource

TEAM = "6f0c1e2a-9b8d-4c3e-a1b2-0123456789ab"
TENANT = "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"
CHANNEL = "19:QGx0dUr3vVUl4b1Yk0ZxJp2sN8bXc1yA3mQ4@thread.tacv2"
LINK = (
    "https://teams.microsoft.com/l/channel/19%3AQGx0dUr3vVUl4b1Yk0ZxJp2sN8bXc1yA3mQ4%40thread.tacv2"
    f"/General?groupId={TEAM}&tenantId={TENANT}"
)


def test_a_channel_link_names_team_channel_and_tenant() -> None:
    link = parse_channel_link(f"  <{LINK.replace(TEAM, TEAM.upper())}>  ")
    assert (link.team_id, link.channel_id, link.tenant_id, link.name) == (
        TEAM, CHANNEL, TENANT, "General",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (LINK.replace("https://", "http://"), "https://"),
        (LINK.replace("https://", "https://user:pw@"), "https://"),
        (LINK.replace("teams.microsoft.com", "teams.microsoft.com:8443"), "https://"),
        (LINK.replace("teams.microsoft.com", "teams.microsoft.com.evil.example"), "not Microsoft"),
        (LINK.replace("/l/channel/", "/l/message/"), "not a channel"),
        (LINK.replace("/General", "/General/extra"), "not a channel"),
        (LINK.replace("%40thread.tacv2", "%40thread.tacv2%2F..%2Fx"), "channel id"),
        (LINK.replace("19%3A", "20%3A"), "channel id"),
        (LINK.replace(f"groupId={TEAM}", "groupId=not-a-guid"), "groupId"),
        (LINK.replace(f"groupId={TEAM}&", ""), "groupId"),
        (LINK + f"&groupId={TEAM}", "groupId"),
        (LINK.replace(f"tenantId={TENANT}", "tenantId=common"), "tenantId"),
        (LINK + "&a=1&b=2&c=3&d=4&e=5&f=6&g=7", "query"),
        (LINK + "&x=" + "a" * 3000, "longer"),
        ("19:abc@thread.tacv2", "https://"),
        ("", "https://"),
    ],
)
def test_anything_else_is_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(BadChannelLink, match=reason):
        parse_channel_link(text)


def test_channel_portal_ids_round_trip_and_never_look_like_chats() -> None:
    key = channel_key(TEAM.upper(), CHANNEL)
    assert parse_channel(key.remote_id) == (TEAM, CHANNEL)
    assert parse_channel("19:abc@thread.v2") is None
    assert parse_channel("channel::x") is None


def test_channel_notification_resources() -> None:
    root = f"teams('{TEAM}')/channels('{CHANNEL}')/messages('1700000000001')"
    assert parse_channel_resource(root) == (TEAM, CHANNEL, "1700000000001", None)
    reply = root + "/replies('1700000000002')"
    assert parse_channel_resource(reply) == (TEAM, CHANNEL, "1700000000001", "1700000000002")
    for bad in (root + "/x", "chats('19:a')/messages('1')", root.replace("teams(", "x/teams(")):
        assert parse_channel_resource(bad) is None
