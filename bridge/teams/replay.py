"""What changed in a chat while nobody was told: edits, deletions and reactions, replayed.

A change notification names a message, and the bridge compares the message with what it has
bridged (:mod:`bridge.teams.inbound`). While the bridge is down, or while a subscription is
being created again, Graph's notifications of edits, deletions and reactions are lost like
those of new messages, and the message list's usual order (newest written first) does not find
them: an edit of last week's message is at last week's place. Graph lists a chat's messages by
``lastModifiedDateTime`` too, filtered to those changed after a moment, and every edit,
deletion and reaction sets that time. So a catch-up also reads the messages changed after the
chat's bound (:mod:`bridge.teams.coverage`: up to there, every notification was kept), every
page of them, and compares each with what Matrix has. Replaying is idempotent because the
comparison is: an edit is bridged once per edit time, a deletion removes the mapping it acts on,
and a reaction set is diffed with the stored reactions. A change seen twice changes nothing.

The walk takes any message collection builder with ``get`` and ``with_url`` (a chat's, or a
channel's where Graph also has ``/messages/delta``), and the merge is per conversation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.chats.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.generated.models.chat_message import ChatMessage

from bridge.core import PortalKey, RemoteEvent, RemoteMessageID, RemoteReactionSync, RemoteUserID
from bridge.teams.errors import graph_call
from bridge.teams.graph_links import on_graph
from bridge.teams.network import TeamsNetwork
from bridge.teams.to_matrix import reaction_emojis

PAGE = 50
"""Graph's largest ``$top`` for chat messages."""
MAX_PAGES = 400
"""Ends a ``@odata.nextLink`` that never ends (20,000 changed messages)."""
LOOKBACK_MS = 24 * 3600 * 1000
"""How far back changes are read in a chat without a bound (bridged by an older version)."""

T = TypeVar("T")


class _Pages(Protocol):
    def get(self, request_configuration: Any = None) -> Any: ...
    def with_url(self, raw_url: str) -> Any: ...


def modified_ms(msg: ChatMessage) -> int:
    """When ``msg`` last changed (written, edited, deleted, reacted to), ms since the epoch."""
    when = msg.last_modified_date_time or msg.deleted_date_time or msg.created_date_time
    return int(when.timestamp() * 1000) if when is not None else 0


def graph_time(ms: int) -> str:
    """A ``$filter`` literal as Graph writes times: UTC, milliseconds, ``Z``."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def changed_since(
    builder: _Pages, since_ms: int, what: str, graph_url: str
) -> list[ChatMessage]:
    """The messages of the collection ``builder`` changed after ``since_ms``, least recently
    changed first, each once (its latest state). Every page is read, but not one a nextLink
    off ``graph_url`` (the tenant's Graph) points to: that would get the tenant's token.

    Raises what :func:`graph_call` raises (``TransientError`` while Graph is away)."""
    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
        top=PAGE,
        orderby=["lastModifiedDateTime desc"],
        filter=f"lastModifiedDateTime gt {graph_time(since_ms)}",
    )
    page = await graph_call(
        what, builder.get(RequestConfiguration(query_parameters=query)), reading=True
    )

    async def follow(url: str) -> Any:
        if not on_graph(url, graph_url):
            return None
        return await graph_call(what, builder.with_url(url).get(), reading=True)

    newest_first, _ = await read_pages(page, follow)
    # Reversed first: changes of the same millisecond keep the order Graph lists them in.
    return sorted(reversed(newest_first), key=modified_ms)


async def read_pages(
    page: Any, follow: Callable[[str], Awaitable[Any]]
) -> tuple[list[ChatMessage], Any]:
    """Every message of ``page`` and the pages after it (``follow`` reads a nextLink), each
    once, in its latest state (a message changed again between two pages is listed twice),
    in listing order; and the last page read (a delta round's ``@odata.deltaLink`` is on it).
    A page of nothing new (a nextLink that goes round in circles) or :data:`MAX_PAGES` pages
    end the walk; ``follow`` may refuse a link by returning None."""
    listed: dict[str, ChatMessage] = {}
    pages = 1
    last = page
    while page is not None:
        last = page
        fresh = False
        for msg in page.value or []:
            if not msg.id:
                continue
            before = listed.get(msg.id)
            if before is None or modified_ms(msg) > modified_ms(before):
                listed[msg.id] = msg
                fresh = fresh or before is None
        if not page.odata_next_link or not fresh or pages >= MAX_PAGES:
            break
        pages += 1
        page = await follow(page.odata_next_link)
    return list(listed.values()), last


def in_order(*streams: Sequence[tuple[int, Sequence[T]]]) -> list[T]:
    """The items of several ``(time, items)`` streams as one, by time; a tie keeps the order
    of the streams (a message before a change of it made in the same millisecond)."""
    keyed = [
        (moment, index, position, items)
        for index, stream in enumerate(streams)
        for position, (moment, items) in enumerate(stream)
    ]
    keyed.sort(key=lambda entry: entry[:3])
    return [item for *_, items in keyed for item in items]


async def reaction_syncs(
    net: TeamsNetwork, key: PortalKey, target: RemoteMessageID, msg: ChatMessage
) -> list[RemoteEvent]:
    """One complete set per user whose reactions on ``msg`` differ from those on Matrix; Matrix
    users' own reactions (made through their login) are theirs already and not mirrored back.
    A change seen again (a replay) gives nothing. Chats and channels alike."""
    current = reaction_emojis(msg)
    before: dict[RemoteUserID, set[str]] = {}
    for r in await net.ctx.store.list_reactions(key, target):
        if not r.sender_id.startswith("@"):
            before.setdefault(RemoteUserID(r.sender_id), set()).add(r.emoji)
    skip = set(await net.logged_in()) | net.relay_ids()
    return [
        RemoteReactionSync(portal=key, sender=user, target=target, emojis=current.get(user, set()))
        for user in sorted(set(current) | set(before))
        if user not in skip and current.get(user, set()) != before.get(user, set())
    ]
