"""Mail parsing off the event loop: a worker process, bounded in time and memory.

Every connector and the appservice share the bridge's event loop, and parsing MIME is pure
CPU in the standard library: on the loop, a hostile mail stalled them all for seconds (issue
#12). A thread would not help, it holds the GIL while it parses. So ``parse_mail`` runs in a
small pool of worker processes (``forkserver``: started from a clean process that has imported
only the parser, never a copy of the bridge with its sockets and threads).

The parser counts its own limits (:class:`ParseLimits`); what no count catches is bounded from
outside: a parse that takes longer than ``timeout`` has its workers killed and the pool
replaced, and each worker lives under an address-space limit (``RLIMIT_AS``), so a mail that
needs more memory fails in the worker instead of swapping the host.

Outcomes: a :class:`ParsedMail`; ``MalformedMail`` when the mail itself is at fault (over a
limit, too slow to read, too big for the memory limit: the mail server answers 5xx);
:class:`ParserUnavailable` when the fault is the bridge's (a worker crashed, the pool is being
replaced, shutdown: 4xx, the mail server tries again).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import select
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from bridge.email.protocol.parse import MalformedMail, ParsedMail, ParseLimits, parse_mail

__all__ = ["MailParser", "ParseLimits", "ParserUnavailable"]

_log = logging.getLogger("pontis.email.parsing")


class ParserUnavailable(Exception):
    """The parse could not run (worker crash, restart, shutdown): try the mail again later."""


def _init_worker(memory_bytes: int, bridge_pid: int) -> None:
    """In each worker: ignore Ctrl-C (the bridge stops the pool), end with the bridge and cap
    the address space."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with(bridge_pid)
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _end_with(bridge_pid: int) -> None:
    """Exit when the bridge process ends, even by SIGKILL.

    A clean stop closes the pool. A killed bridge did not: each worker holds the fork server's
    "alive" pipe, so the server waits for the workers and the workers wait for work, for ever.
    A pidfd names the bridge process itself (no pid reuse), and becomes readable when it ends.
    """
    if not hasattr(os, "pidfd_open"):
        return  # not Linux ≥ 5.3: the pool's own shutdown has to do
    try:
        pidfd = os.pidfd_open(bridge_pid)
    except ProcessLookupError:
        os._exit(0)  # the bridge is already gone
    except OSError:
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="bridge-watch", daemon=True).start()


def _parse(raw: bytes, limits: ParseLimits, trust_anchors: str | None) -> ParsedMail:
    """The worker's job. Raises only ``MalformedMail`` (picklable, as is the result)."""
    try:
        return parse_mail(raw, limits=limits, trust_anchors=trust_anchors)
    except MemoryError:
        raise MalformedMail("the mail needs more memory than the bridge gives one mail") from None


class MailParser:
    """A pool of ``workers`` parse processes; ``parse`` waits for a free one.

    ``timeout`` counts from when a worker takes the mail, not the wait for a free worker.
    """

    def __init__(
        self,
        limits: ParseLimits,
        *,
        workers: int = 1,
        timeout: float = 30.0,
        memory_bytes: int = 0,
        trust_anchors: str | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self._limits = limits
        self._workers = workers
        self._timeout = timeout
        self._memory_bytes = memory_bytes
        self._trust_anchors = trust_anchors
        self._log = log or _log
        self._slots = asyncio.Semaphore(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()  # start() makes the pool in a thread

    async def start(self) -> None:
        """Start the workers now rather than at the first mail (optional). The very first
        start launches the fork server and waits for it to import the parser, so it runs in a
        thread, not on the loop."""
        await asyncio.to_thread(self._warm)

    def _warm(self) -> None:
        pool = self._ensure_pool()
        for future in [pool.submit(int) for _ in range(self._workers)]:
            future.result()

    def _ensure_pool(self) -> ProcessPoolExecutor:
        with self._pool_lock:
            return self._pool or self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bridge.email.protocol.parse"])
        self._pool = ProcessPoolExecutor(
            self._workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self._memory_bytes, os.getpid()),
        )
        return self._pool

    async def parse(self, raw: bytes) -> ParsedMail:
        """``raw`` parsed in a worker; raises ``MalformedMail`` or :class:`ParserUnavailable`."""
        async with self._slots:
            pool = self._ensure_pool()
            try:
                future = pool.submit(_parse, raw, self._limits, self._trust_anchors)
            except (BrokenProcessPool, RuntimeError) as err:  # broken, or shut down meanwhile
                self._replace(pool)
                raise ParserUnavailable(f"the parse worker is not available: {err}") from err
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), self._timeout)
            except MalformedMail:
                raise
            except TimeoutError:
                self._log.warning(
                    "A mail took more than %.0f s to parse; restarting the parse workers",
                    self._timeout,
                )
                self._replace(pool)
                raise MalformedMail(
                    f"the mail could not be read within {self._timeout:.0f} s"
                ) from None
            except BrokenProcessPool as err:
                self._log.error("A parse worker died (%s); starting new ones", err)
                self._replace(pool)
                raise ParserUnavailable("the parse worker stopped unexpectedly") from err
            except (
                Exception
            ) as err:  # pickling trouble or a bug: the bridge's fault, not the mail's
                self._log.exception("Parsing a mail failed unexpectedly")
                raise ParserUnavailable(f"the mail could not be parsed now: {err}") from err

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        """Kill ``pool``'s workers (one may be stuck on a mail) and forget it; the next parse
        starts a new pool. Mails parsing in the old one at that moment get ParserUnavailable."""
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        # ProcessPoolExecutor has no public way to stop a busy worker; _processes is its map of
        # pid → Process, there since Python 3.2.
        for process in list(getattr(pool, "_processes", {}).values()):
            if process.is_alive():
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        """Stop the workers; parses still running get :class:`ParserUnavailable`. A parse
        after this starts new ones."""
        if self._pool is not None:
            self._replace(self._pool)
