"""Servers the harness runs as child processes (Synapse, Prosody): the shared stop logic."""

from __future__ import annotations

import asyncio
import atexit
import signal
import socket
import subprocess
import time
from typing import IO

STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """Subclasses start ``_process`` (output to ``_output``) and ``atexit.register(self._kill)``."""

    _process: subprocess.Popen[bytes] | None = None
    _output: IO[bytes] | None = None

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        atexit.unregister(self._kill)
        self._process = None
        if self._output is not None:
            self._output.close()
            self._output = None

    async def stop(self) -> None:
        """SIGTERM (the server closes its connections cleanly), then SIGKILL after a while."""
        proc = self._process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self._kill()
