"""The walk through a chat's changed messages (bridge.teams.replay), against hostile pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import AsyncMock, MagicMock

from msgraph.generated.models.chat_message import ChatMessage

from bridge.teams.replay import MAX_PAGES, changed_since, graph_time, in_order

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
GRAPH = "https://graph.example/v1.0"


def _msg(msg_id: str, seconds: float, text: str = "") -> ChatMessage:
    when = T0 + timedelta(seconds=seconds)
    return ChatMessage(id=msg_id, last_modified_date_time=when, created_date_time=T0, etag=text)


def _builder(*pages: Any) -> MagicMock:
    builder = MagicMock()
    builder.get = AsyncMock(return_value=pages[0])
    builder.with_url.return_value.get = AsyncMock(side_effect=list(pages[1:]))
    return builder


async def test_the_filter_asks_graph_for_what_changed_after_the_bound_newest_first() -> None:
    builder = _builder(MagicMock(value=[], odata_next_link=None))
    await changed_since(builder, int(T0.timestamp() * 1000) + 5, "list", GRAPH)
    query = builder.get.await_args.args[0].query_parameters
    assert query.filter == "lastModifiedDateTime gt 2026-12-04T12:00:00.005Z"
    assert query.orderby == ["lastModifiedDateTime desc"] and query.top == 50
    assert graph_time(0) == "1970-01-01T00:00:00.000Z"


async def test_a_message_listed_twice_counts_once_in_its_newest_state() -> None:
    """Changed again between two pages: Graph lists it on the first page and again later."""
    first = MagicMock(value=[_msg("2", 9, "new"), _msg("1", 5)], odata_next_link=f"{GRAPH}/next")
    second = MagicMock(value=[_msg("2", 3, "old"), _msg("0", 1)], odata_next_link=None)
    changed = await changed_since(_builder(first, second), 0, "list", GRAPH)
    assert [(m.id, m.etag) for m in changed] == [("0", ""), ("1", ""), ("2", "new")]


async def test_a_next_link_that_goes_round_in_circles_ends() -> None:
    page = MagicMock(value=[_msg("1", 1)], odata_next_link=f"{GRAPH}/again")
    builder = MagicMock()
    builder.get = AsyncMock(return_value=page)
    builder.with_url.return_value.get = AsyncMock(return_value=page)
    assert [m.id for m in await changed_since(builder, 0, "list", GRAPH)] == ["1"]
    assert builder.with_url.return_value.get.await_count == 1


async def test_a_next_link_with_ever_new_messages_ends_at_the_page_bound() -> None:
    counter = iter(range(1_000_000))

    async def fresh(*_: Any) -> Any:
        n = next(counter)
        return MagicMock(value=[_msg(f"m{n}", n)], odata_next_link=f"{GRAPH}/more")

    builder = MagicMock()
    builder.get = fresh
    builder.with_url.return_value.get = fresh
    assert len(await changed_since(builder, 0, "list", GRAPH)) == MAX_PAGES


async def test_changes_of_the_same_millisecond_keep_graphs_order() -> None:
    page = MagicMock(value=[_msg("3", 1), _msg("2", 1), _msg("1", 0)], odata_next_link=None)
    assert [m.id for m in await changed_since(_builder(page), 0, "list", GRAPH)] == ["1", "2", "3"]


def test_streams_merge_by_time_and_a_tie_keeps_the_streams_order() -> None:
    new = [(10, ["message b"]), (30, ["message d"])]
    changes = [(10, ["reaction on b"]), (20, ["edit a"]), (40, ["delete c", "more"])]
    assert in_order(new, changes) == [
        "message b", "reaction on b", "edit a", "message d", "delete c", "more",
    ]  # fmt: skip


async def test_a_next_link_off_the_tenants_graph_is_not_followed() -> None:
    """Hostile: a page's nextLink points elsewhere; following it would send the tenant's
    token there. What was read is kept, the link is not asked for."""
    first = MagicMock(value=[_msg("1", 1)], odata_next_link="https://evil.example/v1.0/next")
    builder = _builder(first, MagicMock(value=[_msg("2", 2)], odata_next_link=None))
    assert [m.id for m in await changed_since(builder, 0, "list", GRAPH)] == ["1"]
    builder.with_url.assert_not_called()
