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


def summarise(
    raw: Path,
    top: int = 20,
    *,
    inclusive_in: tuple[str, ...] = ("bridge/",),
    messages: int | None = None,
    rate: int = 250,
) -> str:
    """Markdown: the functions with the most samples on top of the stack (self), and the
    functions of the packages ``inclusive_in`` (the bridge's own by default) with the most
    samples anywhere in the stack (inclusive).

    With ``messages`` (how many were bridged while sampling), each row also gives the time
    per message it stands for: samples / ``rate`` / messages (``--gil`` takes a sample only
    while a thread holds the GIL, so samples / rate is Python CPU time, roughly)."""
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
            if any(f"({p}" in frame for p in inclusive_in) and not frame.startswith(_ENTRY_FRAMES):
                inclusive[frame] += count
    if not total:
        return "py-spy recorded no samples."

    def per_message(n: int) -> str:
        return "" if messages is None else f" {1000 * n / rate / messages:.3f} ms |"

    def table(counter: collections.Counter[str], title: str) -> str:
        extra = " ms / message |" if messages is not None else ""
        rule = "---|" if messages is not None else ""
        rows = [
            f"| {100 * n / total:.1f} % |{per_message(n)} `{name}` |"
            for name, n in counter.most_common(top)
        ]
        return f"| {title} |{extra} Function |\n|---|{rule}---|\n" + "\n".join(rows)

    scope = ", ".join(inclusive_in)
    return (
        f"{total} samples of the bridge's thread holding the GIL.\n\n"
        + table(own, "Self")
        + "\n\n"
        + table(inclusive, f"Inclusive ({scope} only)")
    )


_GENERIC = ("(asyncio/", "(threading.py", "(<frozen runpy>", "(selectors.py", "(contextlib.py")
"""Frames of the event loop and the interpreter, under nearly every sample: left out of the
comparison, where they would only repeat the total."""


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            stacks.append(([_short(f) for f in stack.split(";")], int(count_text)))
    return stacks


def _inclusive(raw: Path, under: str | None = None) -> tuple[collections.Counter[str], int]:
    """Samples per function anywhere in the stack (below the first ``under`` frame, when
    given), and all samples of the recording."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in _stacks(raw):
        total += count
        if under is not None:
            found = next((i for i, f in enumerate(frames) if f.startswith(under)), None)
            if found is None:
                continue
            frames = frames[found:]
        for frame in set(frames):
            if not frame.startswith(_ENTRY_FRAMES) and not any(g in frame for g in _GENERIC):
                counts[frame] += count
    return counts, total


def compare(
    before_raw: Path,
    after_raw: Path,
    *,
    messages: int,
    labels: tuple[str, str] = ("Before", "After"),
    top: int = 15,
    rate: int = 250,
) -> str:
    """Markdown: the functions whose time per message grew most from one recording to another
    (the same number of messages each), inclusive, any package."""
    before, before_total = _inclusive(before_raw)
    after, after_total = _inclusive(after_raw)

    def ms(n: int) -> float:
        return 1000 * n / rate / messages

    grown = sorted(after.keys() | before.keys(), key=lambda f: before[f] - after[f])[:top]
    rows = [
        f"| {ms(before[f]):.3f} | {ms(after[f]):.3f} | {ms(after[f] - before[f]):+.3f} | `{f}` |"
        for f in grown
    ]
    return (
        f"All samples: {ms(before_total):.2f} ms / message ({labels[0].lower()}), "
        f"{ms(after_total):.2f} ms ({labels[1].lower()}); {before_total} and {after_total} "
        "samples.\n\n"
        f"| {labels[0]}, ms / message | {labels[1]} | Difference | Function (inclusive) |\n"
        "|---|---|---|---|\n" + "\n".join(rows)
    )


def breakdown(raw: Path, under: str, *, messages: int, top: int = 12, rate: int = 250) -> str:
    """Markdown: where the samples below ``under`` (a function, as the tables name it) go,
    inclusive, any package."""
    counts, _ = _inclusive(raw, under)
    rows = [f"| {1000 * n / rate / messages:.3f} | `{f}` |" for f, n in counts.most_common(top)]
    return "| ms / message | Function (inclusive) |\n|---|---|\n" + "\n".join(rows)
