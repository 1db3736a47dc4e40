"""Catching up on a bridged MUC from its archive (XEP-0313 MAM, paged with XEP-0059 RSM).

After any gap (a component reconnect, a rejoin after a kick, a bridge restart) the listener
rejoins with ``<history maxstanzas='0'/>`` and asks the room's archive for everything after the
last ``stanza-id`` it took (:class:`bridge.xmpp.store.ArchiveMark`), one page at a time, until
the archive says it is complete. Each page goes through the same path as live messages
(``take``), so into the core's remote inbox in order, deduplicated by the room's stanza-id.

Results arrive as messages before the query's ``<fin/>``; :meth:`Archive.on_result` is called
from the stream (not the inbound queue), so a page is whole when ``<fin/>`` is read. A result is
taken only if the room itself sent it, to our listener, for a query still open on that room,
and no more than were asked for: a stranger's forged results or a page for another query change
nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from slixmpp import JID, Message
from slixmpp.exceptions import IqError, IqTimeout

from bridge.xmpp.component import MAM_NS, Component
from bridge.xmpp.store import ArchiveMark

RSM_NS = "http://jabber.org/protocol/rsm"
FORWARD_NS = "urn:xmpp:forward:0"
DELAY_NS = "urn:xmpp:delay"
SID_NS = "urn:xmpp:sid:0"
DATA_NS = "jabber:x:data"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
CLIENT_NS = "jabber:client"
COMPONENT_NS = "jabber:component:accept"

PAGE_SIZE = 50
"""Messages asked for per page: a page is held in memory until it is in the remote inbox."""
QUERY_TIMEOUT = 60
DISCO_TIMEOUT = 15
CLOCK_MARGIN_MS = 120_000
"""Searching by time (when the archive no longer knows our last stanza-id) starts this much
earlier than we last heard from the room: the servers' clocks may differ; dedupe drops the
overlap."""

Take = Callable[[str, Message], Awaitable[None]]
"""Handle one archived message of a room: ``(room, stanza)``, the stanza rebuilt as the room
would send it live, with the room's ``stanza-id`` and a XEP-0203 delay."""


class ArchiveError(Exception):
    """The archive refused or did not answer: the caller falls back and says so."""


@dataclass
class _Query:
    room: str
    queryid: str
    results: list[Message] = field(default_factory=list)
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    results: list[Message]
    last: str
    complete: bool


class Archive:
    def __init__(
        self,
        component: Component,
        listener: str,
        log: logging.Logger,
        take: Take,
        *,
        query_timeout: float = QUERY_TIMEOUT,
    ) -> None:
        self._component = component
        self._query_timeout = query_timeout
        self._listener = listener
        """The listener's full JID: results go to it and only it asks."""
        self._log = log
        self._take = take
        self._queries: dict[str, _Query] = {}

    async def has_mam(self, room: str) -> bool:
        """Whether ``room`` keeps an archive we can page through (disco#info)."""
        iq = self._component.xmpp.make_iq_get(ito=JID(room), ifrom=JID(self._listener))
        iq.xml.append(iq.xml.makeelement(f"{{{DISCO_INFO}}}query", {}))
        try:
            result = await iq.send(timeout=DISCO_TIMEOUT)
        except (IqError, IqTimeout) as err:
            self._log.info("No disco#info from %s (%s); using MUC history", room, err)
            return False
        features = {
            f.get("var")
            for f in result.xml.iterfind(f"{{{DISCO_INFO}}}query/{{{DISCO_INFO}}}feature")
        }
        return MAM_NS in features

    async def catch_up(self, room: str, mark: ArchiveMark) -> int:
        """Take every archived message of ``room`` after ``mark``, oldest first; returns how
        many were handed to ``take``. Raises :class:`ArchiveError` if the archive fails; what
        was taken before stays taken."""
        after: str | None = mark.stanza_id or None
        start = None if after else mark.seen_at - CLOCK_MARGIN_MS
        taken = 0
        while True:
            try:
                page = await self.page(room, after=after, start=start)
            except ArchiveError as err:
                if after is None or "item-not-found" not in str(err) or taken:
                    raise
                # The archive forgot our last id (expired, or a server without persistent
                # archives restarted): search by time instead.
                self._log.info("%s no longer knows stanza-id %s; catching up since %s",
                               room, after, _stamp(mark.seen_at - CLOCK_MARGIN_MS))  # fmt: skip
                after, start = None, mark.seen_at - CLOCK_MARGIN_MS
                continue
            for msg in page.results:
                await self._take(room, msg)
            taken += len(page.results)
            if page.complete or not page.results or not page.last or page.last == after:
                break
            after, start = page.last, None
        if taken:
            self._log.info("Caught up on %d archived messages of %s", taken, room)
        return taken

    async def page(self, room: str, *, after: str | None, start: int | None) -> Page:
        """One page of ``room``'s archive after stanza-id ``after`` (or from ``start`` ms)."""
        query = _Query(room, uuid.uuid4().hex)
        iq = self._component.xmpp.make_iq_set(ito=JID(room), ifrom=JID(self._listener))
        iq.xml.append(_query_xml(query.queryid, after, start))
        self._queries[query.queryid] = query
        try:
            result = await iq.send(timeout=self._query_timeout)
        except IqError as err:
            condition = err.iq["error"]["condition"] or "undefined-condition"
            raise ArchiveError(f"{room} refused the archive query: {condition}") from None
        except IqTimeout:
            raise ArchiveError(f"{room} did not answer the archive query") from None
        finally:
            del self._queries[query.queryid]
        if query.dropped:
            self._log.warning("Dropped %d archive results of %s beyond the %d asked for",
                              query.dropped, room, PAGE_SIZE)  # fmt: skip
        fin = result.xml.find(f"{{{MAM_NS}}}fin")
        if fin is None:
            raise ArchiveError(f"{room} answered the archive query without <fin/>")
        last = fin.findtext(f"{{{RSM_NS}}}set/{{{RSM_NS}}}last") or ""
        complete = fin.get("complete") in ("true", "1")
        if query.dropped and query.results:
            # The server's <last> is past what was dropped: go on from the last one taken.
            last, complete = query.results[-1]["stanza_id"]["id"], False
        return Page(query.results, last, complete)

    def on_result(self, msg: Message) -> None:
        """A ``<result/>`` from the stream, in stream order (before its query's ``<fin/>``)."""
        result = msg.xml.find(f"{{{MAM_NS}}}result")
        if result is None:
            return
        query = self._queries.get(result.get("queryid") or "")
        sender, to = msg["from"], str(msg["to"])
        if query is None or sender.resource or sender.bare != query.room or to != self._listener:
            self._log.debug("Ignored an archive result from %s for query %r: not ours",
                            sender, result.get("queryid"))  # fmt: skip
            return
        stanza_id = result.get("id") or ""
        inner = result.find(f"{{{FORWARD_NS}}}forwarded/{{{CLIENT_NS}}}message")
        if inner is None:
            inner = result.find(f"{{{FORWARD_NS}}}forwarded/{{{COMPONENT_NS}}}message")
        if not stanza_id or inner is None or JID(inner.get("from", "")).bare != query.room:
            self._log.debug("Ignored a malformed archive result from %s", sender)
            return
        if len(query.results) >= PAGE_SIZE:
            query.dropped += 1
            return
        delay = result.find(f"{{{FORWARD_NS}}}forwarded/{{{DELAY_NS}}}delay")
        query.results.append(self._rebuild(query.room, stanza_id, inner, delay))

    def _rebuild(
        self, room: str, stanza_id: str, inner: ET.Element, delay: ET.Element | None
    ) -> Message:
        """The archived message as the room sends it live, to our listener."""
        xml = _copy(inner)
        for el in xml.iter():
            if el.tag.startswith(f"{{{CLIENT_NS}}}"):
                el.tag = f"{{{COMPONENT_NS}}}" + el.tag[len(CLIENT_NS) + 2 :]
        for sid in xml.findall(f"{{{SID_NS}}}stanza-id"):
            xml.remove(sid)  # only the archive's own id counts
        xml.append(xml.makeelement(f"{{{SID_NS}}}stanza-id", {"id": stanza_id, "by": room}))
        if delay is not None and xml.find(f"{{{DELAY_NS}}}delay") is None:
            xml.append(_copy(delay))
        xml.set("to", self._listener)
        xml.set("type", "groupchat")
        return Message(stream=self._component.xmpp, xml=xml)


def _copy(element: ET.Element) -> ET.Element:
    return ET.fromstring(ET.tostring(element))


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _query_xml(queryid: str, after: str | None, start: int | None) -> ET.Element:
    query = ET.Element(f"{{{MAM_NS}}}query", {"queryid": queryid})
    form = ET.SubElement(query, f"{{{DATA_NS}}}x", {"type": "submit"})
    field_ = ET.SubElement(form, f"{{{DATA_NS}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    ET.SubElement(field_, f"{{{DATA_NS}}}value").text = MAM_NS
    if start is not None:
        field_ = ET.SubElement(form, f"{{{DATA_NS}}}field", {"var": "start"})
        ET.SubElement(field_, f"{{{DATA_NS}}}value").text = _stamp(start)
    rsm = ET.SubElement(query, f"{{{RSM_NS}}}set")
    ET.SubElement(rsm, f"{{{RSM_NS}}}max").text = str(PAGE_SIZE)
    if after:
        ET.SubElement(rsm, f"{{{RSM_NS}}}after").text = after
    return query
