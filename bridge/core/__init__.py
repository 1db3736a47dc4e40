"""The connector SDK: a connector imports only this module and :mod:`bridge.portal.models`.

The core never imports a connector; connectors are found through the ``pontis.connectors``
entry point group (see :mod:`bridge.core.connector` for the contract).
"""

from bridge.core.connector import (
    Capabilities,
    LoginFlow,
    LoginProcess,
    LoginStep,
    NetworkClient,
    NetworkConnector,
    NetworkInfo,
    SupportsBackfill,
    SupportsEdits,
    SupportsLogout,
    SupportsReactions,
    SupportsReceipts,
    SupportsRedactions,
    SupportsRoomMetadata,
    SupportsTyping,
)
from bridge.core.context import ConnectorContext
from bridge.core.errors import (
    AuthExpired,
    BridgeError,
    NotFound,
    NotSupported,
    PermanentError,
    TransientError,
)
from bridge.core.events import (
    ChatInfo,
    MatrixEdit,
    MatrixEvent,
    MatrixMessage,
    MatrixReaction,
    MatrixReactionRemove,
    MatrixReceipt,
    MatrixRedaction,
    MatrixTyping,
    Media,
    MessagePart,
    RemoteChatInfo,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteReaction,
    RemoteReactionRemove,
    RemoteReceipt,
    RemoteRedaction,
    RemoteTyping,
    UserInfo,
)
from bridge.core.ids import (
    LoginID,
    NetworkID,
    PartID,
    PortalKey,
    RemoteChatID,
    RemoteMessageID,
    RemoteUserID,
    escape_localpart,
    unescape_localpart,
)

__all__ = [
    "AuthExpired", "BridgeError", "Capabilities", "ChatInfo", "ConnectorContext", "LoginFlow",
    "LoginID", "LoginProcess", "LoginStep", "MatrixEdit", "MatrixEvent", "MatrixMessage",
    "MatrixReaction", "MatrixReactionRemove", "MatrixReceipt", "MatrixRedaction", "MatrixTyping",
    "Media", "MessagePart", "NetworkClient", "NetworkConnector", "NetworkID", "NetworkInfo",
    "NotFound", "NotSupported", "PartID", "PermanentError", "PortalKey", "RemoteChatID",
    "RemoteChatInfo", "RemoteEdit", "RemoteEvent", "RemoteMessage", "RemoteMessageID",
    "RemoteReaction", "RemoteReactionRemove", "RemoteReceipt", "RemoteRedaction", "RemoteTyping",
    "RemoteUserID", "SupportsBackfill", "SupportsEdits", "SupportsLogout", "SupportsReactions",
    "SupportsReceipts", "SupportsRedactions", "SupportsRoomMetadata", "SupportsTyping",
    "TransientError", "UserInfo", "escape_localpart", "unescape_localpart",
]  # fmt: skip
