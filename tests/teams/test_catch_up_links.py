"""The catch-up's walk back through a message list (bridge.teams.catch_up.missed_messages)
follows Graph's nextLink with the tenant's token: only one on the tenant's Graph is followed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock

from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_from_identity_set import ChatMessageFromIdentitySet
from msgraph.generated.models.identity import Identity
from msgraph.generated.models.item_body import ItemBody

from bridge.teams.catch_up import missed_messages

GRAPH = "https://graph.example/v1.0"
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _msg(msg_id: str, seconds: int) -> ChatMessage:
    return ChatMessage(
        id=msg_id,
        created_date_time=T0 + timedelta(seconds=seconds),
        from_=ChatMessageFromIdentitySet(user=Identity(id="u1", display_name="Alex")),
        body=ItemBody(content=f"message {msg_id}"),
    )


def _builder(first: Any, second: Any) -> MagicMock:
    builder = MagicMock()
    builder.get = AsyncMock(return_value=first)
    builder.with_url.return_value.get = AsyncMock(return_value=second)
    return builder


async def _unknown(msg_id: str) -> bool:
    return False


async def test_a_next_link_off_the_tenants_graph_is_not_followed() -> None:
    first = MagicMock(value=[_msg("2", 2)], odata_next_link="https://evil.example/v1.0/p2")
    builder = _builder(first, MagicMock(value=[_msg("1", 1)], odata_next_link=None))
    link: Any = SimpleNamespace(graph_url=GRAPH)
    found = await missed_messages(link, "19:chat", _unknown, 50, None, builder)
    builder.with_url.assert_not_called()
    assert [m.id for m in found.messages] == ["2"]
    assert found.more  # the room is told older messages may be missing


async def test_a_next_link_on_graph_is_followed() -> None:
    first = MagicMock(value=[_msg("2", 2)], odata_next_link=f"{GRAPH}/chats/x/messages?p=2")
    builder = _builder(first, MagicMock(value=[_msg("1", 1)], odata_next_link=None))
    link: Any = SimpleNamespace(graph_url=GRAPH)
    found = await missed_messages(link, "19:chat", _unknown, 50, None, builder)
    assert [m.id for m in found.messages] == ["1", "2"]
    assert not found.more
