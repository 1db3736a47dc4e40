"""The parse workers die with the bridge, even when it is killed with SIGKILL (a clean stop
closes the pool; a killed bridge used to leave the fork server and its workers running)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import asyncio, sys
from bridge.email.parsing import MailParser
from bridge.email.protocol.parse import ParseLimits

async def main() -> None:
    parser = MailParser(ParseLimits(), workers=2, timeout=30)
    await parser.start()
    await parser.parse(b"From: a@example.org\\r\\nSubject: hi\\r\\n\\r\\nbody\\r\\n")
    print(" ".join(str(pid) for pid in parser._pool._processes), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # an unreaped zombie has ended


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd_open is Linux's")
def test_workers_end_when_the_bridge_is_killed() -> None:
    bridge = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert bridge.stdout is not None
        workers = [int(pid) for pid in bridge.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
    finally:
        bridge.send_signal(signal.SIGKILL)
        bridge.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "parse workers outlived the bridge"
