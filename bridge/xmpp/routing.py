"""Which of the hub's XMPP components serves a JID, and what a component does with a message
meant for another one (issue #14; the rules are told in components.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from slixmpp import Message

from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.protocol.escaping import jid_to_mxid, mxid_to_jid, split_jid


class ComponentRoutes:
    """Which component (by index in the config order; 0 is the default) serves a remote JID."""

    def __init__(self, configs: Sequence[XmppConfig]) -> None:
        self.configs = list(configs)
        self._own: dict[str, int] = {}
        self._exact: dict[str, int] = {}
        self._suffixes: list[tuple[str, int]] = []
        for index, cfg in enumerate(self.configs):
            for name in (cfg.jid, cfg.rooms_domain):
                if name:
                    self._own.setdefault(name, index)
            for domain in cfg.domains:
                if domain.startswith("*."):
                    self._suffixes.append((domain[1:], index))  # ".agency.example"
                else:
                    self._exact.setdefault(domain, index)
        self._suffixes.sort(key=lambda entry: -len(entry[0]))

    def index_of(self, remote_id: str) -> int:
        try:
            domain = split_jid(remote_id.strip())[1].lower()
        except ValueError:
            return 0  # not a JID: whatever is refused, the default component refuses it
        if domain in self._own:
            return self._own[domain]
        if domain in self._exact:
            return self._exact[domain]
        for suffix, index in self._suffixes:
            if domain.endswith(suffix):
                return index
        return 0

    def jid_for(self, remote_id: str) -> str:
        """The domain of the component that serves ``remote_id``."""
        return self.configs[self.index_of(remote_id)].jid

    def is_ours(self, domain: str) -> bool:
        """Whether ``domain`` is one of the bridge's own (a component or a rooms domain)."""
        return domain.lower() in self._own


def misdirected(
    component: Component, stanza: Message, route: Callable[[str], str], log: logging.Logger
) -> bool:
    """Whether ``stanza`` is not for ``component`` to hear, in which case it has been dealt with.

    A message addressed outside the component's domain (a server that routes wrongly, or a
    forgery) is dropped. A message from a JID another component serves is refused with the
    address to write to instead, so that a conversation never runs through two components;
    errors and group chat messages are only dropped (an error to a MUC gets our occupant kicked).
    """
    own = component.domain
    if stanza["to"].domain != own:
        log.warning("Dropped a message from %s to %s: not an address of component %s",
                    stanza["from"], stanza["to"], own)  # fmt: skip
        return True
    served_by = route(stanza["from"].bare)
    if served_by == own:
        return False
    log.warning("Refused a message from %s to %s: %s is served by component %s",
                stanza["from"], stanza["to"], stanza["from"].domain, served_by)  # fmt: skip
    if stanza["type"] not in ("error", "groupchat"):
        mxid = jid_to_mxid(stanza["to"].bare, own)
        instead = mxid_to_jid(mxid, served_by) if mxid is not None else served_by
        component.reply_error(
            stanza, "not-allowed", f"From your server, write to {instead} instead."
        )
    return True
