"""XEP-0045 admin queries (``muc#admin``) to the rooms the bridge hosts.

Rights in these rooms are the Matrix room's power levels (:mod:`bridge.xmpp.rights`), so the
lists are read from them: an occupant asking for the owners, admins or members gets the Matrix
members with that affiliation (members also the XMPP occupants), and a role query the current
occupants in that role. No XMPP occupant is ever more than a member here, so changes (``set``)
are refused with ``forbidden``: they are made in Matrix, by a member with the power to. For the
same reason the ban list (outcasts) is for admins only (XEP-0045 §9.8) and refused too.
Someone who is not in the room gets ``forbidden`` for everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slixmpp import Iq
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bridge.xmpp.protocol.escaping import bare_jid, mxid_to_jid

if TYPE_CHECKING:
    from bridge.xmpp.hosted import HostedRooms

ADMIN_NS = "http://jabber.org/protocol/muc#admin"
LISTED_AFFILIATIONS = ("owner", "admin", "member")
ROLES = ("moderator", "participant")


class HostedAdmin:
    def __init__(self, rooms: HostedRooms, users_domain: str) -> None:
        self._rooms = rooms
        self._users_domain = users_domain
        rooms.component.xmpp.register_handler(
            Callback(
                "pontis room admin",
                MatchXPath(f"{{jabber:component:accept}}iq/{{{ADMIN_NS}}}query"),
                self._on_iq,
            )
        )

    def _on_iq(self, iq: StanzaBase) -> None:
        if (
            not isinstance(iq, Iq)
            or iq["type"] not in ("get", "set")
            or not self._rooms.component.up
        ):
            return
        room, requester = iq["to"].bare, str(iq["from"])
        if iq["to"].resource or not self._rooms.hosts(room):
            self._error(iq, "bad-request", "Send admin queries to the room's bare address")
            return
        if requester not in self._rooms.occupants(room):
            self._error(iq, "forbidden", "Join the room to see who is in it", "auth")
            return
        if iq["type"] == "set":
            self._error(iq, "forbidden", "Rights in this room are its Matrix power levels: ask one "
                        "of its Matrix admins to change them", "auth")  # fmt: skip
            return
        items = iq.xml.findall(f"{{{ADMIN_NS}}}query/{{{ADMIN_NS}}}item")
        if len(items) != 1:
            self._error(iq, "bad-request", "Ask for one affiliation or one role", "modify")
            return
        affiliation, role = items[0].get("affiliation"), items[0].get("role")
        if affiliation == "outcast":
            self._error(iq, "forbidden", "Only the room's admins may see its ban list; bans are "
                        "made in Matrix", "auth")  # fmt: skip
            return
        if (affiliation not in LISTED_AFFILIATIONS or role is not None) and role not in ROLES:
            self._error(iq, "bad-request", "Ask for owner, admin or member, or a role", "modify")
            return
        reply = iq.reply(clear=True)
        query = reply.xml.makeelement(f"{{{ADMIN_NS}}}query", {})
        reply.xml.append(query)
        for attributes in self.listed(room, affiliation, role):
            query.append(query.makeelement(f"{{{ADMIN_NS}}}item", attributes))
        self._rooms.component.send(reply)

    def listed(self, room: str, affiliation: str | None, role: str | None) -> list[dict[str, str]]:
        """The items of the list of ``affiliation`` (or of ``role``) in ``room``."""
        listed: list[dict[str, str]] = []
        for mxid, nick in sorted(self._rooms.members(room).items()):
            shown_affiliation, shown_role = self._rooms.rights(room, mxid)
            if (affiliation or shown_affiliation) == shown_affiliation and (
                role or shown_role
            ) == shown_role:
                jid = mxid_to_jid(mxid, self._users_domain)
                listed.append({"affiliation": shown_affiliation, "role": shown_role,
                               "jid": jid, "nick": nick})  # fmt: skip
        if affiliation in (None, "member") and role in (None, "participant"):
            seen: set[str] = set()
            for nick, occupant in sorted(self._rooms.occupant_nicks(room).items()):
                if (person := bare_jid(occupant)) not in seen:
                    seen.add(person)
                    listed.append({"affiliation": "member", "role": "participant",
                                   "jid": person, "nick": nick})  # fmt: skip
        return listed

    def _error(self, iq: Iq, condition: str, text: str, kind: str = "cancel") -> None:
        reply = iq.reply()
        reply["type"] = "error"
        reply["error"]["condition"] = condition
        reply["error"]["type"] = kind
        reply["error"]["text"] = text
        self._rooms.component.send(reply)
