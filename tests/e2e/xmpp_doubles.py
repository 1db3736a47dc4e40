"""What the XMPP server harness tests share: two logged-in users, and a bare external component
that records what the server routes to its domain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import slixmpp
from slixmpp import Message

from tests.e2e.xmpp_client import XmppUser
from tests.e2e.xmpp_server import XmppServerProcess


@asynccontextmanager
async def two_users(server: XmppServerProcess, n: int) -> AsyncIterator[tuple[XmppUser, XmppUser]]:
    """``alice<n>`` and ``bob<n>``, registered and connected."""
    alice = XmppUser(server.register(f"alice{n}", "pw-a"), "pw-a", server.c2s_port)
    bob = XmppUser(server.register(f"bob{n}", "pw-b"), "pw-b", server.c2s_port)
    await alice.connect()
    await bob.connect()
    try:
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()


class RecordingComponent(slixmpp.ComponentXMPP):
    """A minimal external component that records the messages routed to its domain."""

    def __init__(self, domain: str, secret: str, server: XmppServerProcess) -> None:
        super().__init__(domain, secret, "127.0.0.1", server.component_port, fix_error_ns=True)
        self.received: list[Message] = []
        self.sessions = 0
        self.up = asyncio.Event()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self.received.append)
        self.register_plugin("xep_0363")

    def _on_start(self, _event: object) -> None:
        self.sessions += 1
        self.up.set()

    async def wait_up(self, timeout: float = 15.0) -> None:
        await asyncio.wait_for(self.up.wait(), timeout)

    async def wait_for(self, body: str, timeout: float = 15.0) -> Message:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for msg in self.received:
                if msg["body"] == body:
                    return msg
            await asyncio.sleep(0.05)
        raise AssertionError(f"component did not receive {body!r}: {self.received}")
