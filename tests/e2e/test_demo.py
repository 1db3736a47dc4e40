"""The one-command demo (``python -m demo --tour``, issue #15) run as a user runs it: as a
subprocess. What a user checks: each network's seeded message reached Matrix, the tour's
message from each network arrived and a reply went back, and Ctrl-C (SIGINT) leaves no process
and no listening port of the demo behind.

Runs on its own servers (not the session's hub): the demo starts and stops everything itself.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from demo.processes import alive, descendants, listening_ports
from demo.stack import missing_prerequisites

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
TOUR_TIMEOUT = 240.0
HOPS = ("xmpp -> matrix", "matrix -> xmpp", "mail -> matrix", "matrix -> mail",
        "teams -> matrix", "matrix -> teams")  # fmt: skip


class Output:
    """The demo's stdout and stderr, line by line, read in a thread so waits can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {marker!r} within {timeout} s:\n{self.text}") from None
            if line is None:
                raise AssertionError(f"the demo ended before {marker!r}:\n{self.text}")
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def port(self, pattern: str) -> int:
        found = re.search(pattern, self.text)
        assert found, f"{pattern!r} not in the demo's output:\n{self.text}"
        return int(found.group(1))


@pytest.mark.parametrize("mail", ["postfix", "loopback"])
def test_the_demo_seeds_tours_and_leaves_nothing_behind_on_ctrl_c(
    tmp_path: Path, mail: str
) -> None:
    """``postfix``: Postfix and Dovecot, as on a Debian machine run as root; ``loopback``: the
    aiosmtpd stand-in the demo uses where they cannot run."""
    if missing := missing_prerequisites(mail):
        pytest.skip("; ".join(missing))
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo", "--tour", "--mail", mail, "--workdir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=os.environ.copy(),
    )
    output = Output(proc)
    try:
        output.until("[tour] done", TOUR_TIMEOUT)
        output.until("press Ctrl-C", 10)
        for network in ("XMPP message from", "mail from", "Teams message from"):
            assert any(f"seeded: {network}" in line and "reached Matrix" in line
                       for line in output.lines), output.text  # fmt: skip
        for hop in HOPS:
            assert re.search(rf"^\[tour\] {re.escape(hop)}\s+\d+ ms ", output.text, re.M), hop
        # Every room is encrypted: what reached Matrix was decrypted by the demo user's client.
        assert "NOT encrypted" not in output.text, output.text
        printed = {
            output.port(r"homeserver URL\s+http://127\.0\.0\.1:(\d+)"),
            output.port(r"server / port\s+127\.0\.0\.1\s+/\s+(\d+)"),
            output.port(r"SMTP\s+127\.0\.0\.1 port (\d+)"),
        }
        if mail == "postfix":
            printed.add(output.port(r"IMAP\s+127\.0\.0\.1 port (\d+)"))
        pids = descendants(proc.pid) | {proc.pid}
        ports = listening_ports(pids)
        assert printed <= ports, (printed, ports)
        # Synapse, Prosody, the bridge (and the Postfix and Dovecot masters): 3 children or more.
        assert len(pids) > (5 if mail == "postfix" else 3), pids

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, output.text
    finally:
        _stop(proc)
    output.until("stopped; nothing left running", 5)
    deadline = time.monotonic() + 5
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes of the demo still running: {left}"
    assert not (ports & listening_ports()), f"ports still listening: {ports & listening_ports()}"


def _stop(proc: subprocess.Popen[str]) -> None:
    """After a failure: Ctrl-C as a user would, then SIGKILL the demo and its servers, so a
    failing test leaves nothing running either (SIGKILL of the demo alone would orphan them)."""
    if proc.poll() is not None:
        return
    pids = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in pids | descendants(proc.pid):
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
