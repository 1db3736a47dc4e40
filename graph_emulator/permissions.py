"""Which Graph permissions each operation needs, and who may act on which chat.

The table follows the "Permissions" sections of the Graph reference pages for the operations
a Teams bridge uses. What matters most for the bridge is reproduced exactly: sending, editing,
deleting and reacting are delegated-only (an app-only token gets 403, as Graph allows app-only
sends only in migration mode), and a delegated token acts only where its user is a member.
"""

from __future__ import annotations

from dataclasses import dataclass

from .odata import GraphError, forbidden
from .state import Conversation, TokenGrant


@dataclass(frozen=True, slots=True)
class Need:
    """Any one of ``delegated`` (for user tokens) or ``application`` (for app-only tokens)."""

    delegated: tuple[str, ...]
    application: tuple[str, ...]
    # Graph's message for app-only tokens when the operation has no application permission.
    app_refusal: str | None = None


READ_USER = Need(
    ("User.Read", "User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All"),
    ("User.Read.All", "User.ReadBasic.All", "User.ReadWrite.All"),
)
LIST_USERS = Need(
    ("User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All"),
    ("User.Read.All", "User.ReadBasic.All", "User.ReadWrite.All"),
)
READ_CHAT = Need(
    ("Chat.ReadBasic", "Chat.Read", "Chat.ReadWrite"),
    ("Chat.ReadBasic.All", "Chat.Read.All", "Chat.ReadWrite.All"),
)
CREATE_CHAT = Need(("Chat.Create", "Chat.ReadWrite"), ("Chat.Create", "Chat.ReadWrite.All"))
ADD_MEMBER = Need(
    ("ChatMember.ReadWrite", "Chat.ReadWrite"), ("ChatMember.ReadWrite.All", "Chat.ReadWrite.All")
)
READ_MEMBERS = Need(
    ("ChatMember.Read", "ChatMember.ReadWrite", "Chat.ReadBasic", "Chat.Read", "Chat.ReadWrite"),
    (
        "ChatMember.Read.All",
        "ChatMember.ReadWrite.All",
        "Chat.ReadBasic.All",
        "Chat.Read.All",
        "Chat.ReadWrite.All",
    ),
)
READ_CHAT_MESSAGES = Need(("Chat.Read", "Chat.ReadWrite"), ("Chat.Read.All", "Chat.ReadWrite.All"))
SEND_CHAT_MESSAGE = Need(
    ("ChatMessage.Send", "Chat.ReadWrite", "Group.ReadWrite.All"),
    (),
    "Message POST is allowed in application-only context only for import purposes (migration mode).",
)
EDIT_CHAT_MESSAGE = Need(
    ("Chat.ReadWrite",),
    (),
    "Application permissions can only update the policyViolation property of a chat message.",
)
REACT_CHAT_MESSAGE = Need(
    ("Chat.ReadWrite", "ChatMessage.Send"),
    (),
    "Reactions are not supported with application permissions.",
)
DELETE_CHAT_MESSAGE = Need(
    ("Chat.ReadWrite",),
    (),
    "softDelete and undoSoftDelete are not supported with application permissions.",
)
READ_TEAM = Need(
    ("Team.ReadBasic.All", "TeamSettings.Read.All", "Group.Read.All"),
    ("Team.ReadBasic.All", "TeamSettings.Read.All", "Group.Read.All"),
)
READ_CHANNELS = Need(
    ("Channel.ReadBasic.All", "ChannelSettings.Read.All", "Group.Read.All"),
    ("Channel.ReadBasic.All", "ChannelSettings.Read.All", "Group.Read.All"),
)
READ_CHANNEL_MEMBERS = Need(
    ("ChannelMember.Read.All", "ChannelMember.ReadWrite.All"),
    ("ChannelMember.Read.All", "ChannelMember.ReadWrite.All"),
)
READ_CHANNEL_MESSAGES = Need(
    ("ChannelMessage.Read.All", "Group.Read.All"), ("ChannelMessage.Read.All", "Group.Read.All")
)
SEND_CHANNEL_MESSAGE = Need(
    ("ChannelMessage.Send", "Group.ReadWrite.All"),
    (),
    "Message POST is allowed in application-only context only for import purposes (migration mode).",
)
EDIT_CHANNEL_MESSAGE = Need(
    ("ChannelMessage.ReadWrite", "Group.ReadWrite.All"),
    (),
    "Application permissions can only update the policyViolation property of a channel message.",
)
REACT_CHANNEL_MESSAGE = Need(
    ("ChannelMessage.Send",), (), "Reactions are not supported with application permissions."
)

READ_FILES = Need(
    ("Files.Read", "Files.ReadWrite", "Files.Read.All", "Files.ReadWrite.All", "Sites.Read.All"),
    ("Files.Read.All", "Files.ReadWrite.All", "Sites.Read.All"),
)
WRITE_FILES = Need(("Files.ReadWrite", "Files.ReadWrite.All"), ("Files.ReadWrite.All",))

# What the control API grants a new app registration unless told otherwise: everything a
# bridge asks an admin to consent to (Element's and Mattermost's lists).
DEFAULT_APPLICATION_PERMISSIONS = frozenset(
    {
        "Chat.Read.All",
        "Chat.ReadWrite.All",
        "Chat.Create",
        "ChatMember.Read.All",
        "ChannelMessage.Read.All",
        "ChannelMember.Read.All",
        "User.Read.All",
        "Team.ReadBasic.All",
        "Channel.ReadBasic.All",
        "Files.Read.All",
    }
)
DEFAULT_DELEGATED_PERMISSIONS = frozenset(
    {
        "User.Read",
        "User.ReadBasic.All",
        "Chat.Create",
        "Chat.ReadWrite",
        "ChatMessage.Send",
        "ChatMember.Read",
        "ChannelMessage.Send",
        "ChannelMessage.Read.All",
        "ChannelMessage.ReadWrite",
        "Team.ReadBasic.All",
        "Channel.ReadBasic.All",
        "Files.ReadWrite",
        "Files.ReadWrite.All",
    }
)


def require(grant: TokenGrant, need: Need) -> None:
    """Raise Graph's 403 unless the token carries one of the permissions the operation needs."""
    if grant.kind == "delegated":
        if grant.scopes & set(need.delegated):
            return
        raise forbidden(
            "Missing scope permissions on the request. API requires one of "
            f"'{', '.join(need.delegated)}'. Scopes on the request '{', '.join(sorted(grant.scopes))}'"
        )
    if grant.scopes & set(need.application):
        return
    if need.app_refusal is not None:
        raise forbidden(need.app_refusal)
    raise forbidden(
        "Missing role permissions on the request. API requires one of "
        f"'{', '.join(need.application)}'. Roles on the request '{', '.join(sorted(grant.scopes))}'."
    )


def require_member(grant: TokenGrant, conversation: Conversation) -> None:
    """A delegated token sees only conversations its user is in; an app sees its tenant's."""
    if grant.tenant_id != conversation.tenant_id:
        raise forbidden("The caller's tenant does not own this resource.")
    if grant.user_id is not None and grant.user_id not in conversation.members:
        raise forbidden(f"User '{grant.user_id}' is not a member of '{conversation.id}'.")


def require_sender(grant: TokenGrant, sender_id: str | None) -> None:
    """Edits and deletes are the sender's alone."""
    if grant.user_id is None or grant.user_id != sender_id:
        raise forbidden("Only the sender of a message can change or delete it.")


def require_delegated(grant: TokenGrant, message: str) -> str:
    if grant.user_id is None:
        raise GraphError(400, "BadRequest", message)
    return grant.user_id
