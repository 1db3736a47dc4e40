"""A remote person's vCard (XEP-0054): their name and avatar for their ghost.

(Our own users' vCards are answered in :mod:`bridge.xmpp.identity`.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from xml.etree import ElementTree as ET

from slixmpp import JID, ComponentXMPP
from slixmpp.exceptions import IqError, IqTimeout

from bridge.core import Media, UserInfo
from bridge.xmpp.identity import VCARD_NS

VCARD_TIMEOUT = 5


async def fetch_vcard(
    xmpp: ComponentXMPP, own_jid: str, user: str, log: logging.Logger
) -> UserInfo | None:
    """Name and avatar from ``user``'s vCard, if they published one and answer in time."""
    iq = xmpp.make_iq_get(ito=JID(user), ifrom=JID(own_jid))
    iq.xml.append(iq.xml.makeelement(f"{{{VCARD_NS}}}vCard", {}))
    try:
        result = await iq.send(timeout=VCARD_TIMEOUT)
    except (IqError, IqTimeout) as err:
        log.debug("No vCard for %s: %s", user, err)
        return None
    card = result.xml.find(f"{{{VCARD_NS}}}vCard")
    return None if card is None else read_vcard(card)


def read_vcard(card: ET.Element) -> UserInfo:
    name = card.findtext(f"{{{VCARD_NS}}}NICKNAME") or card.findtext(f"{{{VCARD_NS}}}FN") or None
    avatar = None
    binval = card.findtext(f"{{{VCARD_NS}}}PHOTO/{{{VCARD_NS}}}BINVAL")
    if binval:
        try:
            data = base64.b64decode("".join(binval.split()), validate=True)
        except binascii.Error:
            data = b""
        if data:
            mimetype = card.findtext(f"{{{VCARD_NS}}}PHOTO/{{{VCARD_NS}}}TYPE") or "image/png"
            avatar = Media(data=data, mimetype=mimetype, filename="avatar",
                           avatar_id=hashlib.sha1(data).hexdigest())  # fmt: skip
    return UserInfo(name=name.strip() if name else None, avatar=avatar)
