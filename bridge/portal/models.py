"""Rows of the shared portal store.

Plain data, no behaviour: the :class:`~bridge.portal.store.Store` reads and writes them. Every
shared row carries its ``network`` and a ``metadata`` dict, which the connector owns and the
store keeps as JSON. Connectors use these types (they are part of the connector SDK surface), so
field names follow the table columns exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.core.ids import (
    LoginID,
    NetworkID,
    PartID,
    PortalKey,
    RemoteChatID,
    RemoteMessageID,
    RemoteUserID,
)

NO_RECEIVER = LoginID("")
"""The receiver of portals every Matrix user sees the same way."""

FIRST_PART = PartID("")
"""The part id of the first or only Matrix event of a remote message."""


@dataclass(slots=True)
class Portal:
    """A remote chat and the Matrix room mirroring it (``mxid`` is None until it is created)."""

    network: NetworkID
    remote_id: RemoteChatID
    receiver: LoginID = NO_RECEIVER
    mxid: str | None = None
    name: str | None = None
    topic: str | None = None
    avatar_mxc: str | None = None
    is_direct: bool = False
    relay_login: LoginID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> PortalKey:
        return PortalKey(self.network, self.remote_id, self.receiver)


@dataclass(slots=True)
class Ghost:
    """A remote person and the Matrix puppet user that speaks for them.

    ``avatar_id`` is the remote side's opaque identity of the current avatar (a hash, a URL, a
    photo id); the core re-uploads only when it changes.
    """

    network: NetworkID
    remote_id: RemoteUserID
    mxid: str
    name: str | None = None
    avatar_mxc: str | None = None
    avatar_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Login:
    """One remote account or identity a Matrix user has connected to a network."""

    network: NetworkID
    login_id: LoginID
    user_mxid: str
    remote_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BridgeUser:
    """A Matrix user the bridge knows, with the room where they talk to the bridge bot."""

    mxid: str
    management_room: str | None = None


@dataclass(slots=True, kw_only=True)
class Message:
    """One Matrix event that mirrors (a part of) a remote message, or that was sent to one.

    ``sender_id`` is the remote user id, or the Matrix mxid for messages sent from Matrix.
    ``id`` is the store's row id: None until :meth:`Store.add_message` inserts the row.
    """

    network: NetworkID
    portal_id: RemoteChatID
    receiver: LoginID = NO_RECEIVER
    remote_id: RemoteMessageID
    part_id: PartID = FIRST_PART
    mxid: str
    room_id: str
    sender_id: str
    timestamp: int = 0
    """Milliseconds since the epoch."""
    thread_root_id: RemoteMessageID | None = None
    reply_to_id: RemoteMessageID | None = None
    edit_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    @property
    def portal_key(self) -> PortalKey:
        return PortalKey(self.network, self.portal_id, self.receiver)


@dataclass(slots=True, kw_only=True)
class Reaction:
    """One sender's emoji on one part of a message, and the Matrix event that carries it."""

    network: NetworkID
    portal_id: RemoteChatID
    receiver: LoginID = NO_RECEIVER
    message_id: RemoteMessageID
    part_id: PartID = FIRST_PART
    sender_id: str
    emoji: str
    mxid: str
    room_id: str
    timestamp: int = 0
    """Milliseconds since the epoch."""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def portal_key(self) -> PortalKey:
        return PortalKey(self.network, self.portal_id, self.receiver)


@dataclass(slots=True)
class InboxItem:
    """One thing an appservice transaction delivered, before it is stored.

    ``kind`` is ``pdu``, ``ephemeral``, ``to_device``, ``device_lists``, ``otk_count`` or
    ``fallback_keys``; ``event_id`` is set for PDUs and deduplicates them across transactions.
    """

    kind: str
    event_id: str | None
    room_id: str | None
    payload: dict[str, Any]


@dataclass(slots=True)
class InboxRow:
    """An :class:`InboxItem` accepted durably and not yet handled."""

    id: int
    txn_id: str
    kind: str
    event_id: str | None
    room_id: str | None
    payload: dict[str, Any]
    received_at: int
    """Milliseconds since the epoch."""
    attempts: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class DeadLetter:
    """An inbox item that failed for good, kept for the operator to inspect."""

    id: int
    kind: str
    event_id: str | None
    room_id: str | None
    payload: dict[str, Any]
    error: str
    attempts: int
    parked_at: int
    """Milliseconds since the epoch."""


@dataclass(slots=True)
class RemoteInput:
    """One thing a network sent, as the connector hands it over: ``kind`` and ``payload`` (any
    JSON) are the connector's own, given back to its converter unchanged; ``dedupe_id`` (the
    network's id, if it has one) makes a redelivery of the same input within its portal a
    no-op while the first is still pending."""

    portal: PortalKey
    kind: str
    payload: dict[str, Any]
    dedupe_id: str | None = None
    login: LoginID = LoginID("")
