"""A TCP proxy in front of PostgreSQL that counts what its clients ask for.

It reads the frontend side of the wire protocol (v3) without changing a byte: every ``Sync``
and every simple ``Query`` message ends a request the client then waits for, so their count is
the number of database round trips. ``Execute`` and ``Query`` messages are statements; the text
of each comes from its ``Query`` or from the ``Parse`` that prepared it. Clients must not use
TLS (``?sslmode=disable``), or the proxy could not read the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

_PROTOCOL_V3 = 196608


def _cstrings(payload: bytes, count: int) -> list[str]:
    parts = payload.split(b"\x00", count)
    return [p.decode(errors="replace") for p in parts[:count]]


def _normalise(sql: str) -> str:
    return " ".join(sql.split())


@dataclass
class Tally:
    round_trips: int = 0
    statements: Counter[str] = field(default_factory=Counter)

    def copy(self) -> Tally:
        return Tally(self.round_trips, Counter(self.statements))

    def __sub__(self, other: Tally) -> Tally:
        diff = Counter(self.statements)
        diff.subtract(other.statements)
        return Tally(self.round_trips - other.round_trips, +diff)


class _Frontend:
    """Parses one client's message stream; feeds the shared tally."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally
        self._buffer = bytearray()
        self._started = False
        self._prepared: dict[str, str] = {}
        self._bound = "?"

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._next():
            pass

    def _next(self) -> bool:
        buf = self._buffer
        if not self._started:
            # Untyped packets come first (SSLRequest, StartupMessage): length, then a code.
            if len(buf) < 8:
                return False
            length = int.from_bytes(buf[:4], "big")
            if len(buf) < length:
                return False
            self._started = int.from_bytes(buf[4:8], "big") == _PROTOCOL_V3
            del buf[:length]
            return True
        # Then typed messages: one byte of type, then a length that counts itself.
        if len(buf) < 5:
            return False
        end = 1 + int.from_bytes(buf[1:5], "big")
        if len(buf) < end:
            return False
        kind, payload = chr(buf[0]), bytes(buf[5:end])
        del buf[:end]
        self._message(kind, payload)
        return True

    def _message(self, kind: str, payload: bytes) -> None:
        tally = self._tally
        if kind == "Q":
            tally.round_trips += 1
            tally.statements[_normalise(payload.rstrip(b"\x00").decode(errors="replace"))] += 1
        elif kind == "P":
            name, sql = _cstrings(payload, 2)
            self._prepared[name] = _normalise(sql)
        elif kind == "B":
            _portal, name = _cstrings(payload, 2)
            self._bound = self._prepared.get(name, "?")
        elif kind == "E":
            tally.statements[self._bound] += 1
        elif kind == "S":
            tally.round_trips += 1


class CountingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.tally = Tally()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        frontend = _Frontend(self.tally)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, frontend.feed)),
            asyncio.create_task(self._pump(up_reader, writer, None)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        observe: Callable[[bytes], None] | None,
    ) -> None:
        while data := await reader.read(65536):
            if observe is not None:
                observe(data)
            writer.write(data)
            await writer.drain()
