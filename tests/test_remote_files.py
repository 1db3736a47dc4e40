"""Files fetched from links a remote party chose: the address policy and the size cap, against a
real HTTP server on loopback (allow-listed where a test needs it to answer)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult

from bridge.core import BridgeError, NotSupported, PermanentError, TransientError
from bridge.core.config import ConfigError
from bridge.core.remote_files import (
    AllowedAddress,
    FetchFailed,
    FetchRefused,
    FetchTooLarge,
    RemoteFiles,
    _GuardedResolver,
    address_refusal,
    parse_allowed,
)
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.to_matrix import fetcher

SECRET_PATH = "/upload/7f3a9c/minutes.pdf?token=s3cr3t"


def ip(text: str) -> Any:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ],
)
def test_local_and_private_addresses_are_refused(address: str, kind: str) -> None:
    assert address_refusal(ip(address), 80, []) == f"a {kind} address"


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_fetched(address: str) -> None:
    assert address_refusal(ip(address), 443, []) is None


def test_the_allow_list_is_precise_about_ports_and_networks() -> None:
    allowed = [parse_allowed("127.0.0.1:5280"), parse_allowed("10.1.0.0/16:443")]
    allowed.append(parse_allowed("[fd00::/8]:8443"))
    assert address_refusal(ip("127.0.0.1"), 5280, allowed) is None
    assert address_refusal(ip("::ffff:127.0.0.1"), 5280, allowed) is None
    assert address_refusal(ip("127.0.0.1"), 5281, allowed) == "a loopback address"
    assert address_refusal(ip("127.0.0.2"), 5280, allowed) == "a loopback address"
    assert address_refusal(ip("10.1.200.3"), 443, allowed) is None
    assert address_refusal(ip("10.2.0.1"), 443, allowed) == "a private address"
    assert address_refusal(ip("fd12::1"), 8443, allowed) is None
    assert address_refusal(ip("fd12::1"), 443, allowed) == "a private address"
    assert address_refusal(ip("192.168.0.1"), 80, [parse_allowed("192.168.0.0/24")]) is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("127.0.0.1:5280", "127.0.0.1:5280"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.0/8:443", "10.0.0.0/8:443"),
        ("::1", "::1"),
        ("[::1]:5280", "[::1]:5280"),
        ("[fd00::/8]:443", "[fd00::/8]:443"),
    ],
)
def test_allow_list_entries_parse(entry: str, expected: str) -> None:
    assert str(parse_allowed(entry)) == expected


@pytest.mark.parametrize(
    "entry", ["", "localhost:5280", "127.0.0.1:0", "127.0.0.1:http", "[::1", "10.0.0.0/33", 5280]
)
def test_bad_allow_list_entries_say_what_is_expected(entry: Any) -> None:
    with pytest.raises(ValueError, match=r"expected|port"):
        parse_allowed(entry)


class Server:
    """A loopback HTTP server that records every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0
        self.routes: dict[str, Any] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path_qs)
        return await self.routes[request.path](request)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = runner.addresses[0][1]
    yield srv
    await runner.cleanup()


async def _file(_: web.Request) -> web.Response:
    return web.Response(body=b"x" * 100)


async def test_a_loopback_link_is_refused_and_the_server_sees_nothing(server: Server) -> None:
    server.routes["/upload/7f3a9c/minutes.pdf"] = _file
    files = RemoteFiles([parse_allowed(f"127.0.0.1:{server.port + 1}")], 1000)
    try:
        for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
            with pytest.raises(FetchRefused) as err:
                await files.fetch(f"http://{host}:{server.port}{SECRET_PATH}")
            assert "loopback" in str(err.value)
            assert "7f3a9c" not in str(err.value) and "s3cr3t" not in str(err.value)
        for host in ("2130706433", "127.1", "0x7f.0.0.1", "localhost.", "[::1]", "0.0.0.0"):
            with pytest.raises((FetchRefused, FetchFailed)):
                await files.fetch(f"http://{host}:{server.port}{SECRET_PATH}")
    finally:
        await files.close()
    assert server.hits == []


def test_a_bad_allow_list_entry_names_its_key() -> None:
    section = {
        "component": {"jid": "c.example", "host": "127.0.0.1", "port": 5347, "secret": "s"},
        "rooms_domain": "", "upload_service": "", "muc_nick": "m", "history_on_join": 0,
        "max_file_mib": 1, "fetch_allow_private": ["127.0.0.1:5280", "uploads.example:443"],
    }  # fmt: skip
    with pytest.raises(ConfigError) as err:
        XmppConfig.from_section(section)
    assert str(err.value).startswith("connectors.xmpp.fetch_allow_private[1]: 'uploads.example")
    section["fetch_allow_private"] = ["127.0.0.1:5280"]
    assert XmppConfig.from_section(section).fetch_allow_private == (
        parse_allowed("127.0.0.1:5280"),
    )


async def test_an_allow_listed_address_is_fetched(server: Server) -> None:
    server.routes["/upload/7f3a9c/minutes.pdf"] = _file
    files = RemoteFiles([parse_allowed(f"127.0.0.1:{server.port}")], 1000)
    try:
        assert await files.fetch(f"http://127.0.0.1:{server.port}{SECRET_PATH}") == b"x" * 100
        assert await files.fetch(f"http://localhost:{server.port}{SECRET_PATH}") == b"x" * 100
    finally:
        await files.close()


async def test_a_redirect_into_the_local_network_is_refused(server: Server) -> None:
    """An allowed server may redirect; every hop is checked again."""
    other = server.port + 1 if server.port < 65535 else server.port - 1

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{other}/admin")

    async def redirect_home(_: web.Request) -> web.Response:
        raise web.HTTPFound("/upload/7f3a9c/minutes.pdf")

    server.routes |= {"/go": redirect, "/home": redirect_home, "/upload/7f3a9c/minutes.pdf": _file}
    files = RemoteFiles([parse_allowed(f"127.0.0.1:{server.port}")], 1000)
    try:
        with pytest.raises(FetchRefused, match=f"127.0.0.1:{other} is a loopback address"):
            await files.fetch(f"http://127.0.0.1:{server.port}/go")
        assert await files.fetch(f"http://127.0.0.1:{server.port}/home") == b"x" * 100
    finally:
        await files.close()


async def test_the_size_cap_holds_with_and_without_content_length(server: Server) -> None:
    async def declared(_: web.Request) -> web.Response:
        return web.Response(body=b"y" * 2000)

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"z" * 500)
        await resp.write_eof()
        return resp

    async def lying(request: web.Request) -> web.StreamResponse:
        # claims 10 bytes, sends more: the connection breaks, nothing over the cap is kept
        resp = web.StreamResponse(headers={"Content-Length": "10"})
        await resp.prepare(request)
        await resp.write(b"w" * 3000)
        return resp

    server.routes |= {"/declared": declared, "/streamed": streamed, "/lying": lying}
    files = RemoteFiles([parse_allowed(f"127.0.0.1:{server.port}")], 1000)
    try:
        for path in ("/declared", "/streamed"):
            with pytest.raises(FetchTooLarge, match="larger than 1000 bytes"):
                await files.fetch(f"http://127.0.0.1:{server.port}{path}")
        assert len(await files.fetch(f"http://127.0.0.1:{server.port}/lying")) <= 1000
    finally:
        await files.close()


async def test_a_name_that_changes_its_answer_is_checked_at_connection_time() -> None:
    """DNS rebinding: the resolver the connector connects with is the one that checks."""

    class Flipping:
        def __init__(self) -> None:
            self.answers = ["93.184.215.14", "127.0.0.1"]

        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[ResolveResult]:
            address = self.answers.pop(0)
            return [
                {"hostname": host, "host": address, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0}
            ]  # fmt: skip

    resolver = _GuardedResolver([])
    resolver._inner = Flipping()  # type: ignore[assignment]
    assert (await resolver.resolve("files.example", 80))[0]["host"] == "93.184.215.14"
    with pytest.raises(OSError, match=r"files\.example resolves to a loopback address"):
        await resolver.resolve("files.example", 80)


async def test_only_http_links_are_fetched() -> None:
    files = RemoteFiles([], 1000)
    try:
        for link in ("file:///etc/passwd", f"ftp://files.example{SECRET_PATH}", "gopher://x/"):
            with pytest.raises(FetchRefused, match="only http and https"):
                await files.fetch(link)
    finally:
        await files.close()


async def test_xmpp_file_errors_say_what_happened_and_never_show_the_link(server: Server) -> None:
    async def gone(_: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def broken(_: web.Request) -> web.Response:
        raise web.HTTPServiceUnavailable()

    server.routes |= {"/upload/7f3a9c/gone": gone, "/upload/7f3a9c/broken": broken}
    base = f"http://127.0.0.1:{server.port}"
    files = RemoteFiles([parse_allowed(f"127.0.0.1:{server.port}")], 1000)
    closed = 1 if server.port != 1 else 2  # nothing listens on port 1 of loopback
    files_closed = RemoteFiles([parse_allowed(f"127.0.0.1:{closed}")], 1000)
    refuse = RemoteFiles([], 1000)
    try:
        with pytest.raises(PermanentError) as err:
            await fetcher(files, f"{base}/upload/7f3a9c/gone?token=s3cr3t")()
        assert "HTTP 404" in err.value.user_message
        errors = []
        for media, link in (
            (files, f"{base}/upload/7f3a9c/broken?token=s3cr3t"),
            (files_closed, f"http://127.0.0.1:{closed}{SECRET_PATH}"),
        ):
            with pytest.raises(BridgeError) as failed:
                await fetcher(media, link)()
            # a few tries, then a dead letter: not an outage, not a refusal
            assert not isinstance(failed.value, TransientError | PermanentError | NotSupported)
            errors.append(failed.value)
        with pytest.raises(NotSupported) as refused:
            await fetcher(refuse, f"{base}{SECRET_PATH}")()
        assert "local or private network" in refused.value.user_message
        errors += [err.value, refused.value]
        for error in errors:
            shown = f"{error} {error.user_message} {error.__cause__}"
            assert "7f3a9c" not in shown and "s3cr3t" not in shown
            assert "127.0.0.1" in str(error)
    finally:
        for media in (files, files_closed, refuse):
            await media.close()


def test_allow_list_entries_are_exact() -> None:
    entry = AllowedAddress(ipaddress.ip_network("127.0.0.1/32"), 5280)
    assert entry.permits(ip("127.0.0.1"), 5280)
    assert not entry.permits(ip("127.0.0.1"), 5281)
    assert not entry.permits(ip("::1"), 5280)


async def test_failures_carry_the_status() -> None:
    assert FetchFailed("x", 503).status == 503
