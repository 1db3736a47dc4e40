"""How Matrix users look to XMPP: disco#info, vCards, presence and the XEP-0100 prompt.

A component must answer for every JID on its domain itself (research notes §2.1): the server
routes disco, vCard, ping and presence probes for ``alice\\3ahub.example@<domain>`` to us and
answers nothing on our behalf. Everything here is derived from the JID alone (the mapping in
``protocol/escaping.py``), the Matrix profile for vCards and avatar hashes, and whether the asker
has a DM portal with the Matrix user, so it keeps no state: an answer after a restart is the
same as before it.

Any server can probe or query any address, so what a stranger learns is kept small: the
federation policy must let the asker's domain reach the Matrix user; only someone with a DM
with them sees their show and status (others a plain ``available``); and the profile of a user
of another Matrix server is looked up only for someone with a DM with them, so nobody makes the
hub query Matrix servers at will by inventing addresses.

A contact with a DM who subscribes to a Matrix user is asked back (``subscribe``), as XMPP
clients do: once they accept, their server sends the Matrix user their presence and, as the
caps ask for ``urn:xmpp:avatar:metadata+notify``, their XEP-0084 avatar changes
(:mod:`bridge.xmpp.avatars`). On their ``subscribed`` the Matrix user's presence goes to them
again, so that their server learns those caps now that it lets the Matrix user see them.

XEP-0199 pings need nothing here: the ``xep_0199`` plugin answers a ping to any JID on the
domain.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import JID, ComponentXMPP, Iq, Presence
from slixmpp.exceptions import XMPPError
from slixmpp.plugins.xep_0030 import DiscoInfo
from slixmpp.types import PresenceTypes
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from bridge.core import ConnectorContext
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.ids import NETWORK, dm_key
from bridge.xmpp.presence import MatrixPhotos, MatrixStates, update_element
from bridge.xmpp.protocol.escaping import is_valid_jid, jid_to_mxid, mxid_to_jid, split_jid

GATEWAY_NS = "jabber:iq:gateway"
VCARD_NS = "vcard-temp"
CAPS_NS = "http://jabber.org/protocol/caps"
CAPS_NODE = "urn:pontis:matrix-user"
PROFILE_TIMEOUT = 20.0
ASK_BACK_SECONDS = 24 * 3600.0
ASK_BACK_KEPT = 10_000

DOMAIN_FEATURES = (
    "http://jabber.org/protocol/disco#info",
    GATEWAY_NS,
    VCARD_NS,
    "urn:xmpp:ping",
)
# What the bridge does in a DM (client.py / to_matrix.py). XEP-0184: a receipt request is
# answered once the message is stored for Matrix (inbound.py send_receipt), so a client that
# asks gets its receipt; the bridge asks for none itself.
USER_FEATURES = (
    "http://jabber.org/protocol/chatstates",
    "http://jabber.org/protocol/disco#info",
    "jabber:x:oob",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:message-correct:0",
    "urn:xmpp:message-retract:1",
    "urn:xmpp:ping",
    "urn:xmpp:reactions:0",
    "urn:xmpp:receipts",
    "urn:xmpp:reply:0",
    "urn:xmpp:sid:0",
    # XEP-0163 +notify: a contact's server pushes their XEP-0084 avatar changes (avatars.py).
    "urn:xmpp:avatar:metadata+notify",
    VCARD_NS,
)
# ``client/pc`` rather than ``account/registered``: XMPP clients decide whether to offer
# corrections, reactions or retractions from the disco#info of the entity they chat with, and
# they expect those features on a client identity. ``account/registered`` describes a server
# account as its own server sees it, and carries no messaging features.
USER_IDENTITY = ("client", "pc", "Matrix")


def caps_ver(identity: tuple[str, str, str], features: tuple[str, ...]) -> str:
    """XEP-0115 §5.1 verification string (sha-1) of one identity without a language."""
    category, itype, name = identity
    text = f"{category}/{itype}//{name}<" + "".join(f"{f}<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


USER_CAPS_VER = caps_ver(USER_IDENTITY, USER_FEATURES)


class Identity:
    def __init__(self, xmpp: ComponentXMPP, cfg: XmppConfig, ctx: ConnectorContext) -> None:
        self._xmpp = xmpp
        self._cfg = cfg
        self._ctx = ctx
        self._log = ctx.log
        self.photos = MatrixPhotos(ctx)
        """Matrix users' avatar hashes (XEP-0153), shown in the presence sent as them."""
        self.states = MatrixStates()
        """Matrix users' presence, where the homeserver tells it."""
        self._asked_back: OrderedDict[tuple[str, str], float] = OrderedDict()
        """(Matrix user's JID, contact) → when their subscription was last asked back."""
        self._take_over_presence()
        xmpp.plugin["xep_0030"].set_node_handler("get_info", jid=None, node=None,
                                                 handler=self._disco_info)  # fmt: skip
        self._on_iq("pontis vcard", VCARD_NS, "vCard", self._vcard)
        self._on_iq("pontis gateway", GATEWAY_NS, "query", self._gateway)

    # --- addressing ---------------------------------------------------------------------------

    def _mxid_of(self, jid: JID) -> str | None:
        """The Matrix user ``jid`` stands for, or None.

        Ghosts of XMPP users (``@xmpp_…``) are refused: showing them back to XMPP would give
        one XMPP person a second, looping address.
        """
        mxid = jid_to_mxid(jid.bare, self._cfg.jid)
        if mxid is None or self._ctx.parse_ghost_mxid(mxid) is not None:
            return None
        return mxid

    def _is_domain(self, jid: JID) -> bool:
        return not jid.user and jid.domain == self._cfg.jid

    def _ours(self, jid: JID) -> bool:
        """Whether we may send from ``jid``: anything else makes the server close the stream."""
        return jid.domain == self._cfg.jid

    # --- disco#info (XEP-0030, XEP-0115) ------------------------------------------------------

    def _disco_info(
        self, jid: JID, node: str | None, ifrom: JID | None, data: Any
    ) -> DiscoInfo | None:
        """The global ``get_info`` handler of ``xep_0030``, so it covers every JID.

        The domain gets a fixed answer rather than the plugins' static one: each plugin adds its
        feature to the domain whether the bridge implements it or not (``jabber:iq:oob``,
        receipts), and the domain is a gateway, not a chat partner. JIDs that another module
        registered statically keep their answer.
        """
        info = DiscoInfo()
        if self._is_domain(jid) and not node:
            info.add_identity("gateway", "matrix", "Matrix")
            for feature in DOMAIN_FEATURES:
                info.add_feature(feature)
            return info
        if self._mxid_of(jid) is not None and node in (None, "", f"{CAPS_NODE}#{USER_CAPS_VER}"):
            info.add_identity(*USER_IDENTITY)
            for feature in USER_FEATURES:
                info.add_feature(feature)
            return info
        static = self._xmpp.plugin["xep_0030"].static
        if static.node_exists(jid, node):
            result: DiscoInfo | None = static.get_info(jid, node, ifrom, data)
            return result
        raise XMPPError("item-not-found", f"{jid} is not a Matrix user bridged here")

    # --- iq plumbing --------------------------------------------------------------------------

    def _on_iq(
        self, name: str, ns: str, element: str, handler: Callable[[Iq], Awaitable[None]]
    ) -> None:
        """Route get/set iqs carrying ``{ns}element`` to ``handler``, concurrently.

        Every failure becomes an error reply: an XMPP client waits for an answer to each iq, and
        a dropped one leaves it hanging until its own timeout.
        """

        async def run(iq: StanzaBase) -> None:
            if (
                not isinstance(iq, Iq)
                or iq["type"] not in ("get", "set")
                or not self._ours(iq["to"])
            ):
                return
            try:
                await handler(iq)
            except XMPPError:
                raise
            except TimeoutError:
                self._log.warning("%s for %s from %s timed out", name, iq["to"], iq["from"])
                raise XMPPError("remote-server-timeout", "Matrix did not answer in time; try again",
                                etype="wait") from None  # fmt: skip
            except Exception as err:
                self._log.exception("%s for %s from %s failed", name, iq["to"], iq["from"])
                raise XMPPError("internal-server-error", f"The bridge failed: {err}") from err

        path = f"{{{self._xmpp.default_ns}}}iq/{{{ns}}}{element}"
        self._xmpp.register_handler(CoroutineCallback(name, MatchXPath(path), run))

    @staticmethod
    def _answer(iq: Iq, payload: ET.Element) -> None:
        reply = iq.reply(clear=True)
        reply.set_payload(payload)
        reply.send()

    # --- vCard (XEP-0054) ---------------------------------------------------------------------

    async def _vcard(self, iq: Iq) -> None:
        if iq["type"] != "get":
            raise XMPPError(
                "not-allowed", "Matrix profiles are changed from Matrix", etype="cancel"
            )
        if self._is_domain(iq["to"]):
            self._answer(iq, _vcard_element("Matrix gateway", None, None, ""))
            return
        mxid = self._mxid_of(iq["to"])
        if mxid is None or self._ctx.federation.refusal(
            NETWORK, iq["from"].domain, mxid, entry="xmpp vcard"
        ):
            raise XMPPError("item-not-found", f"{iq['to'].bare} is not a Matrix user")
        if not self._local(mxid) and not await self._detailed_for(iq["to"], iq["from"]):
            # Another Matrix server's user nobody here chats with: looking them up would let
            # anyone make the hub query any server at will.
            self._answer(iq, _vcard_element(mxid, None, None, "", mxid=mxid))
            return
        name, avatar, mimetype = await asyncio.wait_for(
            self._ctx.matrix_profile(mxid), PROFILE_TIMEOUT
        )
        if name is None and avatar is None:
            raise XMPPError("item-not-found", f"No Matrix profile for {mxid}")
        self._answer(iq, _vcard_element(name or mxid, name, avatar, mimetype, mxid=mxid))

    # --- XEP-0100 prompt ----------------------------------------------------------------------

    async def _gateway(self, iq: Iq) -> None:
        """Turn a typed Matrix ID into the JID to add to the roster (XEP-0100 §6.3)."""
        if not self._is_domain(iq["to"]):
            raise XMPPError("service-unavailable", f"Ask {self._cfg.jid} instead")
        query = ET.Element(f"{{{GATEWAY_NS}}}query")
        if iq["type"] == "get":
            desc = ET.SubElement(query, f"{{{GATEWAY_NS}}}desc")
            desc.text = "Enter a Matrix ID, e.g. @alice:example.org"
            ET.SubElement(query, f"{{{GATEWAY_NS}}}prompt").text = "Matrix ID"
        else:
            typed = iq.xml.findtext(f"{{{GATEWAY_NS}}}query/{{{GATEWAY_NS}}}prompt") or ""
            ET.SubElement(query, f"{{{GATEWAY_NS}}}jid").text = self._jid_for(typed.strip())
        self._answer(iq, query)

    def _jid_for(self, typed: str) -> str:
        if typed and not typed.startswith("@") and ":" in typed:
            typed = "@" + typed  # "alice:example.org" is what people often type
        ghost = self._ctx.parse_ghost_mxid(typed)
        if ghost is not None and is_valid_jid(ghost) and split_jid(ghost)[2] is None:
            return ghost  # a Matrix ghost of an XMPP user: that is their real JID
        try:
            return mxid_to_jid(typed, self._cfg.jid)
        except ValueError:
            raise XMPPError(
                "bad-request",
                f"{typed or 'Nothing'} is not a Matrix ID. A Matrix ID looks like "
                "@alice:example.org: an @, the user name, a colon and the server.",
                etype="modify",
            ) from None

    # --- presence -----------------------------------------------------------------------------

    def _take_over_presence(self) -> None:
        """Answer probes and subscriptions from the JID alone, replacing slixmpp's roster.

        slixmpp keeps an in-memory roster per component JID: it answers a probe with
        ``unsubscribed`` unless the subscription was accepted since the process started, and
        answers ``unsubscribe`` itself. Matrix has no roster to consult, so every Matrix user
        accepts every subscription and is always available; the defaults would contradict that
        after each restart and double the answers.
        """
        xmpp = self._xmpp
        xmpp.del_event_handler("presence_probe", xmpp._handle_probe)
        xmpp.del_event_handler("presence_subscribe", xmpp._handle_subscribe)
        xmpp.del_event_handler("presence_unsubscribe", xmpp._handle_unsubscribe)
        xmpp.add_event_handler("presence_probe", self._probe)
        xmpp.add_event_handler("presence_subscribe", self._subscribe)
        xmpp.add_event_handler("presence_unsubscribe", self._unsubscribe)
        xmpp.add_event_handler("presence_subscribed", self._subscribed)

    def _presence_target(self, pres: Presence) -> JID | None:
        """The JID to answer from: the domain (XEP-0100 transports are roster items) or a
        Matrix user the sender's domain may reach by the federation policy; None for anything
        else on our domain."""
        to = pres["to"]
        if not self._ours(to):
            return None
        if self._is_domain(to):
            return JID(self._cfg.jid)
        mxid = self._mxid_of(to)
        if mxid is None or self._ctx.federation.refusal(
            NETWORK, pres["from"].domain, mxid, entry="xmpp presence"
        ):
            return None
        return JID(to.bare)

    async def _detailed_for(self, target: JID, asker: JID) -> bool:
        """Whether ``asker`` sees ``target``'s real show and status: only someone the Matrix
        user has a DM with. Anyone else (any server can probe any address) gets a plain
        available presence, so a stranger cannot watch when a Matrix user is away."""
        mxid = self._mxid_of(target) if target.user else None
        if mxid is None:
            return False
        key = dm_key(asker.bare, mxid)
        return await self._ctx.store.get_portal(key.remote_id, key.receiver) is not None

    async def send_presence(self, pfrom: JID, pto: JID, ptype: PresenceTypes | None = None, *,
                            detailed: bool = True) -> None:  # fmt: skip
        """Send presence as ``pfrom``; an available one of a Matrix user carries caps and the
        XEP-0153 hash of their avatar (looked up first; see :mod:`bridge.xmpp.presence`).

        ``detailed`` False (an answer to someone without a DM): no show or status, and the
        avatar only of a user of the hub itself, so that a probe of an invented address on
        another Matrix server makes the bridge look nothing up there."""
        pres = self._xmpp.make_presence(pfrom=pfrom, pto=pto, ptype=ptype)
        mxid = self._mxid_of(pfrom) if ptype is None and pfrom.user else None
        if mxid is not None and detailed:
            self.states.decorate(pres, mxid, in_muc=bool(pfrom.resource))  # puppets have one
        if mxid is not None and pres["type"] != "unavailable":
            caps = ET.SubElement(pres.xml, f"{{{CAPS_NS}}}c")
            caps.attrib.update(hash="sha-1", node=CAPS_NODE, ver=USER_CAPS_VER)
            if detailed or self._local(mxid):
                pres.xml.append(update_element(await self.photos.hash_of(mxid)))
        pres.send()

    def _local(self, mxid: str) -> bool:
        return mxid.rsplit(":", 1)[-1].lower() == self._ctx.federation.local_domain

    async def _probe(self, pres: Presence) -> None:
        target = self._presence_target(pres)
        if target is not None:
            detailed = await self._detailed_for(target, pres["from"])
            await self.send_presence(target, pres["from"], detailed=detailed)

    async def _subscribe(self, pres: Presence) -> None:
        target = self._presence_target(pres)
        if target is None:
            if self._ours(pres["to"]):  # refuse, so the client does not wait forever
                await self.send_presence(
                    JID(pres["to"].bare), JID(pres["from"].bare), "unsubscribed"
                )
            return
        await self.send_presence(target, JID(pres["from"].bare), "subscribed")
        detailed = await self._detailed_for(target, pres["from"])
        await self.send_presence(target, pres["from"], detailed=detailed)
        if detailed and target.user and self._ask_back(target, pres["from"]):
            # mutual, with someone the Matrix user talks with
            await self.send_presence(target, JID(pres["from"].bare), "subscribe")

    def _ask_back(self, target: JID, contact: JID) -> bool:
        """Ask a contact back at most once a day: another gateway that also asks back (two
        hubs whose users talk) would otherwise answer each request with one, for ever."""
        key, now = (target.bare, contact.bare), time.monotonic()
        last = self._asked_back.get(key)
        if last is not None and now - last < ASK_BACK_SECONDS:
            return False
        self._asked_back[key] = now
        self._asked_back.move_to_end(key)
        while len(self._asked_back) > ASK_BACK_KEPT:
            self._asked_back.popitem(last=False)
        return True

    async def _subscribed(self, pres: Presence) -> None:
        """A contact accepted the Matrix user's subscription: presence (caps) to them again."""
        target = self._presence_target(pres)
        if target is not None and target.user and await self._detailed_for(target, pres["from"]):
            await self.send_presence(target, JID(pres["from"].bare))

    async def _unsubscribe(self, pres: Presence) -> None:
        """Acknowledge, and go offline for them: they no longer receive our presence, and
        without ``unavailable`` their client would show us online until it reconnects."""
        target = self._presence_target(pres)
        if target is not None:
            await self.send_presence(target, JID(pres["from"].bare), "unsubscribed")
            await self.send_presence(target, JID(pres["from"].bare), "unavailable")


def _vcard_element(
    full_name: str, nickname: str | None, photo: bytes | None, mimetype: str, *, mxid: str = ""
) -> ET.Element:
    vcard = ET.Element(f"{{{VCARD_NS}}}vCard")
    ET.SubElement(vcard, f"{{{VCARD_NS}}}FN").text = full_name
    if nickname:
        ET.SubElement(vcard, f"{{{VCARD_NS}}}NICKNAME").text = nickname
    if mxid:
        ET.SubElement(vcard, f"{{{VCARD_NS}}}URL").text = f"https://matrix.to/#/{mxid}"
    if photo is not None:
        element = ET.SubElement(vcard, f"{{{VCARD_NS}}}PHOTO")
        ET.SubElement(element, f"{{{VCARD_NS}}}TYPE").text = mimetype or "application/octet-stream"
        ET.SubElement(element, f"{{{VCARD_NS}}}BINVAL").text = base64.b64encode(photo).decode()
    return vcard
