"""What people do in Teams: create chats and teams, post, edit, delete and react.

Both doors into the emulator come through here: Graph calls made by the bridge, and the
control API standing in for the Teams client of a person in the tenant. Every change to a
message is announced to the listeners (the notifier), so subscriptions see the same events
whichever side caused them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .odata import bad_request, iso, new_guid, new_thread_hex
from .shapes import reaction_json
from .state import (
    Channel,
    Chat,
    Conversation,
    EmulatorState,
    HostedContent,
    Message,
    Reaction,
    Team,
)

ChangeType = Literal["created", "updated", "deleted"]
ChangeListener = Callable[[ChangeType, Message], None]

_TEMP_IMG = re.compile(r"\.\./hostedContents/([^/\"']+)/\$value")


@dataclass(slots=True)
class NewHostedContent:
    """An inline image as a client uploads it: a temporary id the body refers to, and bytes."""

    temporary_id: str
    content_type: str
    data: bytes


class Teamwork:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.listeners: list[ChangeListener] = []

    def _changed(self, change: ChangeType, message: Message) -> None:
        for listener in self.listeners:
            listener(change, message)

    # -- conversations ----------------------------------------------------------------------

    def create_chat(
        self,
        tenant_id: str,
        chat_type: str,
        member_ids: Sequence[str],
        topic: str | None = None,
    ) -> tuple[Chat, bool]:
        """A new chat, or for oneOnOne the existing chat of that pair (Graph never duplicates
        one); the flag says whether it was created."""
        members = list(dict.fromkeys(member_ids))
        now = self.state.now()
        if chat_type == "oneOnOne":
            if len(members) != 2:
                raise bad_request("A oneOnOne chat must have exactly two members.")
            first, second = sorted(members)
            chat_id = f"19:{first}_{second}@unq.gbl.spaces"
            existing = self.state.chats.get(chat_id)
            if existing is not None:
                return existing, False
            chat = Chat(
                chat_id, tenant_id, now, {m: ["owner"] for m in members}, chat_type="oneOnOne"
            )
        elif chat_type == "group":
            if len(members) < 2:
                raise bad_request("A group chat must have at least two members.")
            chat_id = f"19:{new_thread_hex()}@thread.v2"
            chat = Chat(
                chat_id,
                tenant_id,
                now,
                {m: ["owner"] for m in members},
                chat_type="group",
                topic=topic,
            )
        else:
            raise bad_request(f"Chat type '{chat_type}' is not supported; use oneOnOne or group.")
        self.state.chats[chat.id] = chat
        return chat, True

    def create_team(
        self,
        tenant_id: str,
        display_name: str,
        member_ids: Sequence[str],
        description: str | None = None,
    ) -> Team:
        """A team with its General channel, as Teams creates it."""
        members = {m: ["owner"] for m in dict.fromkeys(member_ids)}
        team = Team(new_guid(), tenant_id, display_name, description, self.state.now(), members)
        self.state.teams[team.id] = team
        self.create_channel(team, "General", None)
        return team

    def create_channel(
        self,
        team: Team,
        display_name: str,
        description: str | None,
        membership_type: Literal["standard", "private", "shared"] = "standard",
        member_ids: Sequence[str] = (),
    ) -> Channel:
        # Standard channels share the team's member table; private and shared ones have a
        # roster of their own (a shared channel's may hold people of other tenants).
        standard = membership_type == "standard"
        channel = Channel(
            f"19:{new_thread_hex()}@thread.tacv2",
            team.tenant_id,
            self.state.now(),
            team.members if standard else {m: ["owner"] for m in dict.fromkeys(member_ids)},
            team_id=team.id,
            display_name=display_name,
            description=description,
            membership_type=membership_type,
        )
        self.state.channels[channel.id] = channel
        team.channel_ids.append(channel.id)
        return channel

    # -- messages ---------------------------------------------------------------------------

    def post_message(
        self,
        conversation: Conversation,
        sender_id: str,
        content: str,
        content_type: Literal["html", "text"] = "html",
        *,
        graph_base: str,
        subject: str | None = None,
        importance: str = "normal",
        attachments: list[dict[str, object]] | None = None,
        mentions: list[dict[str, object]] | None = None,
        hosted: Sequence[NewHostedContent] = (),
        reply_to_id: str | None = None,
    ) -> Message:
        """Store a new message (a channel reply when ``reply_to_id`` is set) and announce it.

        ``graph_base`` is the ``…/v1.0`` URL inline images are rewritten to, as Graph turns
        ``../hostedContents/1/$value`` into an absolute hostedContents URL."""
        now = self.state.now()
        parent: Message | None = None
        if reply_to_id is not None:
            if not isinstance(conversation, Channel):
                raise bad_request("Replies exist only in channels; chats use replyWithQuote.")
            parent = conversation.messages.get(reply_to_id)
            if parent is None:
                raise bad_request(f"Parent message '{reply_to_id}' not found.")
        message = Message(
            id=self.state.new_message_id(),
            conversation=conversation,
            sender_id=sender_id,
            created=now,
            content=content,
            content_type=content_type,
            last_modified=now,
            subject=subject,
            importance=importance,
            reply_to_id=reply_to_id,
            attachments=list(attachments or []),
            mentions=list(mentions or []),
        )
        if hosted:
            message.content = self._store_hosted(message, hosted, graph_base)
        if parent is not None:
            parent.replies[message.id] = message
            parent.last_modified = now  # what channel delta finds a thread with a new reply by
        else:
            conversation.messages[message.id] = message
        conversation.last_updated = now
        self._changed("created", message)
        return message

    def _store_hosted(
        self, message: Message, hosted: Sequence[NewHostedContent], graph_base: str
    ) -> str:
        url_prefix = f"{graph_base}/{message_path(message)}/hostedContents"
        ids: dict[str, str] = {}
        for item in hosted:
            raw = f"id=x_0-emu-{new_thread_hex()},type=1,url=".encode()
            hosted_id = base64.urlsafe_b64encode(raw).decode()
            message.hosted[hosted_id] = HostedContent(hosted_id, item.content_type, item.data)
            ids[item.temporary_id] = hosted_id

        def replace(match: re.Match[str]) -> str:
            hosted_id = ids.get(match.group(1))
            if hosted_id is None:
                return match.group(0)
            return f"{url_prefix}/{hosted_id}/$value"

        return _TEMP_IMG.sub(replace, message.content)

    def edit_message(
        self,
        message: Message,
        *,
        content: str | None = None,
        content_type: Literal["html", "text"] | None = None,
        subject: str | None = None,
        importance: str | None = None,
        attachments: list[dict[str, object]] | None = None,
        mentions: list[dict[str, object]] | None = None,
    ) -> None:
        if message.deleted is not None:
            raise bad_request("A deleted message cannot be edited.")
        now = self.state.now()
        if content is not None:
            message.content = content
        if content_type is not None:
            message.content_type = content_type
        if subject is not None:
            message.subject = subject
        if importance is not None:
            message.importance = importance
        if attachments is not None:
            message.attachments = attachments
        if mentions is not None:
            message.mentions = mentions
        message.last_edited = now
        message.last_modified = now
        self._changed("updated", message)

    def soft_delete(self, message: Message) -> None:
        """Mark deleted (the body is then served empty). Repeating it changes nothing."""
        if message.deleted is not None:
            return
        now = self.state.now()
        message.deleted = now
        message.last_modified = now
        self._changed("deleted", message)

    def undo_soft_delete(self, message: Message) -> None:
        if message.deleted is None:
            return
        message.deleted = None
        message.last_modified = self.state.now()
        self._changed("updated", message)

    def set_reaction(self, message: Message, user_id: str, reaction_type: str) -> None:
        """Add a reaction; a user may hold several different ones, each at most once."""
        if not reaction_type:
            raise bad_request("reactionType is required.")
        if any(
            r.user_id == user_id and r.reaction_type == reaction_type for r in message.reactions
        ):
            return
        now = self.state.now()
        reaction = Reaction(reaction_type, user_id, now)
        message.reactions.append(reaction)
        self._record_history(message, "reactionAdded", reaction)
        self._changed("updated", message)

    def unset_reaction(self, message: Message, user_id: str, reaction_type: str) -> None:
        if not reaction_type:
            raise bad_request("reactionType is required.")
        kept = [
            r
            for r in message.reactions
            if not (r.user_id == user_id and r.reaction_type == reaction_type)
        ]
        if len(kept) == len(message.reactions):
            return
        removed = next(r for r in message.reactions if r not in kept)
        message.reactions = kept
        self._record_history(message, "reactionRemoved", removed)
        self._changed("updated", message)

    def _record_history(self, message: Message, action: str, reaction: Reaction) -> None:
        """Graph keeps reaction changes in ``messageHistory``; lastModified moves, lastEdited not."""
        now = self.state.now()
        message.last_modified = now
        message.history.append(
            {
                "modifiedDateTime": iso(now),
                "actions": action,
                "reaction": reaction_json(self.state, reaction),
            }
        )


def message_path(message: Message) -> str:
    """The Graph path of a message below ``/v1.0``."""
    conversation = message.conversation
    if isinstance(conversation, Channel):
        base = f"teams/{conversation.team_id}/channels/{conversation.id}/messages"
        if message.reply_to_id:
            return f"{base}/{message.reply_to_id}/replies/{message.id}"
        return f"{base}/{message.id}"
    return f"chats/{conversation.id}/messages/{message.id}"
