"""Which messages of a chat Matrix missed: Graph's message list, paged back to a bound.

While the bridge is down Graph gives up on its change notifications, so a catch-up must find
everything written since the bridge last saw all of the chat, not only the newest page. Graph
lists a chat's messages newest first, at most 50 a page, with ``@odata.nextLink`` to the next
(older) page; the walk goes back to the bound :mod:`bridge.teams.coverage` proves, passing the
messages the bridge knows (in the message table, or just sent from Matrix); without a bound it
stops at the first one it knows. It keeps at most ``limit`` messages: after a week-long outage
the room gets the newest ``limit`` and a notice of how many older ones were skipped (counted
through at most :data:`COUNT_PAGES` further pages, else "more than"). What changed meanwhile
in messages Matrix has (edits, deletions, reactions) is read by :mod:`bridge.teams.replay`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.chats.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_collection_response import (
    ChatMessageCollectionResponse,
)

from bridge.teams.errors import graph_call
from bridge.teams.graph_links import on_graph
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import is_bridgeable, timestamp_ms

PAGE = 50
"""Graph's largest ``$top`` for chat messages."""
COUNT_PAGES = 20
"""Pages read past ``limit`` only to count what is skipped (1,000 messages)."""

Known = Callable[[str], Awaitable[bool]]


@dataclass(slots=True)
class Missed:
    messages: list[ChatMessage] = field(default_factory=list)
    """The messages to bridge, oldest first."""
    skipped: int = 0
    """Older missed messages beyond the limit."""
    more: bool = False
    """Counting stopped before the last bridged message: ``skipped`` is a lower bound."""


async def missed_messages(
    link: TenantLink,
    chat_id: str,
    known: Known,
    limit: int,
    bound: int | None,
    builder: Any = None,
) -> Missed:
    """The messages of ``chat_id`` written after ``bound`` (ms since the epoch) that ``known``
    says are not on Matrix; without a bound, those newer than the newest one on Matrix.
    ``builder``: the SDK's message list to walk instead of the chat's (a team channel's).

    A nextLink off the tenant's Graph is not followed (it would get the token): the walk ends
    there, counted as ``more``. Raises what :func:`graph_call` raises (``TransientError``
    while Graph is away)."""
    what = f"list messages of {chat_id}"
    builder = builder or link.app.chats.by_chat_id(chat_id).messages
    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(top=PAGE)
    page: ChatMessageCollectionResponse | None = await graph_call(
        what, builder.get(RequestConfiguration(query_parameters=query)), reading=True
    )
    found = Missed()
    newest_first: list[ChatMessage] = []
    seen: set[str] = set()
    pages_left = -(-limit // PAGE) + COUNT_PAGES  # also ends a nextLink that never ends
    while page is not None:
        for msg in page.value or []:
            if not msg.id or msg.id in seen:
                continue
            seen.add(msg.id)
            written = timestamp_ms(msg)
            if bound is not None and written is not None and written <= bound:
                found.messages = newest_first[::-1]
                return found
            if await known(msg.id):
                if bound is not None:
                    continue
                found.messages = newest_first[::-1]
                return found
            if msg.deleted_date_time is not None or not is_bridgeable(msg):
                continue
            if len(newest_first) < limit:
                newest_first.append(msg)
            else:
                found.skipped += 1
        pages_left -= 1
        if not page.odata_next_link:
            break  # the chat's first message: nothing of it was bridged before
        if pages_left <= 0 or not on_graph(page.odata_next_link, link.graph_url):
            found.more = True
            break
        page = await graph_call(what, builder.with_url(page.odata_next_link).get(), reading=True)
    found.messages = newest_first[::-1]
    return found
