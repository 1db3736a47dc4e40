"""A one-shot XEP-0114 handshake, to tell an operator whether the component settings work."""

from __future__ import annotations

import asyncio
import hashlib
import re
from xml.sax.saxutils import quoteattr

TIMEOUT = 5.0
_STREAM_HEADER = re.compile(rb"<stream:stream[^>]*>|</stream:stream>")
_STREAM_ID = re.compile(rb"<stream:stream[^>]*\sid=(['\"])([^'\"]+)\1")
_STREAM_ERROR = re.compile(rb"<stream:error>\s*<([a-z-]+)")
_HANDSHAKE_ANSWER = re.compile(rb"<handshake\s*/>|</handshake>|</stream:")
_ACCEPTED = re.compile(rb"<handshake\s*/>|<handshake></handshake>")


async def component_handshake(host: str, port: int, domain: str, secret: str) -> str | None:
    """Connect, authenticate as ``domain`` and leave. ``None`` if the server accepted us, else
    what went wrong, in words an operator can act on."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    except (OSError, TimeoutError) as err:
        return f"cannot connect to {host}:{port} ({err or 'timed out'})"
    try:
        async with asyncio.timeout(TIMEOUT):
            return await _handshake(reader, writer, domain, secret)
    except TimeoutError:
        return f"{host}:{port} did not answer within {TIMEOUT:.0f} s"
    except OSError as err:
        return f"connection to {host}:{port} failed: {err}"
    finally:
        writer.close()


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, domain: str, secret: str
) -> str | None:
    writer.write(
        b"<stream:stream xmlns='jabber:component:accept' "
        b"xmlns:stream='http://etherx.jabber.org/streams' to=" + quoteattr(domain).encode() + b">"
    )
    header = await _read_until(reader, _STREAM_HEADER)
    if (error := _STREAM_ERROR.search(header)) is not None:
        return _explain(error.group(1).decode(), domain)
    found = _STREAM_ID.search(header)
    if found is None:
        return "the server does not speak the XMPP component protocol (XEP-0114)"
    digest = hashlib.sha1(found.group(2) + secret.encode()).hexdigest()
    writer.write(f"<handshake>{digest}</handshake>".encode())
    answer = await _read_until(reader, _HANDSHAKE_ANSWER)
    if _ACCEPTED.search(answer):
        return None
    if (error := _STREAM_ERROR.search(answer)) is not None:
        return _explain(error.group(1).decode(), domain)
    return f"unexpected answer to the handshake: {answer[:200]!r}"


async def _read_until(reader: asyncio.StreamReader, done: re.Pattern[bytes]) -> bytes:
    data = b""
    while not done.search(data):
        chunk = await reader.read(4096)
        if not chunk:
            break
        data += chunk
    return data


def _explain(condition: str, domain: str) -> str:
    return {
        # ejabberd answers a domain its listener does not serve like a wrong secret.
        "not-authorized": "the XMPP server refused the secret "
        f"(or, on ejabberd, has no component {domain} configured)",
        "host-unknown": f"the XMPP server has no component {domain} configured",
        "conflict": "another process is connected as this component already (is the bridge running?)",
    }.get(condition, f"the XMPP server closed the stream: {condition}")
