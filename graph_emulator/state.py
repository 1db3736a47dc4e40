"""The emulated tenant directory and Teams data, held in memory.

Plain records and lookups only: what happens when something changes (notifications,
permission checks) lives in ``teamwork``, ``permissions`` and ``notifier``. One
:class:`EmulatorState` is one emulated Microsoft cloud; ``reset`` empties it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeVar

from .odata import new_guid, not_found

if TYPE_CHECKING:
    from .drives import Drive

_T = TypeVar("_T")


class Clock:
    """Emulated 'now'. Tests advance it to expire tokens and subscriptions without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass(slots=True)
class Tenant:
    id: str
    display_name: str
    domain: str
    # The Microsoft cloud the tenant lives in (``global``, ``usgov``, ``usgovdod``, ``china``):
    # its tokens are for that cloud's Graph (``clouds.graph_resource``), and only those pass.
    cloud: str = "global"


@dataclass(slots=True)
class App:
    """An app registration with its service principal in the same tenant."""

    client_id: str
    tenant_id: str
    display_name: str
    client_secret: str
    application_permissions: set[str]
    delegated_permissions: set[str]
    # Public clients may use ROPC and the device code flow without a secret.
    public_client: bool = True
    service_principal_id: str = field(default_factory=new_guid)
    # Certificates (PEM) whose keys may sign a client assertion instead of the secret.
    certificates: list[str] = field(default_factory=list)


@dataclass(slots=True)
class User:
    id: str
    tenant_id: str
    display_name: str
    user_principal_name: str
    mail: str | None
    password: str
    given_name: str | None = None
    surname: str | None = None
    job_title: str | None = None
    photo: Photo | None = None


@dataclass(slots=True)
class Photo:
    """A user's profile photo: ``/users/{id}/photo`` and its ``$value``."""

    content_type: str
    data: bytes
    etag: str


@dataclass(slots=True)
class Reaction:
    reaction_type: str
    user_id: str
    created: datetime


@dataclass(slots=True)
class HostedContent:
    id: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class Conversation:
    """What holds messages: a chat or a channel. Members are user ids with roles."""

    id: str
    tenant_id: str
    created: datetime
    members: dict[str, list[str]]
    messages: dict[str, Message] = field(default_factory=dict)
    last_updated: datetime | None = None


@dataclass(slots=True)
class Chat(Conversation):
    chat_type: Literal["oneOnOne", "group"] = "group"
    topic: str | None = None


@dataclass(slots=True)
class Team:
    id: str
    tenant_id: str
    display_name: str
    description: str | None
    created: datetime
    members: dict[str, list[str]]
    channel_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Channel(Conversation):
    team_id: str = ""
    display_name: str = ""
    description: str | None = None
    membership_type: Literal["standard", "private", "shared"] = "standard"
    """A standard channel shares its team's member table; a private or shared one has its own."""


@dataclass(slots=True)
class Message:
    id: str
    conversation: Conversation
    sender_id: str | None
    created: datetime
    content: str
    content_type: Literal["html", "text"]
    last_modified: datetime
    last_edited: datetime | None = None
    deleted: datetime | None = None
    subject: str | None = None
    importance: str = "normal"
    message_type: str = "message"
    reply_to_id: str | None = None
    attachments: list[dict[str, object]] = field(default_factory=list)
    mentions: list[dict[str, object]] = field(default_factory=list)
    reactions: list[Reaction] = field(default_factory=list)
    history: list[dict[str, object]] = field(default_factory=list)
    hosted: dict[str, HostedContent] = field(default_factory=dict)
    event_detail: dict[str, object] | None = None
    # Channel root messages keep their replies here, not in conversation.messages.
    replies: dict[str, Message] = field(default_factory=dict)


GrantKind = Literal["delegated", "application"]


@dataclass(slots=True)
class TokenGrant:
    """What an access token stands for; the token string itself is only a lookup key."""

    token: str
    tenant_id: str
    client_id: str
    user_id: str | None
    scopes: frozenset[str]
    expires: datetime
    # The token's ``aud``: the Graph of the cloud it was issued for.
    audience: str = "https://graph.microsoft.com"

    @property
    def kind(self) -> GrantKind:
        return "delegated" if self.user_id else "application"


@dataclass(slots=True)
class RefreshGrant:
    tenant_id: str
    client_id: str
    user_id: str
    scopes: frozenset[str]
    expires: datetime


@dataclass(slots=True)
class DeviceCode:
    device_code: str
    user_code: str
    tenant_id: str
    client_id: str
    scopes: tuple[str, ...]
    expires: datetime
    approved_user_id: str | None = None
    declined: bool = False


@dataclass(slots=True)
class Subscription:
    id: str
    tenant_id: str
    application_id: str
    creator_id: str
    resource: str
    change_types: frozenset[str]
    notification_url: str
    expires: datetime
    client_state: str | None
    lifecycle_url: str | None
    include_resource_data: bool
    latest_tls: str
    # The grant that created or last reauthorized it: its user scopes the notifications.
    user_id: str | None
    # After reauthorizationRequired, notifications wait here until the app reauthorizes.
    paused: bool = False
    held: list[dict[str, object]] = field(default_factory=list)


class EmulatorState:
    """Every record of one emulated cloud, with lookups that raise Graph's 404."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._last_message_ms = 0
        self.reset()

    def reset(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[str, App] = {}
        self.users: dict[str, User] = {}
        self.chats: dict[str, Chat] = {}
        self.teams: dict[str, Team] = {}
        self.channels: dict[str, Channel] = {}
        self.tokens: dict[str, TokenGrant] = {}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.device_codes: dict[str, DeviceCode] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.drives: dict[str, Drive] = {}
        self.clock.offset = timedelta()

    def now(self) -> datetime:
        return self.clock.now()

    def new_message_id(self) -> str:
        """Graph message ids are the creation time in ms; kept strictly increasing here."""
        ms = int(self.now().timestamp() * 1000)
        self._last_message_ms = max(ms, self._last_message_ms + 1)
        return str(self._last_message_ms)

    def tenant(self, tenant_id: str) -> Tenant | None:
        """A tenant by id or by its domain name, as the identity platform accepts both."""
        if tenant_id in self.tenants:
            return self.tenants[tenant_id]
        lowered = tenant_id.lower()
        return next((t for t in self.tenants.values() if t.domain.lower() == lowered), None)

    def find_user(self, key: str, tenant_id: str | None = None) -> User | None:
        """A user by object id or user principal name (case-insensitive, as Entra does)."""
        user = self.users.get(key.lower())
        if user is None:
            lowered = key.lower()
            user = next(
                (u for u in self.users.values() if u.user_principal_name.lower() == lowered), None
            )
        if user is not None and tenant_id is not None and user.tenant_id != tenant_id:
            return None
        return user

    def user(self, key: str, tenant_id: str | None = None) -> User:
        user = self.find_user(key, tenant_id)
        if user is None:
            raise not_found(
                f"User '{key}' does not exist or one of its queried reference-property objects are not present."
            )
        return user

    def chat(self, chat_id: str) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None:
            raise not_found(f"Chat '{chat_id}' not found.")
        return chat

    def team(self, team_id: str) -> Team:
        team = self.teams.get(team_id)
        if team is None:
            raise not_found(f"No team found with Group Id {team_id}")
        return team

    def channel(self, team_id: str, channel_id: str) -> Channel:
        team = self.team(team_id)
        channel = self.channels.get(channel_id)
        if channel is None or channel.team_id != team.id:
            raise not_found(f"Channel '{channel_id}' not found in team '{team_id}'.")
        return channel

    def live_subscriptions(self) -> list[Subscription]:
        now = self.now()
        return [s for s in self.subscriptions.values() if s.expires > now]

    def sweep(self) -> list[Subscription]:
        """Drop what has expired; returns the subscriptions that ended (Graph says nothing)."""
        now = self.now()
        ended = [s for s in self.subscriptions.values() if s.expires <= now]
        for sub in ended:
            del self.subscriptions[sub.id]
        self._drop_where(self.tokens, lambda g: g.expires <= now - timedelta(hours=1))
        self._drop_where(self.refresh_tokens, lambda g: g.expires <= now)
        self._drop_where(self.device_codes, lambda d: d.expires <= now - timedelta(minutes=5))
        return ended

    @staticmethod
    def _drop_where(table: dict[str, _T], expired: Callable[[_T], bool]) -> None:
        for key in [k for k, v in table.items() if expired(v)]:
            del table[key]


def find_message(
    conversation: Conversation, message_id: str, reply_id: str | None = None
) -> Message:
    """A message (or a channel reply, given ``reply_id``) or Graph's 404."""
    message = conversation.messages.get(message_id)
    if message is not None and reply_id is not None:
        message = message.replies.get(reply_id)
    if message is None:
        raise not_found(f"Message '{reply_id or message_id}' not found.")
    return message
