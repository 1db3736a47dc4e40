"""Database round trips per bridged message, counted on the wire to PostgreSQL.

The bridge runs on the (filled) PostgreSQL store through :class:`~bench.pgwire.CountingProxy`;
nothing in the bridge is changed or instrumented. Every bridged path of the latency runs is
counted: the reference network's, XMPP's (the component connects to the same Prosody) and
email's (the same LMTP port and SMTP sink; mail in over LMTP straight to the bridge, since
Postfix adds no statements) and Teams' (the same Graph emulator; the Matrix user logs in to Teams
again, the store being new).
"""

from __future__ import annotations

import asyncio
import logging
import time

from yarl import URL

from bench.driver import closed_loop
from bench.harness import BenchHub, stop_bridge, wait_component
from bench.mail import LmtpClient
from bench.paths import MessagePath
from bench.paths.email import MailInOverLmtp, MatrixToMail, open_mail_dm
from bench.paths.reference import MatrixToRemote, RemoteToMatrix, open_portals
from bench.paths.teams import teams_paths
from bench.paths.xmpp import xmpp_paths
from bench.pgwire import CountingProxy, Tally
from bench.results import RoundTripResult
from bench.timing import TimedMatrixUser

log = logging.getLogger("bench")

IDLE_SECONDS = 5.0
SETTLE_SECONDS = 1.0
"""Wait after the last arrival: the bridge may still record the message after delivering it."""


def _result(direction: str, messages: int, tally: Tally, idle: float) -> RoundTripResult:
    return RoundTripResult(
        direction=direction,
        messages=messages,
        round_trips=tally.round_trips,
        statements=sum(tally.statements.values()),
        idle_round_trips=idle,
        by_statement={sql: n / messages for sql, n in tally.statements.most_common()},
    )


async def round_trips(
    hub: BenchHub, user: TimedMatrixUser, url: URL, messages: int
) -> tuple[list[RoundTripResult], Tally]:
    """Per direction, ``messages`` sent one at a time; also returns the idle tally."""
    proxy = CountingProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.with_host("127.0.0.1").with_port(proxy.port).update_query(sslmode="disable")
    bridge = hub.other_bridge("roundtrips", str(proxied))
    lmtp = LmtpClient(hub.lmtp_port)
    try:
        await bridge.start(hub.as_port)
        await wait_component(hub.as_port)
        (portal,) = await open_portals(hub, user, "rt-chat-", 1)
        xmpp_in, xmpp_out = await xmpp_paths(hub, user, "xroundtrips")
        dm = await open_mail_dm(user, hub.mail_sink, "rt-bob@agency.test")
        teams_in, teams_out = await teams_paths(hub, user)
        paths: list[MessagePath] = [
            RemoteToMatrix(hub.remote, portal, user.arrivals),
            MatrixToRemote(user, portal, hub.remote.arrivals),
            xmpp_in,
            xmpp_out,
            MailInOverLmtp(lmtp, dm, user.arrivals),
            MatrixToMail(user, dm.room_id, hub.mail_sink.arrivals),
            teams_in,
            teams_out,
        ]
        for path in paths:  # fills asyncpg's statement caches
            warmup = [f"rt {path.key} warmup {i}" for i in range(5)]
            await closed_loop(path.send, path.arrivals, warmup, window=1)
        await asyncio.sleep(SETTLE_SECONDS)
        before = proxy.tally.copy()
        await asyncio.sleep(IDLE_SECONDS)
        idle = proxy.tally.copy() - before
        idle_rate = idle.round_trips / IDLE_SECONDS
        results = []
        for path in paths:
            before = proxy.tally.copy()
            began = time.perf_counter()
            tokens = [f"rt {path.key} {i}" for i in range(messages)]
            await closed_loop(path.send, path.arrivals, tokens, window=1)
            await asyncio.sleep(SETTLE_SECONDS)
            spent = time.perf_counter() - began
            tally = proxy.tally.copy() - before
            results.append(_result(path.label, messages, tally, idle_rate * spent))
            log.info(
                "round trips %s: %d for %d messages (%.1f per message)",
                path.key,
                tally.round_trips,
                messages,
                results[-1].per_message,
            )
        return results, idle
    finally:
        await lmtp.close()
        await stop_bridge(bridge)
        await proxy.stop()
