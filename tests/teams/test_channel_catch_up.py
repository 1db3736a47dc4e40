"""The channel catch-up's walk (bridge.teams.channel_catch_up) against hostile Graph answers.

Graph is played by a fake of the SDK's request builders that records every URL the bridge
asked for (each would carry the tenant's token): a nextLink that goes round in circles, a
deltaLink or nextLink on another host, a reply listed under a root of another channel, and a
crash between reading a round and the core having its events. The comparison and conversion
are played by :class:`Convert`, which says what it was asked to bridge.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from msgraph.generated.models.channel_identity import ChannelIdentity
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_from_identity_set import ChatMessageFromIdentitySet
from msgraph.generated.models.identity import Identity

from bridge.core import PortalKey, RemoteChatID, RemoteEvent, RemoteMessage, RemoteMessageID
from bridge.portal.models import Message as StoredMessage
from bridge.teams.channel_catch_up import DELTA_PREFIX, ChannelCatchUp
from bridge.teams.graph_links import on_graph
from bridge.teams.ids import NETWORK

LOG = logging.getLogger("test.teams.channel_catch_up")
GRAPH = "https://graph.example/v1.0"
TEAM, CHANNEL = "7c1f0000-0000-0000-0000-000000000001", "19:abc@thread.tacv2"
PORTAL = f"channel:{TEAM}:{CHANNEL}"
KEY = PortalKey(NETWORK, RemoteChatID(PORTAL))
NOW = 1_800_000_000_000
ALEX = "0a1b2c3d-0000-0000-0000-00000000a1e7"


def msg(msg_id: str, written: int, *, modified: int | None = None, **extra: Any) -> ChatMessage:
    return ChatMessage(
        id=msg_id,
        created_date_time=datetime.fromtimestamp(written / 1000, UTC),
        last_modified_date_time=datetime.fromtimestamp((modified or written) / 1000, UTC),
        from_=ChatMessageFromIdentitySet(user=Identity(id=ALEX, display_name="Alex")),
        **extra,
    )


def page(*values: ChatMessage, next_link: str = "", delta_link: str = "") -> Any:
    return SimpleNamespace(
        value=list(values), odata_next_link=next_link or None, odata_delta_link=delta_link or None
    )


@dataclass
class Graph:
    """The SDK's builders for one channel: ``messages.delta`` and ``…/{id}/replies``."""

    first_delta: Any = None
    listed: Any = None
    """The channel's message list (newest first), as ``GET …/messages`` pages it."""
    links: dict[str, Any] = field(default_factory=dict)
    replies: dict[str, Any] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    @property
    def messages(self) -> Any:
        graph = self

        class Builder:
            def __init__(self, name: str, first: Any) -> None:
                self.name, self.first = name, first

            async def _get(self, url: str, answer: Any) -> Any:
                graph.asked.append(url)
                if isinstance(answer, BaseException):
                    raise answer
                return answer

            def get(self, request_configuration: Any = None) -> Any:
                query = request_configuration.query_parameters if request_configuration else None
                return self._get(f"{self.name}?filter={getattr(query, 'filter', None)}", self.first)

            def with_url(self, raw_url: str) -> Any:
                return SimpleNamespace(get=lambda: self._get(raw_url, graph.links.get(raw_url)))

        listing = Builder("messages", self.listed or page())
        return SimpleNamespace(
            get=listing.get,
            with_url=listing.with_url,
            delta=Builder("delta", self.first_delta),
            by_chat_message_id=lambda root: SimpleNamespace(
                replies=Builder(f"replies of {root}", self.replies.get(root, page()))
            ),
        )


class KV:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def kv_get(self, key: str) -> str | None:
        return self.values.get(key)

    async def kv_set(self, key: str, value: str) -> None:
        self.values[key] = value


@dataclass
class Convert:
    """Matrix has the messages in ``on_matrix``; new ones come back as a RemoteMessage naming
    them, changes to known ones as one naming the change."""

    on_matrix: set[str] = field(default_factory=set)

    async def stored(self, msg_id: str) -> StoredMessage | None:
        if msg_id not in self.on_matrix:
            return None
        return StoredMessage(
            network=NETWORK, portal_id=RemoteChatID(PORTAL), remote_id=RemoteMessageID(msg_id),
            mxid=f"$m{msg_id}", room_id="!r", sender_id=ALEX,
        )  # fmt: skip

    async def known(self, msg_id: str) -> bool:
        return msg_id in self.on_matrix

    async def new_message(
        self, msg: ChatMessage, root_id: str, reply_id: str | None
    ) -> RemoteEvent | None:
        name = f"new {reply_id} in {root_id}" if reply_id else f"new {root_id}"
        return RemoteMessage(portal=KEY, id=RemoteMessageID(name))

    async def changes(
        self, msg: ChatMessage, root_id: str, reply_id: str | None, stored: Any, token: str
    ) -> list[RemoteEvent]:
        if msg.deleted_date_time is None and msg.last_edited_date_time is None:
            return []
        return [RemoteMessage(portal=KEY, id=RemoteMessageID(f"changed {reply_id or root_id}"))]


def shown(events: list[RemoteEvent]) -> list[str]:
    return [str(e.id) for e in events if isinstance(e, RemoteMessage)]


async def run(graph: Graph, kv: KV, convert: Convert, token: str = "t1") -> list[str]:
    catch_up = ChannelCatchUp(kv, LOG, limit=50)
    link: Any = SimpleNamespace(graph_url=GRAPH)
    channel = SimpleNamespace(messages=graph.messages)
    events = await catch_up.run(KEY, link, channel, (TEAM, CHANNEL), token, NOW, convert)
    return shown(events)


def record(kv: KV, **fields: Any) -> None:
    base = {"token": "old", "start": "", "since": NOW - 60_000, "next": "", "at": NOW - 60_000}
    kv.values[DELTA_PREFIX + PORTAL] = json.dumps({**base, **fields})


def test_only_links_on_the_tenants_graph_are_followed() -> None:
    assert on_graph(f"{GRAPH}/teams/x/channels/y/messages/delta()?$deltatoken=1", GRAPH)
    for foreign in (
        "https://evil.example/v1.0/teams/x/messages/delta()",
        "https://graph.example.evil.example/v1.0/x",
        "https://graph.example:8443/v1.0/x",
        "http://graph.example/v1.0/x",
        "https://user:pw@graph.example/v1.0/x",
        "https://graph.example/beta/x",
        "https://graph.example/v1.0evil/x",
        "not a url at all",
    ):
        assert not on_graph(foreign, GRAPH), foreign


async def test_a_stored_deltalink_on_another_host_is_never_followed() -> None:
    """A deltaLink in the store that is not Graph's (written by anyone with the database, or
    an older bug) would get the tenant's token: the round is read by time instead."""
    kv, convert = KV(), Convert({"1"})
    evil = "https://evil.example/v1.0/teams/x/channels/y/messages/delta()?$deltatoken=1"
    record(kv, next=evil)
    graph = Graph(first_delta=page(msg("2", NOW - 1000), delta_link=f"{GRAPH}/d?$deltatoken=9"))
    assert await run(graph, kv, convert) == ["new 2"]
    assert not any("evil" in url for url in graph.asked), graph.asked
    assert json.loads(kv.values[DELTA_PREFIX + PORTAL])["next"] == f"{GRAPH}/d?$deltatoken=9"


async def test_links_graph_gives_to_another_host_are_not_followed_nor_kept() -> None:
    kv, convert = KV(), Convert({"1"})
    record(kv, next=f"{GRAPH}/d?$deltatoken=1")
    graph = Graph(links={
        f"{GRAPH}/d?$deltatoken=1": page(msg("2", NOW - 1000), next_link="https://evil.example/p2"),
        "https://evil.example/p2": page(msg("3", NOW - 500), delta_link="https://evil.example/d"),
    })  # fmt: skip
    assert await run(graph, kv, convert) == ["new 2"]
    assert "https://evil.example/p2" not in graph.asked
    # The walk was cut: the next catch-up reads the same round again (nothing lost).
    assert json.loads(kv.values[DELTA_PREFIX + PORTAL])["next"] == ""
    graph.asked.clear()
    await run(graph, kv, convert, token="t2")
    assert graph.asked[0] == f"{GRAPH}/d?$deltatoken=1"


async def test_a_delta_nextlink_going_round_in_circles_ends() -> None:
    kv, convert = KV(), Convert({"1"})
    loop = f"{GRAPH}/d?$skiptoken=loop"
    record(kv, next=f"{GRAPH}/d?$deltatoken=1")
    graph = Graph(links={
        f"{GRAPH}/d?$deltatoken=1": page(msg("2", NOW - 1000), next_link=loop),
        loop: page(msg("2", NOW - 1000), next_link=loop),
    })  # fmt: skip
    assert await run(graph, kv, convert) == ["new 2"]
    assert graph.asked.count(loop) == 1


async def test_a_reply_listed_under_a_root_it_does_not_answer_is_dropped() -> None:
    """Replies of root 1 as Graph lists them: its own, one naming another root, and one of
    another channel; only its own is bridged."""
    kv, convert = KV(), Convert({"1"})
    record(kv, next=f"{GRAPH}/d?$deltatoken=1")
    other = ChannelIdentity(team_id=TEAM, channel_id="19:other@thread.tacv2")
    graph = Graph(
        links={f"{GRAPH}/d?$deltatoken=1": page(msg("1", NOW - 9_000_000, modified=NOW - 900))},
        replies={"1": page(
            msg("11", NOW - 900, reply_to_id="1"),
            msg("12", NOW - 800, reply_to_id="5"),
            msg("13", NOW - 700, reply_to_id="1", channel_identity=other),
        )},
    )  # fmt: skip
    assert await run(graph, kv, convert) == ["new 11 in 1"]


async def test_a_round_read_again_after_a_crash_starts_where_it_did() -> None:
    """The same catch-up input converted again (the process died before Matrix had its
    events) reads from the link it read first; the next input from the round's end."""
    kv, convert = KV(), Convert({"1"})
    record(kv, next=f"{GRAPH}/d?$deltatoken=1")
    graph = Graph(links={
        f"{GRAPH}/d?$deltatoken=1": page(msg("2", NOW - 1000), delta_link=f"{GRAPH}/d?$deltatoken=2"),
        f"{GRAPH}/d?$deltatoken=2": page(delta_link=f"{GRAPH}/d?$deltatoken=3"),
    })  # fmt: skip
    assert await run(graph, kv, convert, token="t1") == ["new 2"]
    assert await run(graph, kv, convert, token="t1") == ["new 2"]  # again: nothing lost
    convert.on_matrix.add("2")
    assert await run(graph, kv, convert, token="t2") == []
    rounds = [url for url in graph.asked if "deltatoken" in url]
    assert rounds == [f"{GRAPH}/d?$deltatoken=1"] * 2 + [f"{GRAPH}/d?$deltatoken=2"]


async def test_new_threads_replies_and_changes_come_in_the_order_they_happened() -> None:
    kv, convert = KV(), Convert({"1", "2"})
    record(kv, next=f"{GRAPH}/d?$deltatoken=1")
    edited = datetime.fromtimestamp((NOW - 300) / 1000, UTC)
    graph = Graph(
        links={f"{GRAPH}/d?$deltatoken=1": page(
            msg("2", NOW - 9_000_000, modified=NOW - 300, last_edited_date_time=edited),
            msg("1", NOW - 9_000_000, modified=NOW - 600),
            msg("3", NOW - 1000),
            delta_link=f"{GRAPH}/d?$deltatoken=2",
        )},
        replies={"1": page(msg("11", NOW - 600, reply_to_id="1"))},
    )  # fmt: skip
    assert await run(graph, kv, convert) == ["new 3", "new 11 in 1", "changed 2"]


async def test_a_channel_without_a_link_is_read_from_its_newest_message_on_matrix() -> None:
    """No deltaLink yet (bridged by an older version): a thread started before the newest
    message Matrix has is history, not missed, also when the same input is converted again
    after a crash; what came after it arrives."""
    kv, convert = KV(), Convert({"2"})
    old_thread = msg("1", NOW - 7_200_000, modified=NOW - 900)
    graph = Graph(
        first_delta=page(old_thread, msg("3", NOW - 500), delta_link=f"{GRAPH}/d?$deltatoken=1"),
        listed=page(msg("3", NOW - 500), msg("2", NOW - 3_600_000), old_thread),
        replies={"1": page(msg("11", NOW - 900, reply_to_id="1"))},
    )
    assert await run(graph, kv, convert, token="t1") == ["new 3"]
    assert await run(graph, kv, convert, token="t1") == ["new 3"]
    assert "filter=lastModifiedDateTime gt" in graph.asked[0]


async def test_a_thread_deleted_while_its_root_was_listed_does_not_stop_the_others() -> None:
    """Root 1 is listed as changed but deleted before its replies are read (Graph: 404):
    the other thread's new reply and the new message still arrive."""
    from kiota_abstractions.api_error import APIError

    gone = APIError()
    gone.response_status_code = 404
    kv, convert = KV(), Convert({"1", "2"})
    record(kv, next=f"{GRAPH}/d?$deltatoken=1")
    graph = Graph(
        links={f"{GRAPH}/d?$deltatoken=1": page(
            msg("1", NOW - 9_000_000, modified=NOW - 700),
            msg("2", NOW - 9_000_000, modified=NOW - 600),
            msg("3", NOW - 1000),
            delta_link=f"{GRAPH}/d?$deltatoken=2",
        )},
        replies={"1": gone, "2": page(msg("21", NOW - 600, reply_to_id="2"))},
    )  # fmt: skip
    assert await run(graph, kv, convert) == ["new 3", "new 21 in 2"]
