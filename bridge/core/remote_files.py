"""Downloading files from links a remote party chose (an XMPP OOB URL, an HTTP-upload link).

A stranger's link must not make the hub reach into the operator's own network (server-side
request forgery): links to loopback, private, link-local, multicast, unspecified and reserved
addresses are refused, IPv4 and IPv6 alike (IPv4 inside IPv6 too), unless the operator lists
them in the connector's allow-list. Host names are checked after resolution, by the resolver the
HTTP connector then connects with, so a name cannot resolve to a public address for the check
and a private one for the connection (DNS rebinding). Redirects are followed by hand, each hop
checked again. Every download is capped: by Content-Length and by the bytes actually read.

Errors name the host and port at most, never the link's path or query: upload links are
capabilities.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

__all__ = [
    "AllowedAddress",
    "FetchFailed",
    "FetchRefused",
    "FetchTooLarge",
    "RemoteFiles",
    "address_refusal",
    "parse_allowed",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CHUNK = 64 * 1024


class FetchRefused(Exception):
    """The link points where the bridge does not fetch from (the message says why)."""


class FetchTooLarge(Exception):
    """The file is larger than the configured maximum."""


class FetchFailed(Exception):
    """The file's server failed or answered with an error; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AllowedAddress:
    """An allow-list entry: a network (a single address is a /32 or /128) and maybe a port."""

    network: IPNetwork
    port: int | None = None

    def permits(self, ip: IPAddress, port: int) -> bool:
        return ip in self.network and (self.port is None or self.port == port)

    def __str__(self) -> str:
        host = str(self.network)
        if self.network.num_addresses == 1:
            host = str(self.network.network_address)
        if self.port is None:
            return host
        return f"[{host}]:{self.port}" if self.network.version == 6 else f"{host}:{self.port}"


def parse_allowed(entry: Any) -> AllowedAddress:
    """``127.0.0.1:5280``, ``10.0.0.0/8``, ``10.0.0.0/8:443``, ``::1``, ``[fd00::/8]:443``.

    Raises ``ValueError`` saying what is expected. Host names are not accepted: what a name
    resolves to is what the check is about.
    """
    expected = (
        "expected an address or network with an optional port: 127.0.0.1:5280, "
        "10.0.0.0/8, 10.0.0.0/8:443, ::1, [fd00::/8]:443"
    )
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(expected)
    text, port_text = entry.strip(), None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r}: {expected}")
        text, port_text = host, rest[1:] if rest else None
    elif text.count(":") == 1:
        text, port_text = text.split(":")
    port = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{entry!r}: {expected}") from None
    return AllowedAddress(network, port)


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address, else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _kind(ip: IPAddress) -> str | None:
    """What sort of non-public address ``ip`` is, or None for a public one."""
    ip = _unwrap(ip)
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "non-public"),
    )
    return next((kind for hit, kind in checks if hit), None)


def address_refusal(ip: IPAddress, port: int, allowed: Iterable[AllowedAddress]) -> str | None:
    """Why the bridge must not connect to ``ip``:``port`` (``"a loopback address"``), or None.

    The allow-list is matched against the address and, for IPv4 inside IPv6, the IPv4 address.
    """
    kind = _kind(ip)
    if kind is None:
        return None
    candidates = {ip, _unwrap(ip)}
    if any(entry.permits(candidate, port) for entry in allowed for candidate in candidates):
        return None
    return f"a {kind} address"


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class _Refused(OSError):
    """Raised inside aiohttp's connector; unwrapped to :class:`FetchRefused`."""


class _GuardedResolver(AbstractResolver):
    """Resolves with the default resolver and keeps only addresses the policy allows. The
    connector connects to exactly these results, so the check and the connection agree."""

    def __init__(self, allowed: Sequence[AllowedAddress]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept, reasons = [], []
        for result in results:
            ip = _ip(str(result["host"]).split("%", 1)[0])
            reason = (
                "an unparsable address" if ip is None else address_refusal(ip, port, self._allowed)
            )
            if reason is None:
                kept.append(result)
            else:
                reasons.append(reason)
        if not kept:
            raise _Refused(f"{host} resolves to {reasons[0] if reasons else 'no address'}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _where(url: URL) -> str:
    host = url.host or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{url.port}" if url.port is not None else host


class RemoteFiles:
    """Downloads remote-chosen links under the address policy and the size cap.

    One per connector; :meth:`close` when it stops. Its HTTP session is private (no cookies,
    no proxy from the environment, no DNS cache) and opened on first use.
    """

    def __init__(
        self, allowed: Sequence[AllowedAddress], max_bytes: int, *, timeout: float = 120
    ) -> None:
        self.allowed = tuple(allowed)
        self.max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=_GuardedResolver(self.allowed), use_dns_cache=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=self._timeout,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _check(self, url: URL) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise FetchRefused(f"{_where(url)}: only http and https links are fetched")
        ip = _ip(url.host.split("%", 1)[0])
        if ip is not None and url.port is not None:
            reason = address_refusal(ip, url.port, self.allowed)
            if reason is not None:
                raise FetchRefused(f"{_where(url)} is {reason}")

    async def fetch(self, link: str) -> bytes:
        """The file at ``link``. Raises :class:`FetchRefused`, :class:`FetchTooLarge` or
        :class:`FetchFailed`; none of them carries the link's path or query."""
        try:
            url = URL(link)
        except (ValueError, TypeError):
            raise FetchRefused("the link is not a valid URL") from None
        session = self._open()
        for _ in range(MAX_REDIRECTS + 1):
            self._check(url)
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS:
                        location = resp.headers.get("Location")
                        if not location:
                            raise FetchFailed(f"{_where(url)}: HTTP {resp.status}", resp.status)
                        url = url.join(URL(location))
                        continue
                    if resp.status >= 400:
                        raise FetchFailed(f"{_where(url)}: HTTP {resp.status}", resp.status)
                    return await self._read(resp, url)
            except aiohttp.ClientConnectorError as err:
                if isinstance(err.os_error, _Refused):
                    raise FetchRefused(str(err.os_error)) from None
                raise FetchFailed(f"{_where(url)}: {type(err).__name__}") from err
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                raise FetchFailed(f"{_where(url)}: {type(err).__name__}") from err
        raise FetchFailed(f"{_where(url)}: more than {MAX_REDIRECTS} redirects")

    async def _read(self, resp: aiohttp.ClientResponse, url: URL) -> bytes:
        too_large = FetchTooLarge(f"{_where(url)}: the file is larger than {self.max_bytes} bytes")
        if (resp.content_length or 0) > self.max_bytes:
            raise too_large
        data = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            data += chunk
            if len(data) > self.max_bytes:
                raise too_large
        return bytes(data)
