"""The connector contract: what a network must provide and what it may provide.

A connector is found through the ``pontis.connectors`` entry point group; the entry point names
a class (or factory) that the core calls with no arguments to get a :class:`NetworkConnector`.

Lifetime, as the core drives it::

    connector = factory()                      # no I/O
    problems = ctx.config problems…            # the core validates ``connectors.<id>`` against
                                               # ``connector.example_config`` before start
    await connector.start(ctx)                 # may open listeners; may call ctx.add_client()
    client = await connector.load_login(login) # once per stored login of this network
    await client.connect()                     # never raises; reports state through ctx
    …events flow…
    await client.disconnect(); await connector.stop()

Matrix → network: the core calls ``client.handle_matrix_*`` from the portal's ordered queue, one
event at a time per portal. A method may raise the errors in :mod:`bridge.core.errors`; it should
not catch and hide them. Optional behaviour is declared by implementing one of the ``Supports*``
protocols below; the core checks once when the client is loaded and answers an unsupported action
with a notice to the sender instead of calling anything.

Network → Matrix: the connector calls :meth:`ConnectorContext.queue_remote_event` and never
talks to the homeserver itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from bridge.core.errors import NotSupported
from bridge.core.events import (
    ChatInfo,
    MatrixEdit,
    MatrixKick,
    MatrixMembership,
    MatrixMessage,
    MatrixPresence,
    MatrixProfile,
    MatrixReaction,
    MatrixReactionRemove,
    MatrixReceipt,
    MatrixRedaction,
    MatrixTyping,
    RemoteEvent,
    RemoteMessage,
    UserInfo,
)
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteMessageID, RemoteUserID

if TYPE_CHECKING:
    from mautrix.util.async_db import Database

    from bridge.core.context import ConnectorContext
    from bridge.portal.models import Login, Portal, RemoteInput


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkInfo:
    """Static facts about a network, used for ``m.bridge`` state, ghost ids and help texts."""

    id: NetworkID
    """Also the ghost prefix (``@<id>_…``) and the ``network`` column of the store."""
    display_name: str
    url: str = ""
    icon_mxc: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What the network can carry, beyond plain text. Declared once; read by the core.

    Methods for edits, reactions, etc. are detected from the ``Supports*`` protocols; these
    flags cover features that travel inside ordinary messages.
    """

    replies: bool = False
    threads: bool = False
    media: bool = False
    html: bool = False
    max_text_length: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginFlow:
    id: str
    name: str
    description: str


@dataclass(slots=True, kw_only=True)
class LoginStep:
    """One step of a login, shown to the user in the management room.

    ``user_input``: ask the user for ``instructions``; their next message is the answer.
    ``complete``: ``login`` is the new login, already stored by the core.
    """

    kind: Literal["user_input", "complete"]
    instructions: str
    login: Login | None = None
    secret: bool = False
    """The answer is a password or token: the core redacts the user's reply after reading it."""


class LoginProcess(Protocol):
    async def submit(self, answer: str | None) -> LoginStep:
        """Advance the login. Called first with ``None``, then with each answer.

        Raise :class:`bridge.core.errors.BridgeError` with a ``user_message`` to reject an
        answer; the process stays at the same step.
        """
        ...

    async def cancel(self) -> None: ...


# --- required -----------------------------------------------------------------------------------


class NetworkClient(Protocol):
    """One remote account or identity (a Teams user, the XMPP component, the mail gateway)."""

    login_id: LoginID

    async def connect(self) -> None:
        """Open the connection. Never raises: failures are reported with
        ``ctx.set_client_state`` and retried by the client itself."""
        ...

    async def disconnect(self) -> None: ...

    async def handle_matrix_message(self, msg: MatrixMessage) -> RemoteMessageID:
        """Send ``msg`` to the network and return the remote id it got there.

        Must be idempotent on ``msg.event_id``: after a crash the core may call it again with
        the same event, and the network should not show the message twice (use the event id as
        the network's idempotency key / origin id where it has one).
        """
        ...

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        """Metadata of a chat, called before its portal room is created. May do I/O."""
        ...

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        """Profile of a remote person, called before their ghost is first used. May do I/O."""
        ...


class NetworkConnector(Protocol):
    """One per network per process.

    Optional class attribute ``kv_markers: tuple[str, ...]``: prefixes of ``ctx.store.kv_*``
    keys that are markers (ids seen, edit times), not state; housekeeping deletes those not
    written for ``bridge.retention.marker_days``. Keys without such a prefix are kept for ever.
    """

    info: NetworkInfo
    example_config: str
    """YAML of the connector's section under ``connectors.<id>``: defaults and types. The
    core validates the operator's section against it and merges missing keys in."""

    def capabilities(self) -> Capabilities:
        """Must not do I/O."""
        ...

    async def start(self, ctx: ConnectorContext) -> None:
        """Start listeners and background work. Clients that serve every Matrix user (the XMPP
        component, the mail gateway) are registered here with ``ctx.add_client``."""
        ...

    async def stop(self) -> None: ...

    def login_flows(self) -> list[LoginFlow]:
        """Ways a Matrix user can log in with a personal account. Empty if none."""
        ...

    async def start_login(self, user_mxid: str, flow_id: str) -> LoginProcess: ...

    async def load_login(self, login: Login) -> NetworkClient:
        """Build the client for a stored login. Must be fast and must not connect."""
        ...


@runtime_checkable
class SupportsCheck(Protocol):
    """Optional on a :class:`NetworkConnector`: used by ``pontis check``."""

    async def check(self, section: dict[str, Any]) -> list[str]:
        """Try the upstream with the validated ``connectors.<id>`` section and return one line
        per problem (``connectors.xmpp.component.secret: the XMPP server refused it``). Must not
        keep any connection open."""
        ...


@runtime_checkable
class SupportsPolicyDomain(Protocol):
    """Optional on a :class:`NetworkConnector` whose chat ids do not carry the name the
    federation policy knows their remote side by (a Teams chat's tenant). Without it the core
    uses the domain of the chat id (a MUC's service, a mail address's domain). Such a connector
    checks the policy itself where it starts a chat with a person (``start_direct_chat``) and
    where a user bridges a chat or a group (``bridge_room``, ``group_chats``): the core does
    not, since only the connector can tell whose the person or chat is."""

    async def policy_domain(self, portal: PortalKey) -> str:
        """The ``remote`` name of ``bridge.federation`` rules that covers this chat."""
        ...


@runtime_checkable
class SupportsCli(Protocol):
    """Optional on a :class:`NetworkConnector`: ``pontis <network> …`` on the command line, for
    the operator on the bridge's host (e.g. ``pontis email record <sha256>``). The core opens the
    database (it works while the bridge runs), records the call in the audit log, and calls
    :meth:`run_cli` on a connector that was never started."""

    async def run_cli(self, args: list[str], section: dict[str, Any], database: Database) -> int:
        """Run the command ``args`` with the validated ``connectors.<id>`` section; the exit
        status. Print results to stdout and problems to stderr, one line each."""
        ...


@dataclass(frozen=True, slots=True)
class Contact:
    """Someone who receives a portal's new conversations (see :class:`SupportsContacts`)."""

    remote_id: RemoteUserID
    stopped: str | None = None
    """Why nothing reaches them any more (their mail bounced), or None. Adding them again
    clears it."""


@runtime_checkable
class SupportsContacts(Protocol):
    """Optional on a :class:`NetworkConnector` whose chats have no membership of their own on
    the network (a mail address of the bridge): the room's members choose who receives its new
    conversations. The core offers ``<network> contacts <room> list|add|remove <id>`` and
    ``/portals/{room_id}/contacts`` in the provisioning API, after checking that the user is in
    the room (or an admin of it); the connector only validates and stores."""

    async def list_contacts(self, portal: PortalKey) -> list[Contact]: ...

    async def add_contact(self, portal: PortalKey, remote_id: str) -> Contact:
        """Add (or re-enable) ``remote_id``, which the user typed and must be validated here:
        raise :class:`bridge.core.errors.BridgeError` with a ``user_message`` to refuse."""
        ...

    async def remove_contact(self, portal: PortalKey, remote_id: str) -> bool:
        """Whether ``remote_id`` was a contact. Mail already sent is not recalled."""
        ...


# --- optional capabilities, checked with isinstance() once per client ---------------------------


@runtime_checkable
class SupportsEdits(Protocol):
    async def handle_matrix_edit(self, edit: MatrixEdit) -> None: ...


@runtime_checkable
class SupportsRedactions(Protocol):
    async def handle_matrix_redaction(self, redaction: MatrixRedaction) -> None: ...


@runtime_checkable
class SupportsReactions(Protocol):
    async def handle_matrix_reaction(self, reaction: MatrixReaction) -> None: ...

    async def handle_matrix_reaction_remove(self, removal: MatrixReactionRemove) -> None: ...


@runtime_checkable
class SupportsTyping(Protocol):
    async def handle_matrix_typing(self, typing: MatrixTyping) -> None: ...


@runtime_checkable
class SupportsReceipts(Protocol):
    async def handle_matrix_receipt(self, receipt: MatrixReceipt) -> None: ...


@runtime_checkable
class SupportsMembership(Protocol):
    async def handle_matrix_membership(self, change: MatrixMembership) -> None:
        """A Matrix user joined or left a portal room (networks that show members, like MUCs).
        Called from the portal's queue for the user's own join or leave only: a kick or ban of
        a Matrix user (the bridge bot's, when the network removed them) never comes here, so
        it cannot echo back. ``change.inviter`` says whose invite a join accepted.

        A connector whose class sets ``guards_joins = True`` is also called for the join of a
        user who may not use the bridge (``change.may_use_bridge`` is False), so that a chat
        only its members may read can remove them at once; a relay-level or unpermitted
        user's leave never comes here."""
        ...


@runtime_checkable
class SupportsProfileChanges(Protocol):
    async def handle_matrix_profile(self, change: MatrixProfile) -> None:
        """A Matrix member of a portal room changed their display name or avatar (networks
        that show Matrix users' profiles, like XMPP presence and vCards). Called from the
        portal's queue, once per portal room the user is in; not for relay-level users, ghosts
        or the bot. Called besides :meth:`SupportsMembership.handle_matrix_membership`, which
        also sees the ``join``. Must not fail the portal for an unreachable avatar: log it."""
        ...


@runtime_checkable
class SupportsPresence(Protocol):
    async def handle_matrix_presence(self, presence: MatrixPresence) -> None:
        """A Matrix user's presence changed. Only where the homeserver has presence on and
        sends ``m.presence`` to the bridge (MSC2409 ephemeral events; Synapse sends those of
        users who share a room with the bridge's users). Called on each shared client (no
        login of a user), outside any portal queue; not for ghosts, the bot or relay-level
        users. Must not raise for a user the network does not know: ignore them."""
        ...


@runtime_checkable
class SupportsKicks(Protocol):
    async def handle_matrix_kick(self, kick: MatrixKick) -> None:
        """A Matrix moderator kicked or banned a ghost from a portal room: remove (or ban) that
        person in the remote chat, or raise with a ``user_message`` saying why it could not."""
        ...


@runtime_checkable
class SupportsPowerLevels(Protocol):
    async def handle_matrix_power_levels(
        self, portal: Portal, levels: dict[str, Any], creators: list[str]
    ) -> None:
        """The portal room's power levels changed (the homeserver let the sender change them):
        ``levels`` is the new ``m.room.power_levels`` content, ``creators`` have every power."""
        ...


@runtime_checkable
class SupportsRoomMetadata(Protocol):
    async def handle_matrix_room_info(
        self, portal: Portal, info: ChatInfo, *, sender: str, sender_name: str
    ) -> None:
        """Matrix user ``sender`` changed the room's topic (``info.topic``; the homeserver let
        them). Not called for the bridge's own changes."""
        ...


@runtime_checkable
class SupportsBackfill(Protocol):
    async def fetch_messages(
        self, portal: Portal, after: RemoteMessageID | None, limit: int
    ) -> list[RemoteMessage]:
        """Messages newer than ``after`` (oldest first), for catching up after downtime."""
        ...


@runtime_checkable
class SupportsDirectChats(Protocol):
    async def start_direct_chat(self, user: RemoteUserID, matrix_user: str) -> PortalKey:
        """``matrix_user`` invited the ghost of ``user`` to a room: start a direct chat.

        Return the key of the DM portal; the core maps the inviting room to it and the ghost
        accepts. Raise :class:`bridge.core.errors.BridgeError` to refuse; the ghost then rejects
        the invite with the error's ``user_message``.
        """
        ...


@runtime_checkable
class SupportsInvites(Protocol):
    async def handle_matrix_invite(
        self, portal: Portal, inviter: str, user: RemoteUserID
    ) -> PortalKey | None:
        """``inviter`` invited the ghost of ``user`` into the portal room: add that person to
        the remote chat (email: they receive the room's mail from now on), and return None.

        A network that cannot add people to this chat but made a new one with them and its
        members (Teams: a one-on-one chat is never widened, a group chat is created instead)
        returns the new chat's key. The old room's history is never shown to the people
        added: if anything was bridged into it, the core opens a new room for the new chat
        (``get_chat_info`` of the key gives its members; the inviter is always invited), the
        ghost declines the old room's invite and the inviter gets a notice linking the new
        room; the old portal and its room stay as they were. Only a room where nothing was
        bridged yet (several people invited into a new room at once: the first invite made it
        a direct chat) becomes the new chat's portal, and the old chat is left without a room.

        Raise :class:`bridge.core.errors.BridgeError` to refuse; the ghost then rejects the
        invite with the error's ``user_message``.
        """
        ...


@runtime_checkable
class SupportsRoomBridging(Protocol):
    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        """``matrix_user`` ran ``bridge <network> <remote_id>`` in an existing Matrix room.

        Join or subscribe to the remote chat and return its portal key and metadata. ``remote_id``
        is what the user typed and must be validated here.
        """
        ...


@dataclass(frozen=True, slots=True)
class GroupChat:
    """One chat of a remote group (a Teams team's channel), as ``group_chats`` lists it."""

    key: PortalKey
    """The portal key ``bridge_room(bridge_id, …)`` will answer with."""
    bridge_id: str
    """What ``bridge_room`` takes for this chat (a Teams channel link)."""
    name: str
    """The chat's name, for the user's answer."""


@runtime_checkable
class SupportsGroupBridging(Protocol):
    """Optional on a client that has :class:`SupportsRoomBridging` and whose chats come in
    groups its users belong to (a Teams team and its channels): ``bridge-team <network>
    <group>`` bridges the chats of a group, each in a new invite-only room."""

    async def group_chats(self, group: str, matrix_user: str) -> list[GroupChat]:
        """The chats of ``group`` (what the user typed: validate it here) that ``matrix_user``
        may read, in the network's order. Refuse, with a ``user_message`` and no side effect,
        anyone the network would not show the group (not a member, another organisation, a
        federation policy that keeps them apart). Must only read: the core then calls
        ``bridge_room(chat.bridge_id, matrix_user)`` for each chat it bridges (a chat that
        already has a portal is not asked for), and that call does the joining or
        subscribing, and checks again."""
        ...


@runtime_checkable
class SupportsLogout(Protocol):
    async def logout_remote(self) -> None:
        """Invalidate the remote session (called by ``logout``; local state is removed anyway)."""
        ...


@runtime_checkable
class SupportsRemoteInput(Protocol):
    async def convert_remote(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        """Turn one stored input (what the connector gave ``ctx.accept_remote``) into the remote
        events it means. Called inside the portal's ordered queue, after everything before it
        in the portal was sent, and again after a restart if Matrix did not have it all yet: it
        must give the same events (same ids) every time. It may do I/O (download a file, read
        the message from the network). Raise ``TransientError`` when the network is away (the
        portal waits), ``PermanentError`` when the input can never be converted."""
        ...


@runtime_checkable
class SupportsHealthDetail(Protocol):
    """Optional on a :class:`NetworkClient` whose connection has parts an operator must see one
    by one (the XMPP hub's components, one per agency domain): ``/_pontis/health`` shows what it
    returns under ``client_details["<network>/<login or shared>"]``, beside the single
    connected-or-not of ``clients``. The core adds nothing to it and reads nothing from it."""

    def health_detail(self) -> dict[str, Any]:
        """JSON-ready detail of the connection as it is now: which part is up, since when, the
        last error, when the next attempt comes. Called at each health request, so it must not
        do I/O or block; it must never hold a secret (a password, a token), not even inside an
        error text."""
        ...


@dataclass(slots=True)
class ClientFeatures:
    """The optional capabilities one client implements, found once when it is loaded."""

    edits: bool = False
    redactions: bool = False
    reactions: bool = False
    typing: bool = False
    receipts: bool = False
    room_metadata: bool = False
    backfill: bool = False
    direct_chats: bool = False
    room_bridging: bool = False
    membership: bool = False
    profile: bool = False
    presence: bool = False
    kicks: bool = False
    power_levels: bool = False
    invites: bool = False
    remote_input: bool = False

    @classmethod
    def of(cls, client: NetworkClient) -> ClientFeatures:
        return cls(
            edits=isinstance(client, SupportsEdits),
            redactions=isinstance(client, SupportsRedactions),
            reactions=isinstance(client, SupportsReactions),
            typing=isinstance(client, SupportsTyping),
            receipts=isinstance(client, SupportsReceipts),
            room_metadata=isinstance(client, SupportsRoomMetadata),
            backfill=isinstance(client, SupportsBackfill),
            direct_chats=isinstance(client, SupportsDirectChats),
            room_bridging=isinstance(client, SupportsRoomBridging),
            membership=isinstance(client, SupportsMembership),
            profile=isinstance(client, SupportsProfileChanges),
            presence=isinstance(client, SupportsPresence),
            kicks=isinstance(client, SupportsKicks),
            power_levels=isinstance(client, SupportsPowerLevels),
            invites=isinstance(client, SupportsInvites),
            remote_input=isinstance(client, SupportsRemoteInput),
        )


def connector_named(
    connectors: Mapping[NetworkID, NetworkConnector], network: str
) -> NetworkConnector:
    """The connector of ``network``; a :class:`NotSupported` naming the networks there are if
    there is none, for the user who typed it."""
    connector = connectors.get(NetworkID(network))
    if connector is None:
        known = ", ".join(connectors) or "none"
        raise NotSupported(
            f"unknown network {network}",
            user_message=f"There is no network `{network}` here. Networks: {known}.",
        )
    return connector
