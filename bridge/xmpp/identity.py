"""How Matrix users look to XMPP: disco#info, vCards, presence and the XEP-0100 prompt."""

from __future__ import annotations

from slixmpp import ComponentXMPP

from bridge.core import ConnectorContext
from bridge.xmpp.config import XmppConfig


class Identity:
    def __init__(self, xmpp: ComponentXMPP, cfg: XmppConfig, ctx: ConnectorContext) -> None:
        self._xmpp = xmpp
        self._cfg = cfg
        self._ctx = ctx
