"""XMPP ids as the store sees them.

- A DM portal is the XMPP user's bare JID, seen by one Matrix user: ``receiver`` is that
  user's mxid, so each Matrix user gets their own room with the same XMPP contact.
- A MUC portal is the room's bare JID with no receiver.
- A remote user is a bare JID, or ``room@muc/nick`` for a MUC occupant whose real JID the room
  does not reveal.
- A message id is the sender's ``origin-id`` (XEP-0359), else the stanza ``id``; MUC references
  that use the room's ``stanza-id`` are translated through :func:`stanza_id_key`.
"""

from __future__ import annotations

import hashlib

from slixmpp import Message

from bridge.core import LoginID, NetworkID, PortalKey, RemoteChatID, RemoteMessageID

NETWORK = NetworkID("xmpp")


def dm_key(xmpp_user: str, matrix_user: str) -> PortalKey:
    return PortalKey(NETWORK, RemoteChatID(xmpp_user), LoginID(matrix_user))


def muc_key(room: str) -> PortalKey:
    return PortalKey(NETWORK, RemoteChatID(room))


def message_id(msg: Message) -> RemoteMessageID:
    origin = msg["origin_id"]["id"]
    return RemoteMessageID(origin or msg["id"] or msg["stanza_id"]["id"])


def stanza_id_key(room: str, stanza_id: str) -> str:
    """kv key: the room-assigned stanza-id → our message id."""
    return f"sid:{room}:{stanza_id}"


def reverse_stanza_id_key(room: str, message: str) -> str:
    """kv key: our message id → the room-assigned stanza-id (for retractions and reactions)."""
    return f"sid>:{room}:{message}"


def outgoing_id(event_id: str, kind: str = "msg") -> str:
    """Stanza id for something sent from Matrix: stable across retries of the same event."""
    return f"pontis-{kind}-{hashlib.sha256(event_id.encode()).hexdigest()[:24]}"
