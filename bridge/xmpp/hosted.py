"""Matrix rooms offered to XMPP as MUCs on the rooms domain; here the bridge is the MUC service.

``#room:hub.example`` is ``room\\3ahub.example@<rooms domain>``. An XMPP user joining it gets the
Matrix members as occupants (nick = display name), the topic as subject, and from then on every
message both ways. What an occupant says is kept in the remote inbox (``inbound.accept``) before
the room reflects it; converted in the portal's queue by ``Inbound.convert``. Their own messages are reflected to every occupant, as a MUC does, and they
appear in Matrix as ghosts. Occupants live in memory: after a bridge restart XMPP clients find
out through their self-ping (XEP-0410) and rejoin.
"""

from __future__ import annotations

from copy import deepcopy
from datetime import UTC, datetime

from slixmpp import JID, Iq, Message, Presence
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bridge.core import (
    BridgeError,
    ChatInfo,
    ConnectorContext,
    RemoteChatInfo,
    RemoteUserID,
)
from bridge.core.federation import remote_domain
from bridge.core.remote_files import RemoteFiles
from bridge.xmpp.component import Component, Stanza
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.ids import NETWORK, message_id, muc_key
from bridge.xmpp.inbound import HOSTED, accept, as_is, remote_input
from bridge.xmpp.muc import MUC_NS, MUC_USER_NS
from bridge.xmpp.protocol.escaping import bare_jid, muc_to_room_alias, mxid_to_jid
from bridge.xmpp.to_matrix import MAX_BODY_BYTES, carries_content, convert, too_large

DISCO_INFO = "http://jabber.org/protocol/disco#info"
FEATURES = (DISCO_INFO, MUC_NS, "muc_open", "muc_public", "muc_nonanonymous", "muc_persistent",
            "urn:xmpp:sid:0", "urn:xmpp:message-correct:0", "urn:xmpp:message-retract:1",
            "urn:xmpp:reactions:0", "urn:xmpp:reply:0")  # fmt: skip


class HostedRooms:
    def __init__(
        self, cfg: XmppConfig, ctx: ConnectorContext, files: RemoteFiles | None = None
    ) -> None:
        self._cfg = cfg
        self._ctx = ctx
        self._files = files or RemoteFiles(cfg.fetch_allow_private, cfg.max_file_bytes)
        self._log = ctx.log.getChild("rooms")
        self.component = Component(
            cfg.rooms_domain, cfg, self._log, on_stanza=self._on_stanza, on_state=self._on_state
        )
        self.component.xmpp.register_handler(
            Callback(
                "pontis room disco",
                MatchXPath(f"{{jabber:component:accept}}iq/{{{DISCO_INFO}}}query"),
                self._disco,
            )
        )
        self._rooms: dict[str, dict[str, str]] = {}
        """room JID → nick → occupant's full JID."""
        self._members: dict[str, dict[str, str]] = {}
        """room JID → Matrix member → the nick occupants know them by."""

    def member_changed(self, room: str, mxid: str, name: str, *, joined: bool) -> None:
        """A Matrix user joined or left: occupants see them arrive or go (a rename is a leave
        under the old nick and a join under the new one)."""
        names = self._members.setdefault(room, {})
        old = names.pop(mxid, None)
        jid = mxid_to_jid(mxid, self._cfg.jid)
        for occupant in self.occupants(room):
            if old is not None and (not joined or old != name):
                self.component.send(
                    self._occupant_presence(room, old, occupant, jid, unavailable=True)
                )
            if joined and old != name:
                self.component.send(self._occupant_presence(room, name, occupant, jid))
        if joined:
            names[mxid] = name

    def hosts(self, room: str) -> bool:
        return room.endswith(f"@{self._cfg.rooms_domain}")

    def occupants(self, room: str) -> list[str]:
        return list(self._rooms.get(room, {}).values())

    async def _on_state(self, up: bool, message: str) -> None:
        self._log.log(
            20 if up else 30,
            "Rooms component %s %s",
            self._cfg.rooms_domain,
            "up" if up else message,
        )

    async def _on_stanza(self, stanza: Stanza) -> None:
        if stanza["type"] == "error":
            return
        if isinstance(stanza, Presence):
            await self._presence(stanza)
        else:
            await self._message(stanza)

    def _error(self, stanza: Stanza, condition: str, text: str, kind: str = "cancel") -> None:
        self.component.reply_error(stanza, condition, text, kind)

    def _occupant_presence(self, room: str, nick: str, to: str, real: str, *, own: bool = False,
                           unavailable: bool = False) -> Presence:  # fmt: skip
        presence = self.component.xmpp.make_presence(pfrom=JID(f"{room}/{nick}"), pto=JID(to))
        if unavailable:
            presence["type"] = "unavailable"
        x = presence.xml.makeelement(f"{{{MUC_USER_NS}}}x", {})
        x.append(
            x.makeelement(
                f"{{{MUC_USER_NS}}}item",
                {"affiliation": "member", "role": "participant", "jid": real},
            )
        )
        for code in ("100", "110") if own else ():
            x.append(x.makeelement(f"{{{MUC_USER_NS}}}status", {"code": code}))
        presence.xml.append(x)
        return presence

    async def _presence(self, presence: Presence) -> None:
        room, nick, occupant = presence["to"].bare, presence["to"].resource, str(presence["from"])
        occupants = self._rooms.setdefault(room, {})
        if presence["type"] == "unavailable":
            if occupants.get(nick) == occupant:
                del occupants[nick]
                for other in [occupant, *occupants.values()]:
                    self.component.send(self._occupant_presence(room, nick, other, occupant, own=other == occupant,
                                                                unavailable=True))  # fmt: skip
            return
        if presence["type"] not in ("available", ""):
            return
        if not nick:
            self._error(presence, "jid-malformed", "Join with a nickname: room@domain/nick")
            return
        alias = muc_to_room_alias(room, self._cfg.rooms_domain)
        if alias and (
            refused := self._ctx.federation.refusal(
                NETWORK, remote_domain(occupant), alias, entry="xmpp hosted room"
            )
        ):
            self._error(presence, "forbidden", f"You may not join {alias}: refused by the hub's "
                        f"federation policy: {refused}", "auth")  # fmt: skip
            return
        portal = await self._ctx.adopt_matrix_room(muc_key(room), alias) if alias else None
        if portal is None or portal.mxid is None:
            self._error(presence, "item-not-found", f"No public Matrix room {alias or room}")
            return
        members = await self._ctx.matrix_members(portal.mxid)
        if nick in set(members.values()) or occupants.get(nick, occupant) != occupant:
            self._error(
                presence,
                "conflict",
                f"The nickname {nick} is taken in this room; choose another",
                "cancel",
            )
            return
        for old_nick, jid in list(occupants.items()):
            if jid == occupant and old_nick != nick:  # a nick change: leave under the old name
                del occupants[old_nick]
        joined_before = occupant in occupants.values()
        occupants[nick] = occupant
        if not joined_before:
            self._members[room] = dict(members)
            for mxid, name in sorted(members.items()):
                self.component.send(
                    self._occupant_presence(room, name, occupant, mxid_to_jid(mxid, self._cfg.jid))
                )
        for other_nick, other in occupants.items():
            if other != occupant:
                self.component.send(self._occupant_presence(room, other_nick, occupant, other))
                self.component.send(self._occupant_presence(room, nick, other, occupant))
        self.component.send(self._occupant_presence(room, nick, occupant, occupant, own=True))
        if not joined_before:
            await self._send_history(room, portal.mxid, occupant)
            subject = self.component.xmpp.make_message(
                mto=JID(occupant), mfrom=JID(room), mtype="groupchat"
            )
            subject["subject"] = portal.topic or ""
            self.component.send(subject)
            member = RemoteUserID(bare_jid(occupant))
            await self._ctx.queue_remote_event(
                RemoteChatInfo(
                    portal=muc_key(room), info=ChatInfo(members=[member]), create_portal=False
                )
            )

    async def _send_history(self, room: str, room_id: str, occupant: str) -> None:
        """Recent messages, marked as delayed (XEP-0203), before the subject as XEP-0045 orders."""
        try:
            history = await self._ctx.matrix_history(room_id, self._cfg.history_on_join)
        except BridgeError as err:
            self._log.warning("No history for %s: %s", room, err)
            return
        for event_id, name, body, ts in history:
            msg = self.component.xmpp.make_message(mto=JID(occupant), mfrom=JID(f"{room}/{name}"),
                                                   mtype="groupchat", mbody=body)  # fmt: skip
            msg["id"] = event_id
            msg["delay"]["stamp"] = datetime.fromtimestamp(ts / 1000, tz=UTC)
            msg["delay"]["from"] = JID(room)
            self.component.send(msg)

    async def _message(self, msg: Message) -> None:
        room, occupant = msg["to"].bare, str(msg["from"])
        nicks = [n for n, jid in self._rooms.get(room, {}).items() if jid == occupant]
        if msg["type"] != "groupchat" or msg["to"].resource:
            self._error(
                msg,
                "feature-not-implemented",
                "Private messages in bridged rooms are not supported",
            )
            return
        if not nicks:
            self._error(msg, "not-acceptable", "Join the room before sending to it", "modify")
            return
        if too_large(msg):
            self._error(
                msg,
                "not-acceptable",
                f"Messages to Matrix are limited to {MAX_BODY_BYTES} bytes",
                "modify",
            )
            return
        nick, key, sender = nicks[0], muc_key(room), bare_jid(occupant)
        event = None
        if carries_content(msg):  # kept before the room reflects it: then it reaches Matrix
            dedupe = f"{sender}:{message_id(msg)}"
            item = remote_input(key, HOSTED, msg, dedupe=dedupe, sender=sender, name=nick)
            if not await accept(self._ctx, self.component, msg, item):
                return
        else:
            event = await convert(
                msg, key=key, sender=RemoteUserID(sender), sender_name=nick, chat_info=None,
                resolve=as_is, files=self._files,
            )  # fmt: skip
        for other in self.occupants(room):  # reflect, as a MUC does, with our stanza-id
            copy = Message(stream=self.component.xmpp, xml=deepcopy(msg.xml))
            copy["from"], copy["to"] = JID(f"{room}/{nick}"), JID(other)
            copy["stanza_id"]["id"], copy["stanza_id"]["by"] = (
                msg["origin_id"]["id"] or msg["id"],
                room,
            )
            self.component.send(copy)
        if event is not None:
            await self._ctx.queue_remote_event(event)

    def _disco(self, iq: StanzaBase) -> None:
        if not isinstance(iq, Iq) or iq["type"] != "get" or not self.component.up:
            return
        reply = iq.reply()
        query = reply.xml.find(f"{{{DISCO_INFO}}}query")
        if query is None:
            query = reply.xml.makeelement(f"{{{DISCO_INFO}}}query", {})
            reply.xml.append(query)
        room = iq["to"].bare
        if iq["to"].user:
            identity = {
                "category": "conference",
                "type": "text",
                "name": muc_to_room_alias(room, self._cfg.rooms_domain) or room,
            }
        else:
            identity = {"category": "conference", "type": "text", "name": "Matrix rooms"}
        query.append(query.makeelement(f"{{{DISCO_INFO}}}identity", identity))
        for feature in FEATURES:
            query.append(query.makeelement(f"{{{DISCO_INFO}}}feature", {"var": feature}))
        self.component.send(reply)
