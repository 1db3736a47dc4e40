"""Teams, channels, channel messages and replies, and their notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.subscription import Subscription

from .conftest import Emulator, Receiver


def _team(emulator: Emulator) -> tuple[str, str]:
    team = emulator.seeded["tenants"][0]["teams"][0]
    return team["id"], team["channels"][0]["id"]


async def test_team_and_channels(emulator: Emulator) -> None:
    team_id, channel_id = _team(emulator)
    graph = emulator.app_client()
    team = await graph.teams.by_team_id(team_id).get()
    assert team is not None and team.display_name == "Mark 8"
    channels = await graph.teams.by_team_id(team_id).channels.get()
    assert channels is not None and [c.display_name for c in channels.value or []] == ["General"]
    assert channel_id.endswith("@thread.tacv2")


async def test_channel_message_and_reply(emulator: Emulator) -> None:
    team_id, channel_id = _team(emulator)
    graph = emulator.user_client("adele")
    messages = graph.teams.by_team_id(team_id).channels.by_channel_id(channel_id).messages
    root = await messages.post(
        ChatMessage(body=ItemBody(content_type=BodyType.Html, content="<p>root</p>"))
    )
    assert root is not None and root.id is not None
    assert root.channel_identity is not None and root.channel_identity.channel_id == channel_id
    assert root.chat_id is None and root.web_url is not None

    alex = emulator.user_client("alex")
    replies = (
        alex.teams.by_team_id(team_id)
        .channels.by_channel_id(channel_id)
        .messages.by_chat_message_id(root.id)
        .replies
    )
    reply = await replies.post(
        ChatMessage(body=ItemBody(content_type=BodyType.Text, content="reply"))
    )
    assert reply is not None and reply.reply_to_id == root.id

    listed = await replies.get()
    assert listed is not None and [m.id for m in listed.value or []] == [reply.id]
    roots = await messages.get()
    assert roots is not None and [m.id for m in roots.value or []] == [root.id]


async def test_channel_subscription_sees_replies(emulator: Emulator, receiver: Receiver) -> None:
    team_id, channel_id = _team(emulator)
    graph = emulator.app_client()
    await graph.subscriptions.post(
        Subscription(
            change_type="created",
            notification_url=receiver.url(),
            resource=f"/teams/{team_id}/channels/{channel_id}/messages",
            expiration_date_time=datetime.now(UTC) + timedelta(minutes=30),
            client_state="c",
        )
    )
    adele = emulator.user("adele")["id"]
    root = await emulator.control(
        "POST", f"/teams/{team_id}/channels/{channel_id}/messages", {"from": adele, "content": "r"}
    )
    reply = await emulator.control(
        "POST",
        f"/teams/{team_id}/channels/{channel_id}/messages",
        {"from": adele, "content": "x", "replyToId": root["id"]},
    )
    items = await receiver.wait_for(2)
    assert items[1]["resource"] == (
        f"teams('{team_id}')/channels('{channel_id}')/messages('{root['id']}')/replies('{reply['id']}')"
    )
