"""DNS for the bridge's own sender verification (``verifier: bridge``).

Lookups go through dnspython's asyncio resolver, on the bridge's event loop, to the name servers
the operator configured (tests point it at a zone served on 127.0.0.1). The verification
libraries (dkimpy, pyspf) are synchronous and run in a worker thread; they get
:class:`ThreadLookups`, which hands each of their lookups back to the event loop and waits for
the answer in the thread. So no lookup blocks the loop, the thread never opens a socket of its
own, and one deadline bounds all the lookups of one mail.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

MAX_LOOKUPS = 60
"""Lookups one mail may cause: SPF allows 10 mechanisms and 2 void lookups, DKIM and ARC a few
keys each (the verifier caps the signatures it tries), DMARC two records."""


class DnsUnavailable(Exception):
    """The name servers did not answer (timeout, SERVFAIL, refused): the answer is unknown, so
    the mail server should try again later rather than the mail be judged."""


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"192.0.2.53:5353"``, ``"2001:db8::53"`` or ``"[2001:db8::53]:5353"``
    as (address, port). Raises ``ValueError`` with a sentence for the operator."""
    value = text.strip()
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{text!r}: expected [address]:port")
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, _, digits = value.partition(":")
        if not digits.isdigit():
            raise ValueError(f"{text!r}: the port must be a number")
        port = int(digits)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address (a name server is given by address)"
        ) from None
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range")
    return host, port


class Resolver:
    """Asynchronous lookups with a small cache; ``nameservers`` empty means /etc/resolv.conf.

    Each lookup waits at most ``timeout`` seconds. NXDOMAIN and an empty answer are an empty
    list (the name has no such record); anything else that is not an answer raises
    :class:`DnsUnavailable`.
    """

    def __init__(self, nameservers: Sequence[str], timeout: float) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(server)) for server in nameservers
            ]
        self._resolver.lifetime = timeout
        self._resolver.timeout = min(timeout, 2.0)  # per try; lifetime bounds the retries
        self._resolver.cache = dns.resolver.LRUCache(4096)

    async def records(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        try:
            answer = await self._resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.resolver.YXDOMAIN:
            return []
        except (dns.exception.DNSException, OSError) as err:
            raise DnsUnavailable(f"{rdtype} {name}: {type(err).__name__}: {err}") from err
        return list(answer.rrset) if answer.rrset is not None else []

    async def txt(self, name: str) -> list[bytes]:
        """Each TXT record at ``name``, its strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        return [b"".join(r.strings) for r in await self.records(name, "TXT")]  # type: ignore[attr-defined]


class ThreadLookups:
    """The lookups of one verification, made from a worker thread through the event loop.

    Created on the loop; its methods are called from the worker thread only (calling them on the
    loop's own thread would wait for itself). Every lookup after ``deadline`` (loop time) or
    beyond :data:`MAX_LOOKUPS` raises :class:`DnsUnavailable`; ``failures`` keeps what could
    not be looked up, so a verdict made without it is known to be a guess.
    """

    def __init__(self, resolver: Resolver, timeout: float) -> None:
        self._resolver = resolver
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self.count = 0
        self.failures: list[str] = []

    def start_clock(self) -> None:
        """Count the time from now: the worker thread calls it when it takes the mail, so a
        wait for a free thread does not eat the time of the lookups."""
        self._deadline = time.monotonic() + self._timeout

    def _wait(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("ThreadLookups used on the event loop's thread")
        self.count += 1
        remaining = self._deadline - time.monotonic()
        try:
            if self.count > MAX_LOOKUPS:
                raise DnsUnavailable(f"more than {MAX_LOOKUPS} lookups for one mail")
            if remaining <= 0:
                raise DnsUnavailable("the time for this mail's lookups is up")
            future = asyncio.run_coroutine_threadsafe(
                self._resolver.records(name, rdtype), self._loop
            )
            try:
                return future.result(timeout=remaining)
            except TimeoutError as err:
                future.cancel()
                raise DnsUnavailable(f"{rdtype} {name}: no answer in time") from err
        except DnsUnavailable as err:
            self.failures.append(str(err))
            raise

    def records(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        return self._wait(name.rstrip(".") + ".", rdtype)

    def txt(self, name: str) -> list[bytes]:
        return [b"".join(r.strings) for r in self.records(name, "TXT")]  # type: ignore[attr-defined]

    def dkim_key(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """dkimpy's ``dnsfunc``: the key record at ``name``, or None. A lookup that fails is
        None too (the signature then fails), and is remembered in ``failures``."""
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            found = self.txt(text)
        except DnsUnavailable:
            return None
        return found[0] if found else None


async def probe(nameservers: Sequence[str], name: str, *, wait: float) -> str | None:
    """For ``pontis check``: None if the name servers answer a lookup of ``name`` (any answer,
    NXDOMAIN too), else what went wrong. Without them every mail would be answered 451."""
    try:
        await Resolver(nameservers, wait).records(name, "TXT")
    except (DnsUnavailable, ValueError) as err:
        return f"the name servers do not answer: {err}"
    return None
