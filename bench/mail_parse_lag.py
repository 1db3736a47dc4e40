"""Event-loop lag while a hostile mail is parsed: ``python -m bench.mail_parse_lag``.

Every connector and the appservice share one event loop, so a mail parse that holds the loop
delays all of them. This benchmark measures what they would see: a ticker wakes every
``TICK`` seconds on the loop and records how late it woke, while the gateway's parse step takes
a mail: ``--case bomb`` the hostile one of issue #12 (the RFC 2231 ``boundary*=`` bomb, many
empty parts), ``--case large`` a legitimate one with a big attachment. The same run measures
the ticker without it first (a small plain mail parsed instead), and reports the ratio of the
two: 1.0 means the other connectors do not notice that mail at all.

``--mode inline`` parses on the loop, as ``EmailGateway.receive`` did before issue #12;
``--mode worker`` goes through the parse worker process (:class:`bridge.email.parsing.MailParser`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

TICK = 0.005

PLAIN = (
    b"From: Bob <bob@example.org>\r\nTo: room@mail.example.org\r\nSubject: hello\r\n"
    b"Message-ID: <plain@example.org>\r\n\r\nHello there.\r\n"
)


def large_mail(size: int) -> bytes:
    """A legitimate mail of about ``size`` bytes: text and a base64 attachment, within every
    limit, so the parser has to read all of it."""
    attachment = base64.encodebytes(bytes(range(256)) * (size * 3 // 4 // 256)).replace(
        b"\n", b"\r\n"
    )
    return (
        b"From: Bob <bob@example.org>\r\nTo: room@mail.example.org\r\nSubject: report\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe report.\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=report.bin\r\n\r\n" + attachment + b"--b--\r\n"
    )


def hostile_mail(size: int) -> bytes:
    """About ``size`` bytes of empty MIME parts under an RFC 2231 boundary parameter."""
    head = (
        b"From: Mallory <m@example.org>\r\nTo: room@mail.example.org\r\nSubject: bomb\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary*=''b\r\n\r\n"
    )
    return head + b"--b\r\n\r\n" * (size // 7) + b"--b--\r\n"


async def _ticker(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        lags.append(max(0.0, loop.time() - due))


async def _measure(parse: Callable[[bytes], Awaitable[object]], raw: bytes) -> dict[str, float]:
    """Lag of the ticker while ``parse(raw)`` runs (and at least 0.5 s)."""
    stop = asyncio.Event()
    lags: list[float] = []
    ticker = asyncio.create_task(_ticker(stop, lags))
    await asyncio.sleep(0.05)
    began = time.perf_counter()
    outcome = "ok"
    try:
        await parse(raw)
    except Exception as err:  # the hostile mail is refused: that is the expected outcome
        outcome = type(err).__name__
    took = time.perf_counter() - began
    await asyncio.sleep(max(0.0, 0.5 - took))
    stop.set()
    await ticker
    lags.sort()
    return {
        "parse_s": round(took, 3),
        "max_lag_ms": round(lags[-1] * 1000, 2),
        "p99_lag_ms": round(lags[int(len(lags) * 0.99) - 1] * 1000, 2),
        "mean_lag_ms": round(statistics.fmean(lags) * 1000, 3),
        "outcome": outcome,  # type: ignore[dict-item]
    }


async def _run(mode: str, case: str, size: int) -> dict[str, object]:
    from bridge.email.protocol.parse import parse_mail

    if mode == "inline":

        async def parse(raw: bytes) -> object:
            return parse_mail(raw)

        close: Callable[[], Awaitable[None]] | None = None
    else:
        from bridge.email.parsing import MailParser, ParseLimits

        parser = MailParser(ParseLimits(), workers=1, timeout=10.0)
        await parser.start()
        parse = parser.parse
        close = parser.close
    try:
        await parse(PLAIN)  # warm-up: imports, worker start
        baseline = await _measure(parse, PLAIN)
        hostile = await _measure(parse, (hostile_mail if case == "bomb" else large_mail)(size))
    finally:
        if close is not None:
            await close()
    return {
        "mode": mode,
        "case": case,
        "hostile_bytes": size,
        "baseline": baseline,
        "hostile": hostile,
        "max_lag_ratio": round(hostile["max_lag_ms"] / max(baseline["max_lag_ms"], 0.01), 1),
        "p99_lag_ratio": round(hostile["p99_lag_ms"] / max(baseline["p99_lag_ms"], 0.01), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("inline", "worker"), default="worker")
    parser.add_argument(
        "--case", choices=("bomb", "large"), default="bomb",
        help="bomb: the RFC 2231 empty-parts bomb; large: a legitimate mail with a big file",
    )  # fmt: skip
    parser.add_argument("--mib", type=float, default=2.0, help="size of that mail")
    args = parser.parse_args()
    result = asyncio.run(_run(args.mode, args.case, int(args.mib * 1024 * 1024)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
