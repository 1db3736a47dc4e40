"""Identifiers shared by the core and the connectors.

Remote ids are opaque to the core: it stores and compares them, never parses them. Each
connector builds and parses its own ids in its ``ids.py``. The core owns only the mapping from a
remote user id to a ghost Matrix ID, because that mapping is an operator-facing contract
(DESIGN §3) and must be identical for every connector: the escaping is here, the names built
from it (per-connector templates) in :mod:`bridge.core.ghost_names`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NewType

NetworkID = NewType("NetworkID", str)
"""The connector's id, e.g. ``"xmpp"``. It is the ``network`` column of every shared table and
by default the prefix of its ghosts (``@xmpp_…``, see :mod:`bridge.core.ghost_names`)."""

RemoteChatID = NewType("RemoteChatID", str)
"""A chat on the remote network (a Teams chat id, a MUC JID, a mail thread token)."""

RemoteUserID = NewType("RemoteUserID", str)
"""A person on the remote network (an AAD object id, a bare JID, a mail address)."""

RemoteMessageID = NewType("RemoteMessageID", str)
"""A message on the remote network, unique within its chat."""

PartID = NewType("PartID", str)
"""One Matrix event of a remote message that maps to several (text + attachments). ``""`` for
the first or only part."""

LoginID = NewType("LoginID", str)
"""One remote account or identity a connector holds (a Teams user, the XMPP component)."""


@dataclass(frozen=True, slots=True)
class PortalKey:
    """Identifies a portal: one remote chat, optionally seen through one login.

    ``receiver`` is empty for chats that every Matrix user sees the same way (a MUC, a Teams
    channel). A connector sets it to a login id when the same remote chat must become separate
    Matrix rooms per login (a Teams 1:1 chat seen by each of its two bridged members).
    """

    network: NetworkID
    remote_id: RemoteChatID
    receiver: LoginID = LoginID("")

    def __str__(self) -> str:
        suffix = f"/{self.receiver}" if self.receiver else ""
        return f"{self.network}:{self.remote_id}{suffix}"


_LOCALPART_SAFE = re.compile(r"[a-z0-9._\-/]")


def escape_localpart(value: str) -> str:
    """Escape ``value`` into Matrix user-id localpart characters.

    Follows the Matrix spec's suggestion (DESIGN §3): lower-case, then every byte of a character
    outside ``a-z0-9._-/`` becomes ``=xx``. Lower-casing first means ids that differ only by case
    share a ghost, which is right for JIDs and mail addresses (case-insensitive) and for AAD ids
    (lower-case uuids).
    """
    out: list[str] = []
    for char in value.lower():
        if _LOCALPART_SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"={byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def unescape_localpart(value: str) -> str:
    """Reverse :func:`escape_localpart` (up to case). Raises ``ValueError`` on bad escapes."""
    raw = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "=":
            pair = value[i + 1 : i + 3]
            if len(pair) != 2 or not re.fullmatch(r"[0-9a-f]{2}", pair):
                raise ValueError(f"bad escape at offset {i} in {value!r}")
            raw.append(int(pair, 16))
            i += 3
        else:
            raw.extend(char.encode("utf-8"))
            i += 1
    return raw.decode("utf-8")
