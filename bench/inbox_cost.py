"""The remote inbox's own CPU per message, in process: ``python -m bench.inbox_cost``.

Messages one at a time through :class:`~bridge.core.remote_inbox.RemoteInbox` on a fresh SQLite
store (accepted: stored and queued; converted; "sent" to the no-op homeserver of
tests/test_remote_inbox.py; removed), against converting and sending the same messages directly.
Process CPU, so the aiosqlite thread counts; no servers, so the figure is the inbox's
bookkeeping alone (plus the per-portal queue job every message had before it). The end-to-end
benchmark cannot resolve a tenth of a millisecond on a shared machine; this can.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bridge.portal.models import RemoteInput
from bridge.portal.store import Store
from tests.test_remote_inbox import CHAT, NET, Client, Hub

WARM_UP = 50


async def measure(messages: int) -> tuple[float, float]:
    """(direct, through the inbox): CPU seconds per message."""
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite:{Path(tmp) / 'cost.db'}")
        try:
            hub = Hub(store)
            client = Client()
            hub.clients.add(NET, client)  # type: ignore[arg-type]
            for n in range(WARM_UP):
                await hub.accept(f"warm-{n}")
                await hub.queues.drain()
            began = time.process_time()
            for n in range(messages):
                item = RemoteInput(portal=CHAT, kind="message", payload={"text": f"d{n}"})
                for event in await client.convert_remote(item):
                    await hub.homeserver.handle(event, client)
            direct = (time.process_time() - began) / messages
            began = time.process_time()
            for n in range(messages):
                await hub.accept(f"m{n}")
                await hub.queues.drain()
            inbox = (time.process_time() - began) / messages
            await hub.inbox.close()
        finally:
            await store.close()
    return direct, inbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    for run in range(1, args.runs + 1):
        direct, inbox = asyncio.run(measure(args.messages))
        print(
            f"run {run}: direct {direct * 1000:.3f} ms, through the remote inbox "
            f"{inbox * 1000:.3f} ms, added {(inbox - direct) * 1000:.3f} ms per message"
        )


if __name__ == "__main__":
    main()
