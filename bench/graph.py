"""The Graph emulator in the benchmark process, timestamping the messages the bridge posts.

Microsoft Graph cannot be reached from the benchmark machine; the project's emulator
(``graph_emulator``, docs/graph-emulator.md) stands in for it, as in the end-to-end tests:
:class:`~tests.e2e.graph.GraphEmulator` runs it on a loopback port in this event loop, seeded with
one tenant, its app, three people and a relay account.

A message's arrival on the Teams side is the moment the emulator creates it: its Teamwork layer
calls its change listeners synchronously while handling the bridge's ``POST
/chats/{id}/messages``, before it answers ``201``, in this event loop. That is the same point as
the reference network's HTTP handler and the mail sink's end of ``DATA``.
"""

from __future__ import annotations

import html
import re
import time

from bench.timing import Arrivals
from graph_emulator.state import Message
from graph_emulator.teamwork import ChangeType
from tests.e2e.graph import GraphEmulator

_TAG = re.compile(r"<[^>]+>")


def text_of(message: Message) -> str:
    """The message's text without markup (the bridge posts HTML)."""
    if message.content_type == "text":
        return message.content.strip()
    return html.unescape(_TAG.sub("", message.content)).strip()


class TimedGraphEmulator(GraphEmulator):
    """A :class:`GraphEmulator` whose ``arrivals`` has the text of every message created in it,
    whoever posted it."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals = Arrivals()

    async def start(self) -> None:
        await super().start()
        self.services.teamwork.listeners.append(self._timestamp)

    def _timestamp(self, change: ChangeType, message: Message) -> None:
        now = time.perf_counter()
        if change == "created":
            self.arrivals.arrived(text_of(message), now)

    def drop_subscriptions(self, subscription_ids: set[str]) -> None:
        """Forget subscriptions, as Graph does when they expire (silently)."""
        for sub_id in subscription_ids:
            self.services.state.subscriptions.pop(sub_id, None)
