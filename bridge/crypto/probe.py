"""Does the homeserver push what encryption needs into appservice transactions?

Synapse sends to-device events (MSC2409/MSC4203) and one-time-key counts and device lists
(MSC3202) to an appservice only with two experimental settings in homeserver.yaml *and* the
matching registration flags; nothing in its API says whether they are on. So we ask the only
way there is: send a to-device event to one of the bot's devices and watch what the next
transactions carry. The running bridge does this after start (problems go to the log and to
``/_pontis/health``); ``pontis check`` does it with a stand-in listener when the bridge is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

PROBE_TYPE = "fi.pontis.probe"
RESEND_SECONDS = 4.0
TO_DEVICE_FIX = (
    "homeserver: to-device events (room keys) do not reach the bridge; set "
    "experimental_features: {msc2409_to_device_messages_enabled: true} in homeserver.yaml and "
    "receive_ephemeral: true in the registration"
)
KEY_COUNTS_FIX = (
    "homeserver: one-time-key counts and device lists do not reach the bridge; set "
    "experimental_features: {msc3202_transaction_extensions: true} in homeserver.yaml and "
    "org.matrix.msc3202: true in the registration (`generate-registration` writes it)"
)


class DeliveryProbe:
    def __init__(self) -> None:
        self.nonce = secrets.token_hex(12)
        self.to_device = False
        self.key_counts = False
        self.done = asyncio.Event()
        """Set once both have been seen."""

    def content(self) -> dict[str, Any]:
        return {"nonce": self.nonce}

    def observe(self, kind: str, payload: dict[str, Any]) -> bool:
        """Look at one item of a transaction; True if it is our probe (nothing else to do
        with it)."""
        if kind in ("otk_count", "fallback_keys"):
            self.key_counts = True
        if kind == "to_device" and payload.get("type") == PROBE_TYPE:
            content = payload.get("content")
            if isinstance(content, dict) and content.get("nonce") == self.nonce:
                self.to_device = True
        if self.complete:
            self.done.set()
        return kind == "to_device" and payload.get("type") == PROBE_TYPE

    async def run(self, send: Callable[[], Awaitable[None]], seconds: float) -> None:
        """Send the probe and wait for it, sending it again every few seconds until it is
        seen or ``seconds`` have passed. Synapse drops to-device events for an appservice it holds
        as down (it keeps only room events for the retry), and it may hold ours as down for a
        moment after a transaction that failed before we listened: a single probe sent in that
        window never arrives, however long we wait."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    await send()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RESEND_SECONDS):
                            await self.done.wait()
                            return

    @property
    def complete(self) -> bool:
        return self.to_device and self.key_counts

    def problems(self) -> list[str]:
        """One line per missing homeserver setting."""
        return [
            fix
            for seen, fix in ((self.to_device, TO_DEVICE_FIX), (self.key_counts, KEY_COUNTS_FIX))
            if not seen
        ]
