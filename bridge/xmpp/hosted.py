"""Matrix rooms offered to XMPP as MUCs on the rooms domain; here the bridge is the MUC service.

``#room:hub.example`` is ``room\\3ahub.example@<rooms domain>``. An XMPP user joining it gets the
Matrix members as occupants (nick = display name), the topic as subject, and from then on every
message both ways. What an occupant says is kept in the remote inbox (``inbound.accept``) before
the room reflects it; converted in the portal's queue by ``Inbound.convert``. Their own messages are reflected to every occupant, as a MUC does, and they
appear in Matrix as ghosts.

Occupants are kept in the store (:class:`bridge.xmpp.store.XmppStore`), so they are still there
after a reconnect or a restart; an occupant whose client has gone (a delivery bounces) is
removed, as MUC services do. Self-pings (XEP-0410) are answered for current occupants only, so
a client the room has forgotten learns it and rejoins. The bridge's own component never joins
these rooms: they are Matrix rooms already.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

from slixmpp import JID, Iq, Message, Presence
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath, StanzaPath

from bridge.core import (
    BridgeError,
    ChatInfo,
    ConnectorContext,
    RemoteChatInfo,
    RemoteUserID,
)
from bridge.core.federation import remote_domain
from bridge.core.remote_files import RemoteFiles
from bridge.xmpp.avatars import photo_hash
from bridge.xmpp.component import Component, Stanza
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.hosted_admin import HostedAdmin
from bridge.xmpp.ids import NETWORK, message_id, muc_key, outgoing_id
from bridge.xmpp.inbound import HOSTED, accept, as_is, remote_input
from bridge.xmpp.moderation import ban_key, mark_removed
from bridge.xmpp.muc import MUC_NS, MUC_USER_NS
from bridge.xmpp.presence import update_element
from bridge.xmpp.protocol.escaping import bare_jid, jid_to_mxid, muc_to_room_alias, mxid_to_jid
from bridge.xmpp.rights import rights_of
from bridge.xmpp.store import XmppStore
from bridge.xmpp.to_matrix import MAX_BODY_BYTES, carries_content, convert, too_large

DISCO_INFO = "http://jabber.org/protocol/disco#info"
PING_NS = "urn:xmpp:ping"
GONE = {"recipient-unavailable", "service-unavailable", "item-not-found", "remote-server-not-found",
        "remote-server-timeout", "gone"}  # fmt: skip
"""Errors a delivery to an occupant bounces with when its client is no longer there."""
FEATURES = (DISCO_INFO, MUC_NS, "muc_open", "muc_public", "muc_nonanonymous", "muc_persistent",
            "urn:xmpp:sid:0", "urn:xmpp:message-correct:0", "urn:xmpp:message-retract:1",
            "urn:xmpp:reactions:0", "urn:xmpp:reply:0")  # fmt: skip


class HostedRooms:
    def __init__(
        self,
        cfg: XmppConfig,
        ctx: ConnectorContext,
        store: XmppStore,
        files: RemoteFiles | None = None,
    ) -> None:
        self._cfg = cfg
        self._ctx = ctx
        self._store = store
        self._files = files or RemoteFiles(cfg.fetch_allow_private, cfg.max_file_bytes)
        self._log = ctx.log.getChild("rooms")
        self.component = Component(
            cfg.rooms_domain, cfg, self._log, on_stanza=self._on_stanza, on_state=self._on_state
        )
        # We are the MUC service: disco#info and pings are answered here, once, not also by
        # slixmpp's plugins (which answer any JID, joined or not).
        self.component.xmpp.remove_handler("Disco Info")
        self.component.xmpp.remove_handler("Ping")
        self.component.xmpp.register_handler(
            Callback("pontis room ping", StanzaPath("iq@type=get/ping"), self._ping)
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
        self._rights: dict[str, dict[str, tuple[str, str]]] = {}
        """room JID → Matrix member → (affiliation, role) occupants were last shown."""
        self.on_private: Callable[[Message], Awaitable[None]] | None = None
        """Takes private messages to a Matrix member's nick (set by the client)."""
        self.admin = HostedAdmin(self, cfg.jid)
        self.photo_of: Callable[[str], str | None] | None = None
        """A Matrix member's avatar hash (XEP-0153) if known, for their occupant presence."""
        self.on_occupant: Callable[[Presence, str, RemoteUserID], None] | None = None
        """Called with an occupant's presence (accepted, or leaving), the room and their
        ghost's user: for their ghost's avatar and presence."""
        self._photos: dict[str, dict[str, str]] = {}
        """room JID → XMPP occupant's full JID → the avatar hash their last presence had."""

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
                self.component.send(self._occupant_presence(room, name, occupant, jid,
                                                            rights=self._shown(room, mxid)))  # fmt: skip
        if joined:
            names[mxid] = name

    async def load(self) -> None:
        """The occupants the store remembers (call before the component connects)."""
        rooms = await self._store.hosted_occupants()
        self._rooms = {  # the rooms of another component's rooms domain are not ours
            room: occupants for room, occupants in rooms.items() if self.hosts(room)
        }

    def hosts(self, room: str) -> bool:
        return room.endswith(f"@{self._cfg.rooms_domain}")

    def occupants(self, room: str) -> list[str]:
        return list(self._rooms.get(room, {}).values())

    def occupant_nicks(self, room: str) -> dict[str, str]:
        """nick → full JID of each XMPP occupant of ``room``."""
        return dict(self._rooms.get(room, {}))

    def members(self, room: str) -> dict[str, str]:
        """Matrix member → the nick occupants know them by (as of the last join)."""
        return dict(self._members.get(room, {}))

    def nick_of(self, room: str, mxid: str) -> str | None:
        return self._members.get(room, {}).get(mxid)

    def rights(self, room: str, mxid: str) -> tuple[str, str]:
        """(affiliation, role) occupants were last shown for Matrix member ``mxid``."""
        return self._shown(room, mxid)

    async def _on_state(self, up: bool, message: str) -> None:
        self._log.log(
            20 if up else 30,
            "Rooms component %s %s",
            self._cfg.rooms_domain,
            "up" if up else message,
        )

    async def _on_stanza(self, stanza: Stanza) -> None:
        if stanza["type"] == "error":
            await self._bounced(stanza)
            return
        if isinstance(stanza, Presence):
            await self._presence(stanza)
        else:
            await self._message(stanza)

    async def _bounced(self, error: Stanza) -> None:
        """Something we sent an occupant bounced: if its client is gone, so is the occupant."""
        room, occupant = error["to"].bare, str(error["from"])
        if error["error"]["condition"] not in GONE:
            return
        for nick, jid in list(self._rooms.get(room, {}).items()):
            if jid == occupant:
                self._log.info("%s left %s: deliveries to it bounce (%s)",
                               occupant, room, error["error"]["condition"])  # fmt: skip
                await self._leave(room, nick, occupant)

    async def _leave(self, room: str, nick: str, occupant: str) -> None:
        occupants = self._rooms.get(room, {})
        if occupants.get(nick) != occupant:
            return
        del occupants[nick]
        self._photos.get(room, {}).pop(occupant, None)
        await self._store.remove_occupant(room, nick)
        for other in [occupant, *occupants.values()]:
            self.component.send(self._occupant_presence(room, nick, other, occupant,
                                                        own=other == occupant, unavailable=True))  # fmt: skip

    async def remove(self, room: str, person: str, *, ban: bool, reason: str) -> int:
        """A Matrix moderator kicked or banned ``person`` (bare JID): each of their occupants
        leaves with status 307 or 301, as XEP-0045 shows it; returns how many there were."""
        occupants = self._rooms.get(room, {})
        gone = [(nick, jid) for nick, jid in occupants.items() if bare_jid(jid) == person]
        for nick, occupant in gone:
            del occupants[nick]
            await self._store.remove_occupant(room, nick)
            for other in [occupant, *occupants.values()]:
                self.component.send(mark_removed(self._occupant_presence(
                    room, nick, other, occupant, own=other == occupant, unavailable=True,
                ), ban=ban, reason=reason))  # fmt: skip
        return len(gone)

    def _error(self, stanza: Stanza, condition: str, text: str, kind: str = "cancel") -> None:
        self.component.reply_error(stanza, condition, text, kind)

    def _shown(self, room: str, mxid: str) -> tuple[str, str]:
        return self._rights.get(room, {}).get(mxid, ("member", "participant"))

    async def rights_changed(self, room: str, levels: dict[str, Any], creators: list[str]) -> None:
        """The portal's power levels changed: occupants see each Matrix member whose
        affiliation or role it changes again, with the new ones (XEP-0045 §9.3, §10.6)."""
        shown = self._rights.setdefault(room, {})
        for mxid, nick in self._members.get(room, {}).items():
            rights = rights_of(levels, creators, mxid)
            if shown.get(mxid, ("member", "participant")) == rights:
                continue
            shown[mxid] = rights
            jid = mxid_to_jid(mxid, self._cfg.jid)
            for occupant in self.occupants(room):
                self.component.send(self._occupant_presence(room, nick, occupant, jid,
                                                            rights=rights))  # fmt: skip

    def _occupant_presence(self, room: str, nick: str, to: str, real: str, *, own: bool = False,
                           unavailable: bool = False,
                           rights: tuple[str, str] = ("member", "participant")) -> Presence:  # fmt: skip
        presence = self.component.xmpp.make_presence(pfrom=JID(f"{room}/{nick}"), pto=JID(to))
        if unavailable:
            presence["type"] = "unavailable"
        x = presence.xml.makeelement(f"{{{MUC_USER_NS}}}x", {})
        x.append(
            x.makeelement(
                f"{{{MUC_USER_NS}}}item",
                {"affiliation": rights[0], "role": rights[1], "jid": real},
            )
        )
        for code in ("100", "110") if own else ():
            x.append(x.makeelement(f"{{{MUC_USER_NS}}}status", {"code": code}))
        presence.xml.append(x)
        if not unavailable:
            mxid = jid_to_mxid(real, self._cfg.jid)
            digest = (
                self.photo_of(mxid) if mxid and self.photo_of else
                self._photos.get(room, {}).get(real)
            )  # fmt: skip
            if digest is not None:
                presence.xml.append(update_element(digest))
        return presence

    def profile_changed(self, room: str, mxid: str) -> None:
        """A Matrix member's avatar changed: occupants see their presence again, with it."""
        nick = self._members.get(room, {}).get(mxid)
        if nick is None:
            return
        jid = mxid_to_jid(mxid, self._cfg.jid)
        for occupant in self.occupants(room):
            self.component.send(self._occupant_presence(room, nick, occupant, jid,
                                                        rights=self._shown(room, mxid)))  # fmt: skip

    async def _presence(self, presence: Presence) -> None:
        room, nick, occupant = presence["to"].bare, presence["to"].resource, str(presence["from"])
        occupants = self._rooms.get(room, {})  # kept only once the room turns out to exist
        if presence["type"] == "unavailable":
            if self.on_occupant is not None and occupants.get(nick) == occupant:
                self.on_occupant(presence, room, RemoteUserID(bare_jid(occupant)))
            await self._leave(room, nick, occupant)
            return
        if presence["type"] not in ("available", ""):
            return
        if not nick:
            self._error(presence, "jid-malformed", "Join with a nickname: room@domain/nick")
            return
        if presence["from"].domain in (self._cfg.jid, self._cfg.rooms_domain):
            # The bridge itself: Matrix users are in the room already, as its members.
            self._error(presence, "not-allowed", "The bridge does not join its own rooms")
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
        if await self._ctx.store.kv_get(ban_key(room, bare_jid(occupant))):
            self._error(presence, "forbidden", "You are banned from this room", "auth")
            return
        portal = await self._ctx.adopt_matrix_room(muc_key(room), alias) if alias else None
        if portal is None or portal.mxid is None:
            self._error(presence, "item-not-found", f"No public Matrix room {alias or room}")
            return
        if occupant not in occupants.values() and not await self._may_join(presence, portal.mxid):
            return
        occupants = self._rooms.setdefault(room, occupants)
        members = await self._ctx.matrix_members(portal.mxid)
        holder = occupants.get(nick)
        if holder is not None and holder != occupant and bare_jid(holder) == bare_jid(occupant):
            # The same person from a new session (the old one ended while the bridge was away,
            # or its client crashed): the new one takes the nick over.
            del occupants[nick]
            await self._store.remove_occupant(room, nick)
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
                await self._store.remove_occupant(room, old_nick)
        joined_before = occupant in occupants.values()
        # A join (with the MUC <x/>) from an occupant we still know is a client that lost its
        # session while the bridge was away: it gets the room again, but not the history.
        joining = not joined_before or presence.xml.find(f"{{{MUC_NS}}}x") is not None
        occupants[nick] = occupant
        photo = photo_hash(presence)
        if photo is not None:  # reflected to the others with their presence (XEP-0153)
            self._photos.setdefault(room, {})[occupant] = photo
        if self.on_occupant is not None:
            self.on_occupant(presence, room, RemoteUserID(bare_jid(occupant)))
        if not joined_before:
            await self._store.set_occupant(room, nick, occupant)
        if joining:
            self._members[room] = dict(members)
            levels, creators = await self._ctx.matrix_power_levels(portal.mxid)
            self._rights[room] = {mxid: rights_of(levels, creators, mxid) for mxid in members}
            for mxid, name in sorted(members.items()):
                self.component.send(self._occupant_presence(
                    room, name, occupant, mxid_to_jid(mxid, self._cfg.jid),
                    rights=self._shown(room, mxid),
                ))  # fmt: skip
        for other_nick, other in occupants.items():
            if other != occupant:
                self.component.send(self._occupant_presence(room, other_nick, occupant, other))
                self.component.send(self._occupant_presence(room, nick, other, occupant))
        self.component.send(self._occupant_presence(room, nick, occupant, occupant, own=True))
        if not joined_before:
            await self._send_history(room, portal.mxid, occupant)
        if joining:
            subject = self.component.xmpp.make_message(
                mto=JID(occupant), mfrom=JID(room), mtype="groupchat"
            )
            subject["subject"] = portal.topic or ""
            self.component.send(subject)
        if not joined_before:
            member = RemoteUserID(bare_jid(occupant))
            await self._ctx.queue_remote_event(
                RemoteChatInfo(
                    portal=muc_key(room), info=ChatInfo(members=[member]), create_portal=False
                )
            )

    async def _may_join(self, presence: Presence, room_id: str) -> bool:
        """Whether the joiner's ghost is not banned from the portal room. The room's own
        membership counts, not only bans the bridge relayed: a ban by a relay-level moderator,
        another bridge or from before the bridge kept bans holds too. If the homeserver cannot
        say, the joiner is asked to try again rather than let in."""
        ghost = self._ctx.ghost_mxid(RemoteUserID(bare_jid(str(presence["from"]))))
        try:
            membership = await self._ctx.matrix_membership(room_id, ghost)
        except Exception as err:
            self._log.warning("Could not read %s's membership in %s: %s", ghost, room_id, err)
            self._error(presence, "service-unavailable", "The bridge cannot check bans right "
                        "now; join again later", "wait")  # fmt: skip
            return False
        if membership == "ban":
            self._error(presence, "forbidden", "You are banned from this room", "auth")
            return False
        return True

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
            # The id the message had live, so clients and the bridge's dedupe know it again.
            msg["id"] = outgoing_id(event_id)
            msg["stanza_id"]["id"], msg["stanza_id"]["by"] = msg["id"], room
            msg["delay"]["stamp"] = datetime.fromtimestamp(ts / 1000, tz=UTC)
            msg["delay"]["from"] = JID(room)
            self.component.send(msg)

    async def _message(self, msg: Message) -> None:
        room, occupant = msg["to"].bare, str(msg["from"])
        nicks = [n for n, jid in self._rooms.get(room, {}).items() if jid == occupant]
        if msg["to"].resource and msg["type"] != "groupchat" and self.on_private is not None:
            await self.on_private(msg)  # to a Matrix member: bridge.xmpp.private
            return
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

    def _ping(self, iq: StanzaBase) -> None:
        """XEP-0410 §3: a ping to an occupant says whether the sender is still joined."""
        if not isinstance(iq, Iq) or not self.component.up:
            return
        room, nick, sender = iq["to"].bare, iq["to"].resource, str(iq["from"])
        if not nick:
            self.component.send(iq.reply())  # the service or the room itself: it is up
            return
        occupants = self._rooms.get(room, {})
        if sender not in occupants.values():
            self._iq_error(iq, "not-acceptable", "You are not in this room; join it again")
        elif nick in occupants or nick in self._members.get(room, {}).values():
            self.component.send(iq.reply())
        else:
            self._iq_error(iq, "item-not-found", f"No occupant {nick} in this room")

    def _iq_error(self, iq: Iq, condition: str, text: str) -> None:
        reply = iq.reply()
        reply["type"] = "error"
        reply["error"]["condition"] = condition
        reply["error"]["type"] = "cancel"
        reply["error"]["text"] = text
        self.component.send(reply)

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
