"""The benchmark's mail ends: the bridge's SMTP relay as a timestamping sink, and an LMTP client
that delivers to the bridge the way the mail server does.

Both run in the benchmark's event loop, like the XMPP client and the reference network, so the
clock that stamps an arrival is the one that stamped the send.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import re
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser

from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.timing import Arrivals

_parser = BytesParser(policy=email.policy.default)


def _text_of(message: EmailMessage) -> str | None:
    part = message.get_body(preferencelist=("plain",))
    return None if part is None else str(part.get_content()).strip()


class TimedMailSink:
    """An SMTP server that accepts every mail, keeps it, and timestamps its plain-text body.

    The arrival time is read in ``handle_DATA``, when the final ``.`` of the mail has been
    received and before it is parsed; the sink answers ``250`` right after parsing.
    """

    def __init__(self) -> None:
        self.arrivals = Arrivals()
        self.mails: list[EmailMessage] = []
        self._server: asyncio.Server | None = None
        self._new_mail = asyncio.Event()
        self.port = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.perf_counter()
        raw = envelope.original_content or b""
        message = _parser.parsebytes(raw)
        assert isinstance(message, EmailMessage)
        self.mails.append(message)
        self._new_mail.set()
        text = _text_of(message)
        if text is not None:
            self.arrivals.arrived(text, now)
        return "250 2.0.0 OK"

    async def start(self) -> None:
        def factory() -> SMTP:
            return SMTP(self, decode_data=False, hostname="sink.bench.test", ident="bench sink")

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(
        self, match: Callable[[EmailMessage], bool], wait_seconds: float = 30
    ) -> EmailMessage:
        """The first mail the sink received (or receives within ``wait_seconds``) that matches."""
        async with asyncio.timeout(wait_seconds):
            while True:
                for message in self.mails:
                    if match(message):
                        return message
                self._new_mail.clear()
                await self._new_mail.wait()


class LmtpError(RuntimeError):
    pass


class _LmtpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> str:
        """One (possibly multi-line) reply; its last line."""
        while True:
            line = (await self.reader.readline()).decode(errors="replace").rstrip()
            if not line:
                raise LmtpError("the LMTP server closed the connection")
            if line[3:4] != "-":
                return line

    async def command(self, line: bytes, expect: str = "2") -> str:
        self.writer.write(line + b"\r\n")
        answer = await self.reply()
        if not answer.startswith(expect):
            raise LmtpError(f"{line[:40]!r} answered {answer}")
        return answer


class LmtpClient:
    """Delivers mails over LMTP on up to as many connections as there are concurrent sends,
    each kept open between mails (as an MTA's connection cache does under load). ``deliver``
    returns once the server has answered for the (single) recipient: the bridge answers only
    when the message is on the homeserver."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._idle: list[_LmtpConnection] = []

    async def _connect(self) -> _LmtpConnection:
        conn = _LmtpConnection(*await asyncio.open_connection(self.host, self.port))
        await conn.reply()  # greeting
        await conn.command(b"LHLO bench.agency.test")
        return conn

    async def deliver(self, message: EmailMessage, *, mail_from: str, rcpt_to: str) -> None:
        conn = self._idle.pop() if self._idle else await self._connect()
        try:
            await conn.command(b"MAIL FROM:<%s>" % mail_from.encode())
            await conn.command(b"RCPT TO:<%s>" % rcpt_to.encode())
            await conn.command(b"DATA", expect="354")
            data = message.as_bytes(policy=email.policy.SMTP)
            data = re.sub(rb"(?m)^\.", b"..", data)
            if not data.endswith(b"\r\n"):
                data += b"\r\n"
            await conn.command(data + b".", expect="250")
        except BaseException:
            conn.writer.close()
            raise
        self._idle.append(conn)

    async def close(self) -> None:
        for conn in self._idle:
            conn.writer.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
        self._idle.clear()
