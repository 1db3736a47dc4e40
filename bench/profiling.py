"""Sampling the bridge with py-spy while it bridges, and summarising where its CPU goes."""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

_ENTRY_FRAMES = (
    "<module> (bridge/__main__.py",
    "main (bridge/core/cli.py",
    "_run (bridge/core/cli.py",
)
"""Frames under every sample (the process's entry point), left out of the inclusive table."""
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """``py-spy record --gil --format raw`` on ``pid`` until :meth:`stop`.

    ``--gil`` samples only the thread holding the GIL, so the samples are where the bridge's
    Python CPU time goes (time waiting in select, on a queue or on the GIL is left out).
    """

    def __init__(self, executable: str, pid: int, output: Path, rate: int = 250) -> None:
        self.output = output
        self._proc = subprocess.Popen(
            [
                *(executable, "record", "--gil", "--pid", str(pid), "--rate", str(rate)),
                *("--format", "raw", "--output", str(output)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        self._proc.send_signal(signal.SIGINT)
        _, err = self._proc.communicate(timeout=60)
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3", "/bridge/", "/tests/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker in ("/bridge/", "/tests/"):
                path = marker.strip("/") + "/" + path
            break
    return f"{match['function']} ({path})"


def summarise(raw: Path, top: int = 20) -> str:
    """Markdown: the functions with the most samples on top of the stack (self), and the
    bridge's own functions with the most samples anywhere in the stack (inclusive)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")[1:]]  # the first one is the thread
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if "(bridge/" in frame and not frame.startswith(_ENTRY_FRAMES):
                inclusive[frame] += count
    if not total:
        return "py-spy recorded no samples."

    def table(counter: collections.Counter[str], title: str) -> str:
        rows = [f"| {100 * n / total:.1f} % | `{name}` |" for name, n in counter.most_common(top)]
        return f"| {title} | Function |\n|---|---|\n" + "\n".join(rows)

    return (
        f"{total} samples of the bridge's thread holding the GIL.\n\n"
        + table(own, "Self")
        + "\n\n"
        + table(inclusive, "Inclusive (bridge/ only)")
    )
