"""What crosses the core/connector boundary.

``Remote*`` events travel network → Matrix: a connector builds one and hands it to
:meth:`ConnectorContext.queue_remote_event`. The core then finds or creates the portal and the
sender's ghost and converts the event *inside the portal's ordered queue*, so a reply can find the
message it answers and media can be fetched without racing later events.

``Matrix*`` events travel Matrix → network: the core has already resolved the portal, the stored
messages that a reply, edit, reaction or redaction points at, and downloaded any media, so a
connector's ``handle_matrix_*`` method only converts and sends.

Fields that describe something (``ChatInfo``, ``UserInfo``) are partial updates: ``None`` means
"unchanged / unknown", and the core diffs the rest against the store before touching Matrix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.core.ids import LoginID, PartID, PortalKey, RemoteMessageID, RemoteUserID

if TYPE_CHECKING:  # bridge.portal.models imports bridge.core.ids; keep the import graph acyclic
    from bridge.portal.models import Message, Portal, Reaction


@dataclass(slots=True, kw_only=True)
class Media:
    """A file. Exactly one of ``data`` or ``fetch`` is set; ``fetch`` runs lazily in the queue."""

    mimetype: str = "application/octet-stream"
    filename: str = "file"
    size: int | None = None
    data: bytes | None = None
    fetch: Callable[[], Awaitable[bytes]] | None = None
    avatar_id: str | None = None
    """For avatars: an opaque id of this picture on the remote side, so an unchanged avatar is
    neither downloaded nor uploaded again."""

    async def read(self) -> bytes:
        if self.data is None:
            if self.fetch is None:
                raise ValueError(f"media {self.filename!r} has neither data nor fetch")
            self.data = await self.fetch()
        return self.data


@dataclass(slots=True, kw_only=True)
class UserInfo:
    """A remote person's profile, as a partial update."""

    name: str | None = None
    avatar: Media | None = None
    avatar_removed: bool = False
    """The person has no avatar any more (``avatar`` None alone means "unchanged or unknown"):
    the core clears the ghost's avatar if it shows one, once. A connector sets it only when the
    network said so, never because it could not ask."""


@dataclass(slots=True, kw_only=True)
class ChatInfo:
    """A remote chat's metadata, as a partial update."""

    name: str | None = None
    topic: str | None = None
    avatar: Media | None = None
    is_direct: bool | None = None
    matrix_users: list[str] | None = None
    """Matrix users who belong in the portal (invited when it is created or when they appear)."""
    members: list[RemoteUserID] | None = None
    """Remote members whose ghosts should join the portal."""
    space: SpaceInfo | None = None
    """The group the chat belongs to (a Teams team): the core keeps one Matrix space per
    ``SpaceInfo.key`` and adds the portal room to it (:mod:`bridge.core.spaces`)."""
    members_only: bool = False
    """Only the chat's own members may read it (a Teams channel is its team's): the ``bridge``
    command then refuses a room that anyone may join or that already holds other people than
    the one bridging it, the bot and ghosts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceInfo:
    """A remote group of chats, shown in Matrix as a space of their portal rooms."""

    key: str
    """Stable and unique within the network (``team:<id>``); never shown."""
    name: str
    topic: str | None = None


INLINE_URL = "mxc://inline.pontis.invalid/"
"""Placeholder prefix for :attr:`MessagePart.inline` images: an ``mxc://`` URL, so the HTML
sanitiser keeps it, on a server name that cannot exist."""


@dataclass(slots=True, kw_only=True)
class MessagePart:
    """One Matrix event of a remote message. ``html`` is sanitised by the core."""

    part_id: PartID = PartID("")
    text: str = ""
    html: str | None = None
    notice: bool = False
    emote: bool = False
    media: Media | None = None
    inline: dict[str, Media] = field(default_factory=dict)
    """Images ``html`` shows in place, by key: the html has ``<img src="{INLINE_URL}<key>">``
    (see :data:`INLINE_URL`) and the core uploads each image and writes its ``mxc://`` URL
    there. In an encrypted room an image in the formatted body would be an unencrypted upload,
    so there each image follows as an (encrypted) file event of its own instead."""
    fallback: MessagePart | None = None
    """What is shown instead when ``media`` cannot reach Matrix for good (a permanent error:
    over the homeserver's upload limit, grown past the connector's limit while read): a notice
    with the file's link, say. Without one, such a failure fails the whole message."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Extra keys for the event's content, namespaced by the connector (``fi.pontis.email.…``):
    metadata a client or an auditor reads (the hash of the mail's record). They cannot replace
    the keys the core sets (body, msgtype, formatted body, file)."""


# --- network → Matrix -------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class RemoteEvent:
    """Base of every network → Matrix event."""

    portal: PortalKey
    sender: RemoteUserID | None = None
    """Who did it; ``None`` for events of the chat itself (info changes)."""
    login: LoginID = LoginID("")
    """The login that saw the event; ``""`` is the connector's shared client."""
    timestamp: int | None = None
    """Milliseconds since the epoch, when the network says; the core uses it for ``?ts=``."""
    sender_info: UserInfo | None = None
    """Profile of the sender if the event already carries it (saves a ``get_user_info`` call)."""
    chat_info: ChatInfo | None = None
    """Chat metadata if the event already carries it (saves a ``get_chat_info`` call)."""
    create_portal: bool = True
    """Whether this event may create the portal room. Edits and receipts for unknown chats may not."""


@dataclass(slots=True, kw_only=True)
class RemoteMessage(RemoteEvent):
    id: RemoteMessageID
    parts: list[MessagePart] = field(default_factory=list)
    reply_to: RemoteMessageID | None = None
    thread_root: RemoteMessageID | None = None


@dataclass(slots=True, kw_only=True)
class RemoteEdit(RemoteEvent):
    target: RemoteMessageID
    parts: list[MessagePart] = field(default_factory=list)
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemoteRedaction(RemoteEvent):
    target: RemoteMessageID
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemoteReaction(RemoteEvent):
    target: RemoteMessageID
    emoji: str
    target_part: PartID = PartID("")
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemoteReactionRemove(RemoteEvent):
    target: RemoteMessageID
    emoji: str
    target_part: PartID = PartID("")
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemoteReactionSync(RemoteEvent):
    """The sender's complete set of reactions on a message (XMPP sends reactions this way);
    the core adds and removes Matrix reactions to match."""

    target: RemoteMessageID
    emojis: set[str]
    target_part: PartID = PartID("")
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemoteTyping(RemoteEvent):
    typing: bool = True
    timeout_ms: int = 30_000
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemoteReceipt(RemoteEvent):
    up_to: RemoteMessageID
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemoteKick(RemoteEvent):
    """A moderator on the network removed ``target`` from the chat (``ban``: for good). The
    core's bot kicks or bans ``target``'s ghost from the portal room; ``sender`` stays None."""

    target: RemoteUserID
    ban: bool = False
    reason: str = ""
    leave: bool = False
    """The ghost leaves by itself, with ``reason``, instead of being kicked: for networks that
    say only that someone is no longer in the chat (no bot power needed in the room)."""
    matrix_user: str = ""
    """Set when ``target`` is a Matrix user's own network account (a login): the bot kicks that
    Matrix user, who no longer belongs in the chat, instead of a ghost."""
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemotePowerLevel(RemoteEvent):
    """``target``'s rights on the network changed: the core's bot gives their ghost power level
    ``level`` in the portal room (if it may; nothing is sent when the level is already that)."""

    target: RemoteUserID
    level: int
    create_portal: bool = False


@dataclass(slots=True, kw_only=True)
class RemoteChatInfo(RemoteEvent):
    info: ChatInfo


# --- Matrix → network -------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class MatrixEvent:
    """Base of every Matrix → network event. ``sender_name`` is the sender's display name."""

    portal: Portal
    event_id: str
    sender: str
    sender_name: str
    timestamp: int
    relayed: bool = False
    """Relay mode (:mod:`bridge.core.permissions`): ``sender`` is the bot, and the text already
    starts with the relayed user's name; a connector must not put another name in front.
    A connector whose class sets ``marks_relayed_senders = True`` gets the text unchanged and
    says who wrote it itself, from ``relayed_sender`` and ``relayed_sender_name``."""
    relayed_sender: str = ""
    """Relay mode: the Matrix ID of the user who wrote it (``sender`` is then the bot)."""
    relayed_sender_name: str = ""
    """Relay mode: that user's display name in the room."""


@dataclass(slots=True, kw_only=True)
class MatrixMessage(MatrixEvent):
    body: str
    html: str | None = None
    msgtype: str = "m.text"
    media: Media | None = None
    reply_to: Message | None = None
    reply_to_text: str | None = None
    """Plain text of the message replied to, for networks that quote it as a fallback."""
    thread_root: Message | None = None


@dataclass(slots=True, kw_only=True)
class MatrixEdit(MatrixEvent):
    target: Message
    body: str
    html: str | None = None


@dataclass(slots=True, kw_only=True)
class MatrixRedaction(MatrixEvent):
    target: Message


@dataclass(slots=True, kw_only=True)
class MatrixReaction(MatrixEvent):
    target: Message
    emoji: str


@dataclass(slots=True, kw_only=True)
class MatrixReactionRemove(MatrixEvent):
    target: Reaction


@dataclass(slots=True, kw_only=True)
class MatrixMembership(MatrixEvent):
    """``sender`` joined or left the portal room (``membership`` is ``join`` or ``leave``)."""

    membership: str
    inviter: str = ""
    """On a ``join`` that accepted an invite: the Matrix user who sent the invite (the
    homeserver's ``unsigned.prev_sender``), else ``""``. Networks where someone already in the
    chat must add the new member act as them."""
    may_use_bridge: bool = True
    """False: ``sender`` may not use the bridge (no permission, or the ``relay`` level). Such a
    change comes only for a ``join``, and only to a connector whose class sets
    ``guards_joins = True``, so it can remove a reader the chat does not allow (a Teams private
    channel's room); it must never show them on the network."""


@dataclass(slots=True, kw_only=True)
class MatrixProfile(MatrixEvent):
    """``sender``, a member of the portal room before and after, changed their display name or
    avatar there (a ``join`` → ``join`` member event). The homeserver sends one per room the
    user is in, so the connector hears it once per portal. ``sender_name`` is the new name."""

    avatar_url: str | None = None
    """The new ``mxc://`` avatar, or None if they have none now."""
    avatar_changed: bool = False
    name_changed: bool = False


@dataclass(slots=True, kw_only=True)
class MatrixKick(MatrixEvent):
    """``sender`` (a room moderator: the homeserver checked) kicked or banned ``target``, the
    ghost of a remote person, from the portal room."""

    target: str
    ban: bool = False
    reason: str = ""
    unban: bool = False
    """A ban lifted (ban → leave): ``target`` may come back; nobody is removed. ``relayed``
    here means ``sender`` is a relay-level moderator, no member on the network."""


@dataclass(slots=True, kw_only=True)
class MatrixTyping:
    portal: Portal
    sender: str
    typing: bool


@dataclass(slots=True, kw_only=True)
class MatrixPresence:
    """A Matrix user's presence, as their homeserver reports it (``m.presence``)."""

    sender: str
    presence: str
    """``online``, ``unavailable`` (idle, away) or ``offline``."""
    status: str | None = None


@dataclass(slots=True, kw_only=True)
class MatrixReceipt(MatrixEvent):
    """``sender`` read everything up to and including ``target``."""

    target: Message
