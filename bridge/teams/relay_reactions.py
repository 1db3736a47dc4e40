"""Reactions of Matrix users without a Teams login, shown by the relay account as a message.

Graph sets a reaction only for the signed-in user (``setReaction`` has no "on behalf of"), so
a reaction of someone the relay account speaks for would be the relay's own, and anonymous.
Instead the relay posts a short reply-like message that quotes the message reacted to, under
the same first line as every relayed message (``External · via Matrix``, the Matrix ID, the
quoted display name: :func:`bridge.teams.from_matrix.relayed`). Taking the reaction back in
Matrix deletes that message. The key is shown as text: cut and escaped (anyone may react with
a paragraph of HTML).

A reaction flood would be a flood of Teams messages, so each chat shows at most
:data:`PER_WINDOW` of them per :data:`WINDOW`, and each Matrix user at most
:data:`PER_SENDER` of those (one user alone cannot use up the chat's share); the first refused
one tells its sender, the others that minute are dropped quietly (the room is not flooded with
notices either).

The posted message is the bridge's own: :func:`is_relay_post` lets the inbound path and the
catch-up tell it from a message someone wrote with the relay account.
"""

from __future__ import annotations

import contextlib
import html
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from msgraph import GraphServiceClient

from bridge.core import (
    MatrixReaction,
    MatrixReactionRemove,
    NotFound,
    NotSupported,
    PermanentError,
)
from bridge.portal.models import Message
from bridge.teams.channel_outbound import channel_message, thread_root
from bridge.teams.errors import graph_call
from bridge.teams.from_matrix import EXTERNAL, chat_message, relayed, shown_text
from bridge.teams.ids import parse_channel
from bridge.teams.network import TeamsNetwork
from bridge.teams.to_matrix import html_to_text

WINDOW = 60.0
"""Seconds over which a chat's relayed reactions are counted."""
PER_WINDOW = 5
PER_SENDER = 2
"""Of a chat's :data:`PER_WINDOW`, what one Matrix user may use."""
TRACKED = 10_000
"""Counters kept before the idle ones are dropped."""
KEY_LIMIT = 16
"""Characters of a reaction key shown (an emoji is one to a few)."""
SNIPPET_LIMIT = 80


class KeyValues(Protocol):
    async def kv_get(self, key: str) -> str | None: ...


def reaction_html(sender_name: str, sender_mxid: str, key: str, snippet: str) -> str:
    """The relay's message for a reaction: who (as every relayed message says it), which
    key, and the start of the message reacted to; everything taken from Matrix is escaped."""
    shown_key = html.escape(shown_text(key, KEY_LIMIT))
    line = f"reacted {shown_key}"
    if snippet:
        line += f" to: “{html.escape(shown_text(snippet, SNIPPET_LIMIT))}”"
    return relayed(sender_name, sender_mxid, f"<p>{line}</p>")


async def is_relay_post(kv: KeyValues, chat_id: str, msg_id: str) -> bool:
    """Whether ``msg_id`` is a reaction the relay posted for a Matrix user."""
    return await kv.kv_get(relay_post_key(chat_id, msg_id)) is not None


class RelayReactions:
    def __init__(self, net: TeamsNetwork, clock: Callable[[], float] = time.monotonic) -> None:
        self.net = net
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        """Per chat, and per chat and sender, when relayed reactions of the last
        :data:`WINDOW` were posted."""
        self._told: dict[str, float] = {}
        """Per chat and sender, when they were last told the limit was reached."""

    async def react(self, graph: GraphServiceClient, reaction: MatrixReaction) -> None:
        """Post ``reaction`` as a message of the relay account (``graph``)."""
        kv = self.net.ctx.store
        chat_id = reaction.portal.remote_id
        marker = _reaction_marker(reaction.event_id)
        if await kv.kv_get(marker) is not None:
            return  # posted before a crash: the same event is offered again
        if not self._admit(chat_id, reaction.relayed_sender or reaction.sender):
            return
        # In a channel, a reply in the target's thread (the thread is the quote).
        root = None
        if parse_channel(chat_id) is not None:
            root = await thread_root(kv, reaction.target) or reaction.target.remote_id
        snippet = await self._snippet(chat_id, reaction.target, root)
        mxid = reaction.relayed_sender or reaction.sender
        name = reaction.relayed_sender_name if reaction.relayed else reaction.sender_name
        text = reaction_html(name, mxid, reaction.emoji, snippet)
        body = chat_message(text, reply_to=reaction.target, reply_text=snippet)
        post = graph.chats.by_chat_id(chat_id).messages.post
        if root is not None:
            body = chat_message(text)
            post = channel_message(graph, chat_id, root, None).replies.post
        target = reaction.target.remote_id
        sent = await graph_call(
            f"post a reaction to {target} in {chat_id}", post(body), delegated=True
        )
        if sent is None or not sent.id:
            raise PermanentError(f"Graph posted the reaction to {target} without an id")
        self.net.sent.add(sent.id)
        await kv.kv_set(relay_post_key(chat_id, sent.id), reaction.event_id)
        await kv.kv_set(marker, json.dumps({"chat": chat_id, "message": sent.id, "root": root}))

    async def unreact(self, graph: GraphServiceClient, removal: MatrixReactionRemove) -> None:
        """Delete the message that showed the reaction (none if it was not shown)."""
        kv = self.net.ctx.store
        marker = _reaction_marker(removal.target.mxid)
        raw = await kv.kv_get(marker)
        if raw is None:
            return
        posted = json.loads(raw)
        chat_id, msg_id = str(posted["chat"]), str(posted["message"])
        item = graph.chats.by_chat_id(chat_id).messages.by_chat_message_id(msg_id)
        if posted.get("root"):
            item = channel_message(graph, chat_id, msg_id, str(posted["root"]))
        with contextlib.suppress(NotFound):  # deleted in Teams already
            await graph_call(
                f"delete the reaction {msg_id}", item.soft_delete.post(), delegated=True
            )
        await kv.kv_delete(marker)

    def _admit(self, chat_id: str, sender: str) -> bool:
        """Whether one more reaction of ``sender`` may be shown in the chat now; raises for the
        first one refused in a window (its sender is told), False for the others."""
        now = self._clock()
        if len(self._recent) > TRACKED:  # only windows still open matter
            self._recent = {k: q for k, q in self._recent.items() if q and q[-1] > now - WINDOW}
            self._told = {k: t for k, t in self._told.items() if t > now - WINDOW}
        mine = self._window(f"{chat_id}\n{sender}", now)
        chat = self._window(chat_id, now)
        if len(mine) < PER_SENDER and len(chat) < PER_WINDOW:
            mine.append(now)
            chat.append(now)
            return True
        self.net.ctx.log.info(
            "Chat %s: relayed reaction of %s not shown (too many this minute)", chat_id, sender
        )
        told = f"{chat_id}\n{sender}"
        if self._told.get(told, -WINDOW) > now - WINDOW:
            return False
        self._told[told] = now
        raise NotSupported(
            "too many relayed reactions",
            user_message=f"Teams shows at most {PER_WINDOW} reactions a minute from people"
            " without a Teams login in this chat, so this one (and any more this minute) was not"
            " shown. Try again in a minute, or send `login teams` to react as yourself.",
        )

    def _window(self, key: str, now: float) -> deque[float]:
        recent = self._recent.setdefault(key, deque())
        while recent and recent[0] <= now - WINDOW:
            recent.popleft()
        return recent

    async def _snippet(self, chat_id: str, target: Message, root: str | None) -> str:
        """The start of the message reacted to, as text ("" if Graph cannot say)."""
        try:
            link = await self.net.tenant_for_chat(chat_id)
            item = link.app.chats.by_chat_id(chat_id).messages.by_chat_message_id(target.remote_id)
            if root is not None:
                item = channel_message(link.app, chat_id, target.remote_id, root)
            msg = await graph_call(f"read {target.remote_id}", item.get(), reading=True)
        except Exception as err:  # the reaction is shown all the same, with its quote card
            self.net.ctx.log.debug("No snippet of %s: %s", target.remote_id, err)
            return ""
        body = msg.body.content if msg is not None and msg.body is not None else None
        text = html_to_text(body or "")
        if text.startswith(EXTERNAL):  # a relayed message: its text, not its marker line
            text = text.partition("\n")[2]
        return shown_text(text, SNIPPET_LIMIT)


def _reaction_marker(event_id: str) -> str:
    return f"relay-reaction:{event_id}"


def relay_post_key(chat_id: str, msg_id: str) -> str:
    """The key that marks ``msg_id`` as a reaction the relay posted."""
    return f"relay-reaction-post:{chat_id}:{msg_id}"
