"""Private channels and channel members: who may read a private channel, and its changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kiota_abstractions.api_error import APIError
from msgraph import GraphServiceClient
from msgraph.generated.models.chat_message_type import ChatMessageType
from msgraph.generated.models.members_added_event_message_detail import (
    MembersAddedEventMessageDetail,
)
from msgraph.generated.models.members_deleted_event_message_detail import (
    MembersDeletedEventMessageDetail,
)
from msgraph.generated.models.subscription import Subscription

from bridge.teams.protocol import OAuthTokenProvider

from .conftest import USER_SCOPES, Emulator, Receiver


def _reader(emulator: Emulator, first_name: str) -> GraphServiceClient:
    """A team member's client that may read channels (``Channel.ReadBasic.All``, as the
    bridge's logins ask), so what refuses them is their membership, not a missing scope."""
    user = emulator.user(first_name)
    provider = OAuthTokenProvider.password(
        emulator.session, emulator.base, emulator.tenant_id, emulator.app["clientId"],
        user["userPrincipalName"], f"{first_name}-pw", [*USER_SCOPES, "Channel.ReadBasic.All"],
        allowed_hosts=["127.0.0.1"],
    )  # fmt: skip
    return emulator._client(provider)


async def _private(emulator: Emulator) -> tuple[str, str]:
    team = emulator.seeded["tenants"][0]["teams"][0]["id"]
    made = await emulator.control(
        "POST",
        f"/teams/{team}/channels",
        {
            "displayName": "Board",
            "membershipType": "private",
            "members": [emulator.user("adele")["id"]],
        },
    )
    return team, str(made["id"])


async def _member_ids(emulator: Emulator, team: str, channel: str) -> set[str]:
    item = emulator.app_client().teams.by_team_id(team).channels.by_channel_id(channel)
    page = await item.members.get()
    assert page is not None
    return {str((m.additional_data or {}).get("userId") or getattr(m, "user_id", "")) for m in page.value or []}  # fmt: skip


async def test_a_private_channel_is_refused_to_a_team_member_outside_it(
    emulator: Emulator,
) -> None:
    team, channel = await _private(emulator)
    alex = _reader(emulator, "alex").teams.by_team_id(team)
    with pytest.raises(APIError) as refused:
        await alex.channels.by_channel_id(channel).get()
    assert refused.value.response_status_code == 403
    assert "not a member of channel" in str(refused.value)
    with pytest.raises(APIError):
        await alex.channels.by_channel_id(channel).messages.get()
    listed = await alex.channels.get()
    assert listed is not None and [c.display_name for c in listed.value or []] == ["General"]
    adele = _reader(emulator, "adele").teams.by_team_id(team)
    assert await adele.channels.by_channel_id(channel).messages.get() is not None
    read = await adele.channels.by_channel_id(channel).get()
    assert read is not None and read.membership_type is not None
    assert read.membership_type.value == "private"


async def test_members_of_a_standard_channel_are_its_teams(emulator: Emulator) -> None:
    team = emulator.seeded["tenants"][0]["teams"][0]
    ids = await _member_ids(emulator, team["id"], team["channels"][0]["id"])
    assert ids == {emulator.user("adele")["id"], emulator.user("alex")["id"]}


async def test_adding_and_removing_posts_system_messages(
    emulator: Emulator, receiver: Receiver
) -> None:
    team, channel = await _private(emulator)
    await emulator.app_client().subscriptions.post(
        Subscription(
            change_type="created",
            notification_url=receiver.url(),
            resource=f"/teams/{team}/channels/{channel}/messages",
            expiration_date_time=datetime.now(UTC) + timedelta(minutes=30),
            client_state="c",
        )
    )
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    members = f"/teams/{team}/channels/{channel}/members"
    await emulator.control("POST", members, {"as": adele, "user": alex})
    assert await _member_ids(emulator, team, channel) == {adele, alex}
    await emulator.control("DELETE", f"{members}/{alex}?as={adele}")
    assert await _member_ids(emulator, team, channel) == {adele}
    items = await receiver.wait_for(2)
    item = emulator.app_client().teams.by_team_id(team).channels.by_channel_id(channel)
    details = []
    for notified in items:
        msg_id = notified["resourceData"]["id"]
        msg = await item.messages.by_chat_message_id(msg_id).get()
        assert msg is not None and msg.message_type == ChatMessageType.SystemEventMessage
        details.append(type(msg.event_detail))
    assert details == [MembersAddedEventMessageDetail, MembersDeletedEventMessageDetail]


async def test_only_team_members_join_a_private_channel(emulator: Emulator) -> None:
    team, channel = await _private(emulator)
    megan = emulator.user("megan")["id"]  # of the tenant, not of the team
    async with emulator.http.post(
        f"{emulator.base}/_emulator/teams/{team}/channels/{channel}/members",
        json={"as": emulator.user("adele")["id"], "user": megan},
    ) as resp:
        assert resp.status == 400
    assert megan not in await _member_ids(emulator, team, channel)
