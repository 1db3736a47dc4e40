"""Matrix → XMPP invitations: a Matrix user invited an XMPP person's ghost into a MUC's portal.

A bridged MUC gets a mediated invitation (XEP-0045 §7.8.2) from the inviter's own occupant,
``<message to=room><x xmlns='…muc#user'><invite to=person/></x></message>``: the room checks
that the inviter may invite, sends the invitation from its own address and, when it is
members-only, makes the person a member, so they can join. A direct invitation (XEP-0249) alone
would let nobody into a members-only room; once the room accepted, one follows from the
inviter's address all the same, as XEP-0249 advises: a mediated invitation is often blocked by
the invitee's server (privacy lists, messages from strangers), and clients show the two as one.
When the room refuses (``forbidden``, ``not-allowed``):

- a members-only room: the inviter is told (the ghost declines with the reason), nothing else
  is sent; the person could not join anyway;
- an open room (ejabberd refuses invitations from plain occupants by default): a direct
  invitation from the inviter's address goes instead, since anyone may join.

XMPP does not acknowledge an invitation the room forwarded, so a disco#info query from the
same occupant follows it: the room answers stanzas from one sender in order, so its refusal,
if any, has arrived once the answer has. The answer also says whether the room is
members-only.

A room the bridge hosts invites from its own address, naming the inviter, as a MUC service
does: its members are the Matrix room's (whose power levels Synapse checked before the invite
reached the bridge) and it is open to anyone not banned, so the person can join at once.

The core checked the inviter's permission level and the federation policy before it asks.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from slixmpp import JID, Message
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatcherId

from bridge.core import ConnectorContext, NotSupported, PermanentError
from bridge.portal.models import Portal
from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.muc import MUC_USER_NS
from bridge.xmpp.protocol.escaping import bare_jid, mxid_to_jid

if TYPE_CHECKING:
    from bridge.xmpp.hosted import HostedRooms

CONFERENCE_NS = "jabber:x:conference"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
RIGHTS = {"forbidden", "not-allowed"}
"""What a MUC answers an invitation from someone who may not invite (Prosody, ejabberd)."""
PROBE_TIMEOUT = 15.0
"""How long the room has to answer the query that follows an invitation."""
MAX_TEXT = 200
"""Characters of a room's refusal text shown to the inviter (it becomes the ghost's leave
reason; a room is not ours to bound, and a Matrix event is limited to 64 KiB)."""

PuppetIn = Callable[[str, str, str], Awaitable[str]]
"""(room, mxid, display name) → the full JID of that Matrix user's occupant, joining if needed."""


def direct_invitation(component: Component, sender: str, to: str, room: str) -> Message:
    """A XEP-0249 invitation of ``to`` into ``room`` from ``sender``."""
    msg = component.xmpp.make_message(mto=JID(to), mfrom=JID(sender), mtype="normal")
    msg.xml.append(msg.xml.makeelement(f"{{{CONFERENCE_NS}}}x", {"jid": room}))
    return msg


class MatrixInvitations:
    def __init__(self, ctx: ConnectorContext, cfg: XmppConfig, component: Component,
                 hosted: HostedRooms | None, puppet_in: PuppetIn) -> None:  # fmt: skip
        self._ctx = ctx
        self._cfg = cfg
        self._component = component
        self._hosted = hosted
        self._puppet_in = puppet_in
        self._log = ctx.log.getChild("invites")

    async def invite(self, portal: Portal, inviter: str, user: str) -> None:
        """``inviter`` invited ``user`` (a bare JID) into the MUC of ``portal``. Raises
        :class:`NotSupported` when the room refuses, with what the inviter can do."""
        room = portal.remote_id
        if self._hosted is not None and self._hosted.hosts(room):
            self._from_hosted(room, inviter, user)
            return
        self._component.require_up()
        name = await self._name(portal, inviter)
        try:
            occupant = await self._puppet_in(room, inviter, name)
        except PermanentError as err:
            raise NotSupported(
                f"{inviter} cannot join {room}: {err}",
                user_message=f"{err.user_message} Only people the room lets in can invite "
                "others into it: ask one of its admins to invite them.",
            ) from err
        refusal, members_only = await self._mediated(room, occupant, user)
        direct = direct_invitation(self._component, mxid_to_jid(inviter, self._cfg.jid), user, room)
        if refusal is None:
            self._log.info("%s invited %s to %s through the room", inviter, user, room)
            self._component.send(direct)
            return
        condition, text = refusal
        if members_only is not False:  # members-only, or it did not say
            self._log.info("%s refused %s's invitation of %s: %s", room, inviter, user, condition)
            said = f"{condition}: {text}" if text else condition
            why = (
                "you may not add members to it. Ask one of its admins to invite them."
                if condition in RIGHTS
                else "nobody was invited."
            )
            raise NotSupported(
                f"{room} refused the invitation: {condition}",
                user_message=f"The XMPP room {room} refused your invitation of {user} ({said}): "
                + why,
            )
        # An open room: anyone may join, so a direct invitation still gets them in.
        self._log.info("%s refused %s's invitation of %s (%s); sending a direct one instead",
                       room, inviter, user, condition)  # fmt: skip
        self._component.send(direct)

    async def _name(self, portal: Portal, mxid: str) -> str:
        """The nick of ``mxid``'s occupant: their display name in the portal room."""
        try:
            members = await self._ctx.matrix_members(portal.mxid) if portal.mxid else {}
        except Exception as err:  # the homeserver: the localpart will do
            self._log.info("No display name of %s in %s: %s", mxid, portal.mxid, err)
            members = {}
        return members.get(mxid) or mxid[1:].split(":")[0]

    async def _mediated(
        self, room: str, occupant: str, user: str
    ) -> tuple[tuple[str, str] | None, bool | None]:
        """Ask ``room`` to invite ``user`` on behalf of ``occupant`` (a full JID of ours):
        the room's refusal (condition, text) if it refused, and whether it is members-only
        (None: it did not say)."""
        msg = self._component.xmpp.make_message(mto=JID(room), mfrom=JID(occupant), mtype="normal")
        msg["id"] = f"invite-{uuid.uuid4().hex}"
        x = msg.xml.makeelement(f"{{{MUC_USER_NS}}}x", {})
        x.append(x.makeelement(f"{{{MUC_USER_NS}}}invite", {"to": user}))
        msg.xml.append(x)
        refusals: list[tuple[str, str]] = []

        def refused(stanza: StanzaBase) -> None:
            if stanza["type"] == "error" and stanza["from"].bare == room:
                text = " ".join(str(stanza["error"]["text"] or "").split())
                refusals.append((str(stanza["error"]["condition"])[:MAX_TEXT], text[:MAX_TEXT]))

        # Registered on the stream, not the bridge's message queue: seen in the order the
        # room sent it, before the answer to the query below.
        handler = msg["id"]
        self._component.xmpp.register_handler(Callback(handler, MatcherId(msg["id"]), refused))
        try:
            self._component.send(msg)
            members_only = await self._members_only(room, occupant)
        finally:
            self._component.xmpp.remove_handler(handler)
        return (refusals[0] if refusals else None), members_only

    async def _members_only(self, room: str, occupant: str) -> bool | None:
        iq = self._component.xmpp.make_iq_get(ito=JID(room), ifrom=JID(occupant))
        iq.xml.append(iq.xml.makeelement(f"{{{DISCO_INFO}}}query", {}))
        try:
            result = await iq.send(timeout=PROBE_TIMEOUT)
        except (IqError, IqTimeout) as err:
            # No answer: its refusal may still come, and would then be logged as a bounce.
            self._log.warning("No disco#info from %s after an invitation (%s): taken as "
                              "delivered unless it refused", room, err)  # fmt: skip
            return None
        return any(
            f.get("var") == "muc_membersonly"
            for f in result.xml.iterfind(f"{{{DISCO_INFO}}}query/{{{DISCO_INFO}}}feature")
        )

    def _from_hosted(self, room: str, inviter: str, user: str) -> None:
        """A room we host invites, from its own address, as a MUC service does (XEP-0045
        §7.8.2), with the XEP-0249 element older clients look for."""
        assert self._hosted is not None
        component = self._hosted.component
        inviter_jid = mxid_to_jid(inviter, self._cfg.jid)
        msg = component.xmpp.make_message(mto=JID(bare_jid(user)), mfrom=JID(room),
                                          mtype="normal")  # fmt: skip
        x = msg.xml.makeelement(f"{{{MUC_USER_NS}}}x", {})
        x.append(x.makeelement(f"{{{MUC_USER_NS}}}invite", {"from": inviter_jid}))
        msg.xml.append(x)
        msg.xml.append(msg.xml.makeelement(f"{{{CONFERENCE_NS}}}x", {"jid": room}))
        msg["body"] = f"{inviter} invited you to the room {room}"
        component.send(msg)
        self._log.info("%s invited %s to the hosted room %s", inviter, user, room)
