"""A test XMPP user: a slixmpp client logged in to the test Prosody over plain TCP on loopback.

Every message and presence stanza the client receives is recorded (``messages``,
``presences``), whatever its type or payload, so tests can wait for chat states, markers,
reactions or errors as easily as for bodies. Waits that time out raise ``AssertionError`` listing
the last stanzas received.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any, cast

import aiohttp
import slixmpp
from slixmpp import JID, Message, Presence
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

# Present in slixmpp 1.17: disco, MUC, OOB, chat states, receipts, corrections, markers,
# unique ids, MAM, HTTP upload, retraction, reactions, fallback indication, replies, vCard.
PLUGINS = (
    "xep_0030",
    "xep_0045",
    "xep_0054",
    "xep_0066",
    "xep_0085",
    "xep_0184",
    "xep_0308",
    "xep_0313",
    "xep_0333",
    "xep_0359",
    "xep_0363",
    "xep_0424",
    "xep_0428",
    "xep_0444",
    "xep_0461",
)

CONNECT_TIMEOUT = 15.0


class XmppUser:
    """One logged-in XMPP account (``jid`` is the bare JID; the resource is ``resource``)."""

    def __init__(
        self,
        jid: str,
        password: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        resource: str = "test",
        upload_service: str | None = None,
    ) -> None:
        self.jid = JID(jid).bare
        self.host = host
        self.port = port
        self.upload_service = upload_service or f"upload.{JID(jid).domain}"
        self.messages: list[Message] = []
        self.presences: list[Presence] = []
        self.received: list[Message | Presence] = []
        client = slixmpp.ClientXMPP(f"{self.jid}/{resource}", password)
        client.enable_starttls = False
        client.enable_direct_tls = False
        client.enable_plaintext = True
        client.plugin["feature_mechanisms"].unencrypted_plain = True
        client.plugin["feature_mechanisms"].unencrypted_scram = True
        for plugin in PLUGINS:
            client.register_plugin(plugin)
        client.register_handler(
            Callback("test:record-message", MatchXPath("{jabber:client}message"), self._record)
        )
        client.register_handler(
            Callback("test:record-presence", MatchXPath("{jabber:client}presence"), self._record)
        )
        self.client = client
        self._changed = asyncio.Event()

    @property
    def full_jid(self) -> str:
        return str(self.client.boundjid.full)

    # -- connection ---------------------------------------------------------------------------

    async def connect(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Log in, wait for the session, then send initial presence."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[None] = loop.create_future()

        def done(error: str | None) -> Callable[[Any], None]:
            def handler(event: Any) -> None:
                if outcome.done():
                    return
                if error is None:
                    outcome.set_result(None)
                else:
                    outcome.set_exception(AssertionError(f"{self.jid}: {error}: {event}"))

            return handler

        handlers = {
            "session_start": done(None),
            "failed_auth": done("authentication failed"),
            "connection_failed": done("connection failed"),
            "disconnected": done("disconnected while logging in"),
        }
        for name, handler in handlers.items():
            self.client.add_event_handler(name, handler, disposable=True)
        try:
            self.client.connect(host=self.host, port=self.port)
            try:
                await asyncio.wait_for(outcome, timeout)
            except TimeoutError:
                raise AssertionError(f"{self.jid}: no session within {timeout} s") from None
        finally:
            for name, handler in handlers.items():
                self.client.del_event_handler(name, handler)
        self.client.send_presence()

    async def close(self) -> None:
        """Close the stream (waits at most a second for the server's answer)."""
        try:
            await asyncio.wait_for(self.client.disconnect(wait=1.0), 3)
        except TimeoutError:
            self.client.abort()

    async def __aenter__(self) -> XmppUser:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending ------------------------------------------------------------------------------

    def _message(self, to: str, *, groupchat: bool, body: str | None = None) -> Message:
        return self.client.make_message(
            mto=JID(to), mbody=body, mtype="groupchat" if groupchat else "chat"
        )

    def send_chat(
        self,
        to: str,
        body: str,
        *,
        origin_id: str | None = None,
        reply_to: tuple[str, str] | None = None,
        groupchat: bool = False,
        oob_url: str | None = None,
        receipt: bool = False,
    ) -> str:
        """Send a message; returns its ``id`` (also used as XEP-0359 origin-id by default).

        ``reply_to`` is ``(message id, author JID)`` for a XEP-0461 reply; ``oob_url`` adds a
        XEP-0066 ``jabber:x:oob`` URL (the body should then be the URL too, by convention).
        """
        msg = self._message(to, groupchat=groupchat, body=body)
        msg["origin_id"]["id"] = origin_id or msg["id"]
        if reply_to is not None:
            msg["reply"]["id"], msg["reply"]["to"] = reply_to
        if oob_url is not None:
            msg["oob"]["url"] = oob_url
        if receipt:
            msg["request_receipt"] = True
        msg.send()
        return str(msg["id"])

    def send_groupchat(self, room: str, body: str, **kwargs: Any) -> str:
        return self.send_chat(room, body, groupchat=True, **kwargs)

    def correct(self, to: str, original_id: str, new_body: str, *, groupchat: bool = False) -> str:
        """XEP-0308 last message correction; returns the correction's id."""
        msg = self._message(to, groupchat=groupchat, body=new_body)
        msg["replace"]["id"] = original_id
        msg.send()
        return str(msg["id"])

    def retract(self, to: str, target_id: str, *, groupchat: bool = False) -> str:
        """XEP-0424 retraction (with the usual fallback body); returns its id."""
        msg = self.client.plugin["xep_0424"].send_retraction(
            JID(to), target_id, mtype="groupchat" if groupchat else "chat"
        )
        return str(msg["id"])

    def react(
        self, to: str, target_id: str, emojis: Iterable[str], *, groupchat: bool = False
    ) -> str:
        """XEP-0444: set the full set of reactions (an empty set removes them); returns the id."""
        msg = self._message(to, groupchat=groupchat)
        self.client.plugin["xep_0444"].set_reactions(msg, target_id, emojis)
        msg.enable("store")
        msg.send()
        return str(msg["id"])

    def chat_state(self, to: str, state: str, *, groupchat: bool = False) -> None:
        """XEP-0085: active, composing, paused, inactive or gone."""
        msg = self._message(to, groupchat=groupchat)
        msg["chat_state"] = state
        msg.send()

    def displayed_marker(self, to: str, msg_id: str, *, groupchat: bool = False) -> None:
        """XEP-0333 ``displayed`` for ``msg_id`` (in a MUC: the room's stanza-id)."""
        msg = self._message(to, groupchat=groupchat)
        msg["displayed"]["id"] = msg_id
        msg.send()

    async def join_muc(self, room: str, nick: str, *, timeout: float = 15.0) -> None:
        """Join ``room`` as ``nick`` and wait for the self-presence (and the subject)."""
        try:
            await self.client.plugin["xep_0045"].join_muc_wait(
                JID(room), nick, maxstanzas=0, timeout=timeout
            )
        except TimeoutError:
            raise AssertionError(
                f"{self.jid} did not join {room} within {timeout} s\n{self.recent()}"
            ) from None

    def leave_muc(self, room: str, nick: str) -> None:
        self.client.plugin["xep_0045"].leave_muc(JID(room), nick)

    async def upload_file(
        self, data: bytes, filename: str, content_type: str = "application/octet-stream"
    ) -> str:
        """XEP-0363: request a slot from the upload component, PUT the bytes; returns the GET URL."""
        iq = await self.client.plugin["xep_0363"].request_slot(
            JID(self.upload_service), filename, len(data), content_type, timeout=10
        )
        slot = iq["http_upload_slot"]
        headers = {h["name"]: h["value"] for h in slot["put"]["headers"]}
        headers["Content-Type"] = content_type
        async with (
            aiohttp.ClientSession() as session,
            session.put(slot["put"]["url"], data=data, headers=headers) as resp,
        ):
            if resp.status >= 300:
                raise AssertionError(f"upload PUT -> {resp.status}: {await resp.text()}")
        return str(slot["get"]["url"])

    # -- receiving ----------------------------------------------------------------------------

    def _record(self, stanza: StanzaBase) -> None:
        # The handlers match only <message/> and <presence/>, which slixmpp builds as these.
        assert isinstance(stanza, Message | Presence), stanza
        self.received.append(stanza)
        if isinstance(stanza, Message):
            self.messages.append(stanza)
        else:
            self.presences.append(stanza)
        self._changed.set()

    def recent(self, count: int = 15) -> str:
        """The last received stanzas, for failure messages."""
        lines = [str(stanza) for stanza in self.received[-count:]]
        return f"last {len(lines)} stanzas received by {self.jid}:\n" + "\n".join(lines)

    async def _wait(
        self, stanzas: list[Any], predicate: Callable[[Any], bool], timeout: float, what: str
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        checked = 0
        while True:
            for stanza in stanzas[checked:]:
                if predicate(stanza):
                    return stanza
            checked = len(stanzas)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.jid}: no matching {what} within {timeout} s\n{self.recent()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for_message(
        self, predicate: Callable[[Message], bool], timeout: float = 15.0
    ) -> Message:
        """The first received message stanza (any type, since connect) matching ``predicate``."""
        return cast(Message, await self._wait(self.messages, predicate, timeout, "message"))

    async def wait_for_presence(
        self, predicate: Callable[[Presence], bool], timeout: float = 15.0
    ) -> Presence:
        return cast(Presence, await self._wait(self.presences, predicate, timeout, "presence"))

    def seen(self, predicate: Callable[[Message], bool]) -> bool:
        return any(predicate(m) for m in self.messages)
