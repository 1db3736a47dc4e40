"""Matrix edits, redactions and reactions in team channels: which Graph message they act on.

A channel message is either a thread's root (``…/messages/{id}``) or a reply under one
(``…/messages/{root}/replies/{id}``); Graph has no path for a reply by its id alone. The root
of a message the bridge has is its ``thread_root_id`` (bridged from Teams, or sent from a
Matrix thread); a message sent from Matrix as a plain reply went to Teams as a reply in the
thread of the message it answered (:func:`bridge.teams.channels.send_to_channel`), so its
root is that message's root.

Edits and deletions act as the Matrix user's own account (``PATCH`` and ``softDelete`` take the
delegated ``ChannelMessage.ReadWrite``), or as the relay account for its own posts; reactions
of a logged-in user are ``setReaction``/``unsetReaction`` (``ChannelMessage.Send``), those of
others the relay's text (:mod:`bridge.teams.relay_reactions`).
"""

from __future__ import annotations

from typing import Any, Protocol

from msgraph import GraphServiceClient

from bridge.core import MatrixEdit, PortalKey, RemoteChatID, RemoteMessageID
from bridge.portal.models import Message
from bridge.teams.channels import mention_resolver
from bridge.teams.from_matrix import as_posted, body_html, edited_message
from bridge.teams.ids import parse_channel
from bridge.teams.mentions import teams_mentions
from bridge.teams.network import TeamsNetwork


class Messages(Protocol):
    async def get_message(self, portal_id: RemoteChatID, remote_id: Any) -> Message | None: ...


def channel_message(graph: GraphServiceClient, portal_id: str, msg_id: str, root: str | None) -> Any:  # fmt: skip
    """The SDK's builder for ``msg_id`` of the channel: a root, or a reply under ``root``."""
    parsed = parse_channel(portal_id)
    assert parsed is not None, portal_id
    channel = graph.teams.by_team_id(parsed[0]).channels.by_channel_id(parsed[1])
    if root is None or root == msg_id:
        return channel.messages.by_chat_message_id(msg_id)
    return channel.messages.by_chat_message_id(root).replies.by_chat_message_id1(msg_id)


async def thread_root(store: Messages, target: Message) -> str | None:
    """The Teams root of the thread ``target`` is a reply in (None: it is a root)."""
    if target.thread_root_id:
        return str(target.thread_root_id)
    if target.reply_to_id and target.sender_id.startswith("@"):
        answered = await store.get_message(target.portal_id, target.reply_to_id)
        if answered is None:
            return str(target.reply_to_id)
        return str(answered.thread_root_id or answered.remote_id)
    return None


async def target_item(net: TeamsNetwork, graph: GraphServiceClient, target: Message) -> Any:
    """The builder of the channel message a Matrix event acts on."""
    root = await thread_root(net.ctx.store, target)
    return channel_message(graph, target.portal_id, target.remote_id, root)


async def item_by_id(
    net: TeamsNetwork, graph: GraphServiceClient, portal: PortalKey, msg_id: str
) -> Any:
    """The builder of a channel message known by its id alone (a reaction's target)."""
    target = await net.ctx.store.get_message(portal.remote_id, RemoteMessageID(msg_id))
    if target is None:
        return channel_message(graph, portal.remote_id, msg_id, None)
    return await target_item(net, graph, target)


async def edit_call(
    net: TeamsNetwork, graph: GraphServiceClient, relay: bool, edit: MatrixEdit
) -> tuple[str, Any]:
    """(what, the SDK call) that edits the channel message ``edit`` replaces."""
    portal_id = edit.portal.remote_id
    content = body_html(edit.body, edit.html)
    content, mentions = teams_mentions(content, await mention_resolver(net, portal_id, content))
    content = as_posted(edit, content, relay=relay)
    item = await target_item(net, graph, edit.target)
    return f"edit {edit.target.remote_id} in {portal_id}", item.patch(
        edited_message(content, mentions)
    )
