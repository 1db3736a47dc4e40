"""The Matrix ghost a MUC occupant gets, as the tests compute it from what XMPP shows them."""

from __future__ import annotations

from bridge.core.ghost_names import GhostNames
from bridge.core.ids import NetworkID, RemoteUserID
from bridge.xmpp.moderation import OCCUPANT_ID_NS, occupant_ghost
from tests.e2e.conftest import DOMAIN
from tests.e2e.xmpp_client import XmppUser


def muc_ghost(user: XmppUser, room: str, nick: str) -> str:
    """The ghost of ``user``'s occupant ``nick`` in ``room``: keyed by the occupant-id
    (XEP-0421) the room showed ``user`` in its own presence, where the room gives one (Prosody),
    else by the nick (ejabberd 23.01)."""
    for presence in user.presences:
        if presence["from"] == f"{room}/{nick}":
            element = presence.xml.find(f"{{{OCCUPANT_ID_NS}}}occupant-id")
            if element is not None and element.get("id"):
                remote = occupant_ghost(room, element.get("id", ""))
                return GhostNames(DOMAIN).mxid(NetworkID("xmpp"), RemoteUserID(remote))
    return GhostNames(DOMAIN).mxid(NetworkID("xmpp"), RemoteUserID(f"{room}/{nick}"))
