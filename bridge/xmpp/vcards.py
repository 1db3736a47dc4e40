"""A remote person's vCard (XEP-0054): their name and avatar for their ghost.

(Our own users' vCards are answered in :mod:`bridge.xmpp.identity`; later avatar changes come
through :mod:`bridge.xmpp.avatars`.)
"""

from __future__ import annotations

import logging
from xml.etree import ElementTree as ET

from slixmpp import JID, ComponentXMPP
from slixmpp.exceptions import IqError, IqTimeout

from bridge.core import UserInfo
from bridge.xmpp.avatars import AvatarRefused, avatar_media, vcard_photo
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
    return None if card is None else read_vcard(card, log)


def read_vcard(card: ET.Element, log: logging.Logger | None = None) -> UserInfo:
    """Name and avatar of a vCard; a picture that is too large or no image is left out."""
    name = card.findtext(f"{{{VCARD_NS}}}NICKNAME") or card.findtext(f"{{{VCARD_NS}}}FN") or None
    try:
        photo = vcard_photo(card)
    except AvatarRefused as err:
        if log is not None:
            log.info("vCard photo left out: %s", err)
        photo = None
    avatar = avatar_media(photo) if photo is not None else None
    return UserInfo(name=name.strip() if name else None, avatar=avatar)
