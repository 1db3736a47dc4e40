"""The XEP-0114 component stream, with the reconnect slixmpp does not do by itself.

Inbound stanzas are put on one queue and handled one at a time, so a correction can never
overtake the message it corrects on the way to the portal queue.

slixmpp reconnects after a stream that closed only if asked (``connect()`` again from the
``disconnected`` handler), and while the server stays away it waits longer and longer between
attempts (3, 9, 21, 45, 93 s … up to 5 min); the wait is capped here at
:data:`MAX_RECONNECT_WAIT`, so the component is back seconds after the server is.

A server that accepts the connection and then refuses the component (wrong secret, a domain it
does not know: a stream error before the session starts) is a configuration problem, not an
outage: those attempts back off from 1 s, doubling up to :data:`MAX_REFUSED_WAIT`, instead of
hammering the server twice a second for ever (:func:`reconnect_delay`).

Every attempt and its outcome is kept in :attr:`Component.link` for ``/_pontis/health`` and the
metrics (link.py); the state is reported (``on_state``) when it changes, not at every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slixmpp import ComponentXMPP, Message, Presence
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from bridge.core import TransientError
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.link import Link, redact

PLUGINS = (
    "xep_0030", "xep_0066", "xep_0085", "xep_0184", "xep_0199", "xep_0203", "xep_0308",
    "xep_0333", "xep_0359", "xep_0363", "xep_0424", "xep_0428", "xep_0444", "xep_0461",
)  # fmt: skip

Stanza = Message | Presence
MAM_NS = "urn:xmpp:mam:2"
MAX_RECONNECT_WAIT = 5.0
"""Longest wait between two connection attempts while the XMPP server is away, in seconds."""
RECONNECT_WAIT = 0.5
"""Wait before reconnecting after a session that had started ended."""
FIRST_REFUSED_WAIT = 1.0
MAX_REFUSED_WAIT = 300.0
"""Longest wait between two attempts the server refused (the secret or domain is wrong)."""


def reconnect_delay(refused: int) -> float:
    """Seconds before the next attempt after ``refused`` attempts in a row that the server
    refused before the session started (0: the last session had started)."""
    if refused <= 0:
        return RECONNECT_WAIT
    return min(FIRST_REFUSED_WAIT * 2.0 ** min(refused - 1, 16), MAX_REFUSED_WAIT)


class _ComponentXMPP(ComponentXMPP):
    def reschedule_connection_attempt(self) -> asyncio.Future[Any] | None:
        attempt = super().reschedule_connection_attempt()
        # The next attempt reads the wait when it starts, which is after this returns.
        self._connect_loop_wait = min(self._connect_loop_wait, MAX_RECONNECT_WAIT)
        return attempt

    # slixmpp keeps a roster node per presence sender and an item per (recipient, sender) for
    # ever; any server may send presence from invented addresses, and the bridge answers
    # presence from the JID alone (identity.py), so none is kept: the events still fire.
    def _handle_presence(self, presence: Presence) -> None:
        self.event("presence", presence)
        self.event(f"presence_{presence['type']}", presence)
        if presence["type"] in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            self.event("changed_subscription", presence)

    def _handle_available(self, presence: Presence) -> None:
        return None

    def _handle_unavailable(self, presence: Presence) -> None:
        return None

    def _handle_subscribed(self, presence: Presence) -> None:
        return None

    def _handle_unsubscribed(self, presence: Presence) -> None:
        return None

    # Subscribe, unsubscribe and probe: the Matrix users' component answers them itself
    # (identity.py replaces these); the rooms' component has nothing to say to them.
    def _handle_subscribe(self, presence: Presence) -> None:
        return None

    def _handle_unsubscribe(self, presence: Presence) -> None:
        return None

    def _handle_probe(self, presence: Presence) -> None:
        return None


class Component:
    def __init__(
        self,
        domain: str,
        cfg: XmppConfig,
        log: logging.Logger,
        *,
        on_stanza: Callable[[Stanza], Awaitable[None]],
        on_state: Callable[[bool, str], Awaitable[None]],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.domain = domain
        self._sleep = sleep
        self._clock = clock
        self.link = Link(domain)
        self._reported: str | None = None
        """The error last reported down through ``on_state`` (None: up, or nothing yet)."""
        self._refused = 0
        """Attempts in a row that ended before the session started."""
        self._stream_error = ""
        self._cfg = cfg
        self._log = log
        self._on_stanza = on_stanza
        self._on_state = on_state
        self.xmpp = _ComponentXMPP(domain, cfg.secret, cfg.host, cfg.port, fix_error_ns=True)
        for plugin in PLUGINS:
            self.xmpp.register_plugin(plugin)
        # Delivery receipts are sent by the client once the message is on Matrix, not on arrival.
        self.xmpp.plugin["xep_0184"].auto_ack = False
        self.xmpp.add_event_handler("session_start", self._session_start)
        self.xmpp.add_event_handler("disconnected", self._disconnected)
        self.xmpp.add_event_handler("stream_error", self._on_stream_error)
        self.xmpp.add_event_handler("connection_failed", self._connection_failed)
        self.xmpp.add_event_handler("reconnect_delay", self._reconnect_delay)
        # slixmpp's "message" event skips messages without a body (reactions, chat states,
        # markers), so every message and presence stanza is taken straight from the stream.
        self.xmpp.register_handler(Callback("pontis message", StanzaPath("message"), self._queue))
        self.xmpp.register_handler(Callback("pontis presence", StanzaPath("presence"), self._queue))
        self.up = False
        self._stopping = False
        self._inbound: asyncio.Queue[Stanza] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.on_archive_result: Callable[[Message], None] | None = None
        """Takes MAM results (XEP-0313) in stream order, ahead of the inbound queue, so a page
        is whole when its query's answer is read; without it they are dropped."""

    def start(self) -> None:
        self._stopping = False
        self._worker = asyncio.create_task(self._consume(), name="xmpp-inbound")
        self.link.starting(self._clock())
        self._log.info(
            "Connecting component %s to %s:%d", self.domain, self._cfg.host, self._cfg.port
        )
        self.xmpp.connect()

    async def stop(self) -> None:
        self._stopping = True
        self.link.stopped(self._clock())
        # Also while not up: slixmpp may be between connection attempts (the server is away)
        # or mid-handshake, and would otherwise keep connecting after the bridge stopped.
        self.xmpp.cancel_connection_attempt()
        self.xmpp.disconnect()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    def require_up(self) -> None:
        if not self.up:
            raise TransientError(
                "XMPP component not connected",
                user_message="The XMPP server is not reachable right now; the bridge kept retrying.",
            )

    def send(self, stanza: StanzaBase) -> None:
        """Send, never with a ``from`` outside our domain: the server would drop the stream."""
        self.require_up()
        sender = stanza["from"]
        if sender.domain != self.domain:
            raise ValueError(f"refusing to send a stanza from {sender!s}")
        stanza.send()

    def reply_error(self, stanza: Stanza, condition: str, text: str, kind: str = "cancel") -> None:
        """Answer ``stanza`` with an error (``kind`` ``wait``: the sender may try again later)."""
        if not self.up:
            self._log.warning("Could not answer %s from %s with %s: not connected",
                              stanza["id"], stanza["from"], condition)  # fmt: skip
            return
        reply = stanza.reply(clear=False)
        reply["from"], reply["to"] = stanza["to"], stanza["from"]
        reply["id"] = stanza["id"]  # Message.reply() makes a new one; the sender needs theirs
        reply["type"] = "error"
        reply["error"]["condition"] = condition
        reply["error"]["type"] = kind
        reply["error"]["text"] = text
        self.send(reply)

    def _queue(self, stanza: StanzaBase) -> None:
        if isinstance(stanza, Message) and stanza.xml.find(f"{{{MAM_NS}}}result") is not None:
            if self.on_archive_result is not None:
                self.on_archive_result(stanza)
            return  # never a message to bridge as it stands
        if isinstance(stanza, Message | Presence):
            self._inbound.put_nowait(stanza)

    async def _consume(self) -> None:
        while True:
            stanza = await self._inbound.get()
            try:
                await self._on_stanza(stanza)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("Handling a stanza from %s failed", stanza["from"])

    def _on_stream_error(self, error: StanzaBase) -> None:
        if error is None:
            self._stream_error = ""
            return
        condition, text = str(error.get("condition") or ""), str(error.get("text") or "")
        described = f"{condition}: {text}" if condition and text else condition or text
        self._stream_error = redact(described, self._cfg.secret)  # the server's text: logged

    async def _down(self, error: str, retry_in: float | None = None) -> None:
        """Keep ``error`` (redacted) as why the stream is not up, and report it if it is new."""
        error = redact(error, self._cfg.secret)
        self.link.down(self._clock(), error, retry_in)
        if error != self._reported:
            self._reported = error
            await self._on_state(False, error)

    def _reconnect_delay(self, seconds: float) -> None:
        self.link.retry_at(self._clock(), seconds)

    async def _connection_failed(self, error: object) -> None:
        error = redact(str(error), self._cfg.secret)
        # One line per attempt: an operator sees the server is away, and that the bridge is not
        # hammering it (slixmpp waits 3 s, then 5 s between attempts: MAX_RECONNECT_WAIT).
        self._log.warning(
            "Cannot reach the XMPP server of component %s at %s:%d (%s); trying again within "
            "%.0f s", self.domain, self._cfg.host, self._cfg.port, error, MAX_RECONNECT_WAIT,
        )  # fmt: skip
        if not self._stopping:
            await self._down(f"cannot connect to {self._cfg.host}:{self._cfg.port}: {error}")

    async def _session_start(self, _: object) -> None:
        self.up = True
        self._refused = 0
        self._stream_error = ""
        self._reported = None
        self.link.up(self._clock())
        self._log.info("Component %s is connected", self.domain)
        await self._on_state(True, "")

    async def _disconnected(self, reason: object) -> None:
        reason = redact(str(reason), self._cfg.secret) if reason else "no reason given"
        was_up, self.up = self.up, False
        if self._stopping:
            if was_up:
                await self._on_state(False, f"disconnected: {reason}")
            return
        if was_up:
            self._refused = 0
            await self._down(f"disconnected: {reason}", reconnect_delay(0))
            self._log.warning("Component stream closed (%s); reconnecting", reason)
        else:
            self._refused += 1
            self._log.error(
                "The XMPP server closed the stream of component %s before the session started "
                "(%s): check the component's domain and secret in both configs; attempt %d, "
                "next in %.0f s",
                self.domain, self._stream_error or reason, self._refused,
                reconnect_delay(self._refused),
            )  # fmt: skip
            refusal = (
                f"stream error {self._stream_error}"
                if self._stream_error
                else f"closed before the session started ({reason})"
            )
            await self._down(f"refused by the server: {refusal}", reconnect_delay(self._refused))
        self._stream_error = ""
        await self._sleep(reconnect_delay(self._refused))
        if not self._stopping:
            self.xmpp.connect()
