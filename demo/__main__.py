"""``python -m demo [--tour [--exit]] [--workdir DIR]``: start the hub and its networks on
loopback, seed conversations, print how to log in, and run until Ctrl-C.

Stopping is the part that must not fail: SIGINT, SIGTERM and SIGHUP all cancel the main task,
whose ``finally`` stops the bridge and every server (SIGKILL after a grace period, process
groups for Postfix and Dovecot); the harness's ``atexit`` hooks kill anything still alive if
the interpreter exits another way. A second Ctrl-C while stopping is ignored, so the stop is
never cut short half way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from demo.banner import banner
from demo.processes import descendants
from demo.seed import Conversations, seed
from demo.stack import Stack, missing_prerequisites
from demo.tour import run_tour

REPO = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Run Synapse, Prosody, Postfix/Dovecot, the Graph emulator and the Pontis "
        "bridge on 127.0.0.1, with a conversation on each network; Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--tour",
        action="store_true",
        help="send a message from each network into Matrix and a reply back, with latencies",
    )
    parser.add_argument(
        "--exit", action="store_true", help="with --tour: stop once the tour is done (for CI)"
    )
    parser.add_argument(
        "--mail",
        choices=("auto", "postfix", "loopback"),
        default="auto",
        help="the mail server: Postfix and Dovecot (needs root and the Debian packages), an "
        "aiosmtpd stand-in without IMAP (loopback), or the first that can run here (auto)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / ".cache" / "demo",
        help="where configs, databases and logs go; emptied at start (default: .cache/demo)",
    )
    return parser


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


async def _run(args: argparse.Namespace) -> int:
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        if stopping:
            _say("still stopping, please wait")
            return
        stopping = True
        _say(f"{signal.Signals(signum).name}: stopping everything")
        main.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)

    stack = Stack(args.workdir.resolve(), mail_kind=args.mail)
    talk: Conversations | None = None
    began = time.monotonic()
    try:
        await stack.start(progress=_say)
        _say(f"servers and bridge up in {time.monotonic() - began:.1f} s; seeding conversations")
        talk = await seed(stack, progress=_say)
        print(banner(stack, talk), flush=True)
        if args.tour:
            await run_tour(stack, talk)
            if args.exit:
                return 0
        _say("running; press Ctrl-C to stop")
        await asyncio.Event().wait()  # until a signal cancels this task
        return 0
    except asyncio.CancelledError:
        return 0 if stopping else 1
    finally:
        # Shielded from a second cancellation by ignoring further signals (see on_signal).
        stopping = True
        if talk is not None:
            with contextlib.suppress(Exception):
                await talk.close()
        await stack.stop()
        _reap_leftovers()
        _say("stopped; nothing left running")


def _reap_leftovers() -> None:
    """Check, rather than trust, that every server is gone: a child still running here would
    outlive the demo (and keep its port), so it gets SIGKILL and a line saying so."""
    for pid in sorted(descendants(os.getpid())):
        _say(f"process {pid} was still running after the stop; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.exit and not args.tour:
        _parser().error("--exit only makes sense with --tour")
    problems = missing_prerequisites(args.mail)
    if problems:
        for problem in problems:
            print(f"demo: {problem}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except Exception as err:
        print(f"demo: failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
