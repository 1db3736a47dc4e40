"""When each benchmark message arrives: the Matrix side (``/sync``) and the remote side.

Messages carry a unique token as their body. :class:`Arrivals` maps a token to the
``time.perf_counter()`` of the moment the receiving side first saw it; the timed subclasses of
the end-to-end harness's :class:`MatrixUser`, :class:`RemoteNetwork` and :class:`XmppUser` feed
it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from slixmpp import Message

from tests.e2e.matrix_client import MatrixUser
from tests.e2e.xmpp_client import XmppUser
from tests.reference.remote import RemoteNetwork


class Arrivals:
    """Token → arrival time, with futures for the tokens someone waits for."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Future[float]] = {}

    def expect(self, token: str) -> asyncio.Future[float]:
        """A future resolved with the arrival time of ``token`` (at once if it came already)."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if token in self.seen:
            future.set_result(self.seen[token])
        else:
            self._waiting[token] = future
        return future

    def arrived(self, token: str, at: float) -> None:
        if token in self.seen:
            return
        self.seen[token] = at
        future = self._waiting.pop(token, None)
        if future is not None and not future.done():
            future.set_result(at)


class TimedMatrixUser(MatrixUser):
    """A :class:`MatrixUser` that timestamps every message body its ``/sync`` loop receives."""

    def __init__(self, mxid: str, token: str, base_url: str) -> None:
        super().__init__(mxid, token, base_url)
        self.arrivals = Arrivals()

    def _absorb(self, sync: dict[str, Any]) -> None:
        now = time.perf_counter()
        super()._absorb(sync)
        for room in sync.get("rooms", {}).get("join", {}).values():
            for event in room.get("timeline", {}).get("events", []):
                body = event.get("content", {}).get("body")
                if event.get("type") == "m.room.message" and isinstance(body, str):
                    self.arrivals.arrived(body, now)


@dataclass
class TimedRemoteNetwork(RemoteNetwork):
    """The reference network, timestamping the body of every message the bridge sends to it."""

    arrivals: Arrivals = field(default_factory=Arrivals)
    _timed: int = 0

    async def _notify(self) -> None:
        now = time.perf_counter()
        for action in self.actions[self._timed :]:
            if action.kind == "send" and isinstance(action.body.get("body"), str):
                self.arrivals.arrived(action.body["body"], now)
        self._timed = len(self.actions)
        await super()._notify()


class TimedXmppUser(XmppUser):
    """An :class:`XmppUser` that timestamps the body of every message stanza it receives.

    slixmpp fires ``message`` for each ``<message>`` with a ``<body>`` as soon as the stanza is
    parsed, in this event loop; the handler only reads the clock.
    """

    def __init__(self, jid: str, password: str, port: int) -> None:
        super().__init__(jid, password, port)
        self.arrivals = Arrivals()
        self.client.add_event_handler("message", self._timestamp)

    def _timestamp(self, msg: Message) -> None:
        now = time.perf_counter()
        body = msg["body"]
        if body:
            self.arrivals.arrived(str(body), now)
