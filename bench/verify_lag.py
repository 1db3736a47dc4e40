"""Event-loop lag while the bridge verifies a large signed mail: ``python -m bench.verify_lag``.

With ``verifier: bridge`` the bridge hashes the whole body of a DKIM-signed mail and resolves
its keys and policies. That runs in the verifier's worker threads, its DNS on the loop. A
ticker wakes every ``TICK`` seconds on the loop and records how late it woke while a mail of
``--mib`` MiB is verified; the same run measures it while a small mail is verified, and reports
the ratio (1.0: the other connectors do not notice). Mails are signed c=relaxed/relaxed, the
costly canonicalisation (dkimpy's regular expressions over the whole body, seconds for 20 MiB),
which runs in a worker process; in a thread it held the loop for hundreds of milliseconds.

DNS is a zone served on 127.0.0.1 by tests/dns_server.py, as in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

TICK = 0.005


def _mail(size: int) -> bytes:
    line = b"The quarterly report, line by line, as a long mail carries it.\r\n"
    body = line * max(1, size // len(line))
    return (
        b"From: Bob <bob@origin.example>\r\nTo: room@mail.example.org\r\nSubject: report\r\n"
        b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <r@origin.example>\r\n\r\n" + body
    )


async def _lags(work: asyncio.Future[object]) -> list[float]:
    lags = []
    while not work.done():
        started = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - started - TICK)
    return lags


async def main(mib: float) -> dict[str, object]:
    from bridge.email.config import EmailConfig
    from bridge.email.verify import SenderVerifier
    from tests.dns_server import DnsServer
    from tests.email.signing import SendingDomain

    zone = DnsServer()
    await zone.start()
    origin = SendingDomain("origin.example")
    origin.publish(zone, spf="v=spf1 -all")
    cfg = EmailConfig(
        domain="mail.example.org", protocol="lmtp", listen_host="127.0.0.1", listen_port=1,
        max_message_bytes=1 << 30, max_recipients=1, relay_host="127.0.0.1", relay_port=1,
        relay_security="none", relay_username="", relay_password="", relay_timeout=1,
        trusted_authserv_id="", sender_verification="dmarc", threads=True, strip_quotes=True,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, verifier="bridge", dns_nameservers=(zone.nameserver,))
    verifier = SenderVerifier(cfg)
    results: dict[str, object] = {"mib": mib, "tick_ms": TICK * 1000}
    try:
        small = origin.sign(_mail(2000), relaxed_body=True)
        large = origin.sign(_mail(int(mib * 1024 * 1024)), relaxed_body=True)
        for name, raw in (("warm-up", small), ("small", small), ("large", large)):
            started = time.perf_counter()
            work = asyncio.ensure_future(
                verifier.check(raw, "origin.example", mail_from="bob@origin.example", peer=None)
            )
            lags = await _lags(work)
            check = await work
            assert check.verified, check
            results[name] = {
                "seconds": round(time.perf_counter() - started, 3),
                "lag_max_ms": round(max(lags, default=0) * 1000, 2),
                "lag_median_ms": round(statistics.median(lags or [0]) * 1000, 2),
                "ticks": len(lags),
            }
    finally:
        verifier.close()
        zone.stop()
    del results["warm-up"]  # the first mail starts the worker process
    base, heavy = results["small"], results["large"]
    assert isinstance(base, dict) and isinstance(heavy, dict)
    results["lag_max_ratio"] = round(
        heavy["lag_max_ms"] / max(base["lag_max_ms"], TICK * 1000 / 10), 2
    )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=20.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.mib)), indent=2))
