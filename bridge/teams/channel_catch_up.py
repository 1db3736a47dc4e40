"""What a team channel's notifications missed, replayed: new messages and replies, edits,
deletions and reactions, once and in the order they happened.

Graph tracks a channel's top-level messages with ``GET …/messages/delta``: a round lists the
messages new or changed (edited, deleted, reacted to) since the round its ``@odata.deltaLink``
ended, and a new reply moves its root's ``lastModifiedDateTime``, so the root of every thread
that grew is listed too. Replies are not listed: the catch-up reads ``…/replies`` of each root
listed (one request per changed thread) and takes the replies Matrix lacks, and compares those
it has (an edit, a deletion or a reaction of a reply in a thread that also changed otherwise).

The deltaLink is kept per channel in the key-value store, with the catch-up input that read
from it (as :mod:`bridge.teams.coverage` keeps a chat's bound): converting that input again
after a crash reads from the same link, so what a round found is bridged even if the process
died before the core had it on Matrix; a later input reads from the link the round ended with.
Replaying is idempotent: the comparison with what Matrix has (``Changes``) makes a change seen
twice change nothing.

Links are Graph's to give, but the bridge sends its token with them: a deltaLink or nextLink
that does not point to the tenant's Graph endpoint is not followed (the round starts again
from a time instead); a nextLink going round in circles ends the walk
(:func:`bridge.teams.replay.read_pages`). A reply listed under a root it does not answer, or
of another channel, is dropped.

A channel without a link (bridged by an older version, or whose link Graph no longer honours)
is read from a time: top-level messages newer than the newest on Matrix, the changes of the
last :data:`bridge.teams.replay.LOOKBACK_MS`, and each changed thread's replies newer than the
newest Matrix has of it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.teams.item.channels.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.generated.teams.item.channels.item.messages.item.replies.replies_request_builder import (
    RepliesRequestBuilder,
)

from bridge.core import (
    MessagePart,
    NotFound,
    PermanentError,
    PortalKey,
    RemoteEvent,
    RemoteMessage,
    RemoteMessageID,
)
from bridge.portal.models import Message as StoredMessage
from bridge.teams.catch_up import missed_messages
from bridge.teams.coverage import MARGIN_MS
from bridge.teams.errors import graph_call
from bridge.teams.graph_links import on_graph
from bridge.teams.replay import LOOKBACK_MS, PAGE, graph_time, in_order, modified_ms, read_pages
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import is_bridgeable, timestamp_ms

DELTA_PREFIX = "channel-delta:"


class KeyValues(Protocol):
    async def kv_get(self, key: str) -> str | None: ...
    async def kv_set(self, key: str, value: str) -> None: ...


class Converter(Protocol):
    """What the channel's inbound path does with a message (bridge.teams.channel_inbound)."""

    async def stored(self, msg_id: str) -> StoredMessage | None:
        """The message's mapping, if it is on Matrix."""

    async def known(self, msg_id: str) -> bool:
        """Whether the message is on Matrix, was sent from there, or is the relay's post."""

    async def new_message(
        self, msg: ChatMessage, root_id: str, reply_id: str | None
    ) -> RemoteEvent | None:
        """The message (``reply_id``: a reply in the thread of ``root_id``) for Matrix."""

    async def changes(
        self,
        msg: ChatMessage,
        root_id: str,
        reply_id: str | None,
        stored: StoredMessage,
        token: str,
    ) -> list[RemoteEvent]:
        """What Matrix has not seen of a message it has: an edit, a deletion, reactions."""


@dataclass(slots=True)
class DeltaRecord:
    token: str
    """The catch-up input that read the round."""
    start: str
    """The deltaLink it read from ("": read from ``since``)."""
    since: int
    """When ``start`` was taken (ms): replies written after it are new."""
    next: str
    """The deltaLink the round ended with ("": incomplete, read from ``start`` again)."""
    at: int
    """When the round was read (ms)."""
    bounded: bool = True
    """``since`` is when the channel was last read (False: a guess, :data:`LOOKBACK_MS` back;
    new messages are then those after the newest Matrix has)."""


class ChannelCatchUp:
    def __init__(self, kv: KeyValues, log: logging.Logger, limit: int) -> None:
        self._kv = kv
        self._log = log
        self._limit = limit

    async def record(self, portal_id: str) -> DeltaRecord | None:
        raw = await self._kv.kv_get(DELTA_PREFIX + portal_id)
        try:
            return DeltaRecord(**json.loads(raw)) if raw else None
        except (TypeError, ValueError):
            return None  # not written by this version: read from a time

    async def run(
        self,
        key: PortalKey,
        link: TenantLink,
        channel: Any,
        ids: tuple[str, str],
        token: str,
        now: int,
        convert: Converter,
    ) -> list[RemoteEvent]:
        """The channel's missed messages and changes, in order. ``channel``: the SDK's
        request builder of the channel (app token); ``ids``: (team id, channel id)."""
        portal_id = key.remote_id
        record = await self.record(portal_id)
        if record is None:
            start, since, bounded = "", now - LOOKBACK_MS, False
        elif (token and record.token == token) or not record.next:
            # This input converted again (after a crash), or the last round was cut: its start.
            start, since, bounded = record.start, record.since, record.bounded
        else:
            start, since, bounded = record.next, record.at, True
        if start and not on_graph(start, link.graph_url):
            self._log.warning("Channel %s: a stored deltaLink is not Graph's; ignored", portal_id)
            start = ""
        roots, next_link = await self._round(channel, portal_id, link, start, since)
        new: list[tuple[int, list[RemoteEvent]]] = []
        changes: list[tuple[int, list[RemoteEvent]]] = []
        notice: list[RemoteEvent] = []
        if not bounded:  # no link: new top-level messages are those after the newest known
            found = await missed_messages(
                link, portal_id, convert.known, self._limit, None, channel.messages
            )
            for msg in found.messages:
                assert msg.id is not None
                event = await convert.new_message(msg, msg.id, None)
                if event is not None:
                    new.append((timestamp_ms(msg) or 0, [event]))
        fresh: list[tuple[ChatMessage, str, str | None]] = []
        for root in roots:
            assert root.id is not None
            stored = await convert.stored(root.id)
            if stored is not None:
                events = await convert.changes(root, root.id, None, stored, token)
                if events:
                    changes.append((modified_ms(root), events))
            elif bounded and _is_new(root, since) and not await convert.known(root.id):
                fresh.append((root, root.id, None))
            if root.deleted_date_time is None:
                await self._thread(channel, link.graph_url, ids, root,
                                   since if bounded else None, token, convert, fresh, changes)  # fmt: skip
        fresh.sort(key=lambda entry: (timestamp_ms(entry[0]) or 0, entry[0].id or ""))
        if len(fresh) > self._limit:
            skipped, fresh = len(fresh) - self._limit, fresh[-self._limit :]
            notice.append(_skipped_notice(key, skipped, self._limit, fresh[0][0].id or "none"))
        for msg, root_id, reply_id in fresh:
            event = await convert.new_message(msg, root_id, reply_id)
            if event is not None:
                new.append((timestamp_ms(msg) or 0, [event]))
        await self._kv.kv_set(
            DELTA_PREFIX + portal_id,
            json.dumps(asdict(DeltaRecord(token, start, since, next_link, now, bounded))),
        )
        if new or changes:
            self._log.info(
                "Catching up %d message(s) and %d change(s) in channel %s",
                len(new), sum(len(c) for _, c in changes), portal_id,
            )  # fmt: skip
        return notice + in_order(new, changes)

    async def _round(
        self, channel: Any, portal_id: str, link: TenantLink, start: str, since: int
    ) -> tuple[list[ChatMessage], str]:
        """The top-level messages changed since ``start`` (or ``since``), least recently
        changed first, and the deltaLink that ends the round ("" if the walk was cut)."""
        what = f"read the changes of channel {portal_id}"
        delta = channel.messages.delta

        async def follow(url: str) -> Any:
            if not on_graph(url, link.graph_url):
                self._log.warning("Channel %s: Graph gave a link off Graph; not followed", what)
                return None
            return await graph_call(what, delta.with_url(url).get(), reading=True)

        page = None
        if start:
            try:
                page = await follow(start)
            except (PermanentError, NotFound) as err:  # expired: read from the time instead
                self._log.info(
                    "Channel %s: deltaLink refused (%s); reading by time", portal_id, err
                )
        if page is None:
            query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                top=PAGE, filter=f"lastModifiedDateTime gt {graph_time(since - MARGIN_MS)}"
            )
            config = RequestConfiguration(query_parameters=query)
            page = await graph_call(what, delta.get(config), reading=True)
        listed, last = await read_pages(page, follow)
        next_link = str(getattr(last, "odata_delta_link", None) or "")
        if next_link and not on_graph(next_link, link.graph_url):
            self._log.warning("Channel %s: Graph gave a deltaLink off Graph; not kept", portal_id)
            next_link = ""
        return sorted(listed, key=lambda m: (modified_ms(m), m.id or "")), next_link

    async def _thread(
        self,
        channel: Any,
        graph_url: str,
        ids: tuple[str, str],
        root: ChatMessage,
        since: int | None,
        token: str,
        convert: Converter,
        fresh: list[tuple[ChatMessage, str, str | None]],
        changes: list[tuple[int, list[RemoteEvent]]],
    ) -> None:
        """The replies of a changed thread: new ones into ``fresh`` (written after ``since``;
        None: after the newest Matrix has of the thread), changed ones into ``changes``."""
        assert root.id is not None
        replies = await thread_replies(channel, ids, root.id, graph_url, self._log)
        if since is None:
            known = [timestamp_ms(root) or 0] if await convert.known(root.id) else []
            for reply in replies:
                if reply.id and await convert.known(reply.id):
                    known.append(timestamp_ms(reply) or 0)
            if not known:
                return  # a thread Matrix never had: its history stays in Teams
            since = max(known) + MARGIN_MS
        for reply in replies:
            assert reply.id is not None
            stored = await convert.stored(reply.id)
            if stored is not None:
                events = await convert.changes(reply, root.id, reply.id, stored, token)
                if events:
                    changes.append((modified_ms(reply), events))
            elif _is_new(reply, since) and not await convert.known(reply.id):
                fresh.append((reply, root.id, reply.id))


async def thread_replies(
    channel: Any, ids: tuple[str, str], root_id: str, graph_url: str, log: logging.Logger
) -> list[ChatMessage]:
    """Every reply of ``root_id`` that answers it in this channel (others are dropped); none
    if the root was deleted since it was listed (the other threads are still read)."""
    what = f"list the replies of {root_id}"
    replies = channel.messages.by_chat_message_id(root_id).replies
    query = RepliesRequestBuilder.RepliesRequestBuilderGetQueryParameters(top=PAGE)
    try:
        page = await graph_call(
            what, replies.get(RequestConfiguration(query_parameters=query)), reading=True
        )
    except NotFound:
        log.info("Thread %s is gone from Graph; its replies are not read", root_id)
        return []

    async def follow(url: str) -> Any:
        if not on_graph(url, graph_url):
            log.warning("Replies of %s: Graph gave a nextLink off Graph; not followed", root_id)
            return None
        return await graph_call(what, replies.with_url(url).get(), reading=True)

    listed, _ = await read_pages(page, follow)
    kept = []
    for reply in listed:
        where = reply.channel_identity
        elsewhere = where is not None and (
            (where.channel_id and where.channel_id != ids[1])
            or (where.team_id and where.team_id.lower() != ids[0].lower())
        )
        if reply.reply_to_id != root_id or elsewhere:
            log.warning("Dropping reply %s listed under %s: not one of its", reply.id, root_id)
            continue
        kept.append(reply)
    return kept


def _is_new(msg: ChatMessage, since: int) -> bool:
    """Written after ``since`` (less the margin Graph's clock may be off), not deleted, and
    a person's message."""
    written = timestamp_ms(msg)
    return (
        written is not None
        and written > since - MARGIN_MS
        and msg.deleted_date_time is None
        and is_bridgeable(msg)
    )


def _skipped_notice(key: PortalKey, skipped: int, limit: int, oldest: str) -> RemoteMessage:
    text = (
        f"{skipped} older message(s) of this Teams channel were not bridged: after an outage"
        f" the bridge catches up at most {limit}. Read them in Teams."
    )
    return RemoteMessage(
        portal=key,
        id=RemoteMessageID(f"catch-up-skipped:{oldest}"),
        parts=[MessagePart(text=text, notice=True)],
    )
