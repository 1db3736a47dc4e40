"""Email ids as the store sees them.

- A portal is one mail address of the bridge's domain, ``<name>.<token>@<domain>``; the token
  makes it unguessable, so knowing the address is what lets a person write to the room. DMs get
  an address of their own per (Matrix user, correspondent).
- A remote user is a case-folded mail address.
- A message id is the mail's ``Message-ID`` with its angle brackets; mail sent from Matrix gets
  one derived from the event id (:func:`bridge.email.protocol.addresses.message_id_for_event`).
"""

from __future__ import annotations

from bridge.core import NetworkID, PortalKey, RemoteChatID

NETWORK = NetworkID("email")


def portal_key(address: str) -> PortalKey:
    return PortalKey(NETWORK, RemoteChatID(address))
