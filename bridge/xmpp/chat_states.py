"""Matrix typing and read receipts as XEP-0085 chat states and XEP-0333 markers, everywhere.

In a DM they come from the Matrix user's JID; in a private conversation with a MUC occupant
(:mod:`bridge.xmpp.private`) from their occupant. In a bridged MUC they come from the Matrix
user's own occupant, and only once that occupant is in the room: typing is no reason to join
(it would announce the user to everyone before they said a word). In a room the bridge hosts,
the Matrix member's nick says it to every occupant, as a MUC reflects a chat state. A marker
in a MUC names the message by the room's stanza-id (XEP-0333 §5), which ``reference`` gives.
Markers are only for other people's messages, and only DMs keep them in archives: a marker in a
MUC carries the ``no-store`` hint (XEP-0334). The other way round needs nothing here: a chat
state or marker an occupant sends is converted like a DM's (``inbound``, ``hosted``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from slixmpp import JID, Message

from bridge.core import MatrixReceipt, MatrixTyping, PermanentError
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import Portal
from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.hosted import HostedRooms
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.private import PrivateMessages, is_private
from bridge.xmpp.protocol.escaping import mxid_to_jid

Decorate = Callable[[Message], None]
Reference = Callable[[Portal, StoredMessage], Awaitable[str]]


class ChatStates:
    def __init__(self, cfg: XmppConfig, component: Component, hosted: HostedRooms | None,
                 mucs: MucTracker, private: PrivateMessages, reference: Reference) -> None:  # fmt: skip
        self._cfg = cfg
        self._component = component
        self._hosted = hosted
        self._mucs = mucs
        self._private = private
        self._reference = reference

    async def typing(self, typing: MatrixTyping) -> None:
        state = "composing" if typing.typing else "paused"

        def decorate(stanza: Message) -> None:
            stanza["chat_state"] = state
            stanza.enable("no-store")

        await self._send(typing.portal, typing.sender, decorate)

    async def receipt(self, receipt: MatrixReceipt) -> None:
        if receipt.target.sender_id.startswith("@"):
            return  # markers are for the other people's messages
        reference = await self._reference(receipt.portal, receipt.target)

        def decorate(stanza: Message) -> None:
            stanza["displayed"]["id"] = reference
            # Kept in a DM's archives, so the other person's clients that were away still see
            # it; never in a room's, where every occupant could page back through who read what.
            stanza.enable("no-store" if stanza["type"] == "groupchat" else "store")

        await self._send(receipt.portal, receipt.sender, decorate)

    def occupant(self, room: str, mxid: str) -> str | None:
        """The full JID of ``mxid``'s occupant in bridged ``room``, if it is joined now."""
        full = f"{mxid_to_jid(mxid, self._cfg.jid)}/pontis"
        tracked = self._mucs.rooms.get(room)
        return full if tracked is not None and full in tracked.nicks else None

    async def _send(self, portal: Portal, mxid: str, decorate: Decorate) -> None:
        room = portal.remote_id
        if portal.is_direct:
            component, mfrom, mto = self._component, mxid_to_jid(mxid, self._cfg.jid), str(room)
            if is_private(portal):
                try:
                    component, mfrom, mto = await self._private.route(portal, mxid, "", join=False)
                except PermanentError:
                    return  # the occupant (or ours) left: nobody to tell
            self._emit(component, mfrom, mto, "chat", decorate)
            return
        hosted = self._hosted
        if hosted is not None and hosted.hosts(room):
            nick = hosted.nick_of(room, mxid)
            if nick is None:
                return
            for occupant in hosted.occupants(room):
                self._emit(hosted.component, f"{room}/{nick}", occupant, "groupchat", decorate)
            return
        full = self.occupant(room, mxid)
        if full is not None:
            self._emit(self._component, full, room, "groupchat", decorate)

    @staticmethod
    def _emit(
        component: Component,
        mfrom: str,
        mto: str,
        mtype: Literal["chat", "groupchat"],
        decorate: Decorate,
    ) -> None:
        if not component.up:
            return
        stanza = component.xmpp.make_message(mto=JID(mto), mfrom=JID(mfrom), mtype=mtype)
        decorate(stanza)
        component.send(stanza)
