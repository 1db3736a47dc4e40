"""The listener the mail server delivers to: RCPT checks and one answer per recipient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from bridge.email.config import EmailConfig
from bridge.email.inbound import start_listener
from tests.e2e.process import free_port

ROOMS = {"a.aaaaaaaaaaaaaaaa@mail.test": "250 2.0.0 Delivered", "b.bbbbbbbbbbbbbbbb@mail.test": "451 4.3.0 Later"}  # fmt: skip
MAIL = b"From: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


class Rooms:
    """Answers like the gateway would: known rooms, a fixed answer per room."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.looked_up: list[str] = []
        self.peers: list[str | None] = []

    def sender_refusal(self, mail_from: str) -> str | None:
        if mail_from.endswith("@blocked.example"):
            return "550 5.7.1 Refused by the hub's federation policy: blocked.example"
        return None

    async def is_portal_address(self, address: str) -> bool:
        self.looked_up.append(address)
        return address in ROOMS

    async def receive(
        self, mail_from: str, recipients: list[str], raw: bytes, *, peer: str | None = None
    ) -> list[str]:
        self.received.append((mail_from, recipients, raw))
        self.peers.append(peer)
        return [ROOMS[r] for r in recipients]


def _config(protocol: str, port: int) -> EmailConfig:
    return EmailConfig(
        domain="mail.test", protocol=protocol, listen_host="127.0.0.1", listen_port=port,
        max_message_bytes=10_000, max_recipients=2, relay_host="127.0.0.1", relay_port=1,
        relay_security="none", relay_username="", relay_password="", relay_timeout=5,
        trusted_authserv_id="mx.test", sender_verification="dmarc", threads=True, strip_quotes=True,
    )  # fmt: skip


@pytest.fixture
async def listener() -> AsyncIterator[tuple[Rooms, int]]:
    rooms, port = Rooms(), free_port()
    server = await start_listener(rooms, _config("lmtp", port))
    yield rooms, port
    server.close()
    await server.wait_closed()


async def _session(port: int, *lines: bytes) -> list[str]:
    """Speak LMTP line by line; every answer line (multi-line answers joined)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []

    async def answer() -> str:
        parts = []
        while True:
            line = (await reader.readline()).decode().rstrip()
            parts.append(line)
            if line[3:4] != "-":
                return " | ".join(parts)

    await answer()  # greeting
    for line in lines:
        writer.write(line + b"\r\n")
        answers.append(await answer())
    writer.close()
    return answers


async def test_each_recipient_gets_its_own_answer_after_data(listener: tuple[Rooms, int]) -> None:
    rooms, port = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    for line in (b"LHLO mx.test", b"MAIL FROM:<bob@example.org>",
                 b"RCPT TO:<A.aaaaaaaaaaaaaaaa@MAIL.test>", b"RCPT TO:<b.bbbbbbbbbbbbbbbb@mail.test>", b"DATA"):  # fmt: skip
        writer.write(line + b"\r\n")
        while (await reader.readline())[3:4] == b"-":
            pass
    writer.write(MAIL + b".\r\n")
    first, second = (await reader.readline()).decode(), (await reader.readline()).decode()
    writer.close()
    assert first.startswith("250 ") and second.startswith("451 ")
    assert rooms.received[0][1] == ["a.aaaaaaaaaaaaaaaa@mail.test", "b.bbbbbbbbbbbbbbbb@mail.test"]
    assert rooms.peers == ["127.0.0.1"]  # who delivered: sender verification trusts only its MTA


async def test_recipients_are_checked_before_the_mail_is_accepted(
    listener: tuple[Rooms, int],
) -> None:
    rooms, port = listener
    answers = await _session(
        port,
        b"LHLO mx.test",
        b"MAIL FROM:<bob@example.org>",
        b"RCPT TO:<z.zzzzzzzzzzzzzzzz@mail.test>",
        b"RCPT TO:<a.aaaaaaaaaaaaaaaa@other.test>",
        b"RCPT TO:<not an address>",
        b"RCPT TO:<a.aaaaaaaaaaaaaaaa@mail.test>",
        b"RCPT TO:<b.bbbbbbbbbbbbbbbb@mail.test>",
        b"RCPT TO:<a.aaaaaaaaaaaaaaaa@mail.test>",
    )
    codes = [a[:9] for a in answers[2:]]
    assert codes == ["550 5.1.1", "550 5.1.2", "553 5.1.3", "250 2.1.5", "250 2.1.5", "452 4.5.3"]
    assert rooms.received == []


async def test_smtp_mode_defers_the_whole_mail_if_any_recipient_failed() -> None:
    rooms, port = Rooms(), free_port()
    server = await start_listener(rooms, _config("smtp", port))
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        with pytest.raises(aiosmtplib.SMTPDataError) as deferred:
            await smtp.sendmail("bob@example.org", list(ROOMS), MAIL)
        assert deferred.value.code == 451
        await smtp.quit()
    finally:
        server.close()
        await server.wait_closed()
    assert len(rooms.received) == 1


async def test_mail_over_the_size_limit_is_refused(listener: tuple[Rooms, int]) -> None:
    rooms, port = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    for line in (b"LHLO mx.test", b"MAIL FROM:<bob@example.org>", b"RCPT TO:<a.aaaaaaaaaaaaaaaa@mail.test>", b"DATA"):  # fmt: skip
        writer.write(line + b"\r\n")
        while (await reader.readline())[3:4] == b"-":
            pass
    writer.write(MAIL + (b"x" * 98 + b"\r\n") * 200 + b".\r\n")  # 20 kB, over the 10 kB limit
    answer = (await reader.readline()).decode()
    writer.close()
    assert answer.startswith("552"), answer
    assert rooms.received == []


class Broken(Rooms):
    """A gateway whose database is away: the lookup at RCPT, or everything after DATA."""

    def __init__(self, at: str) -> None:
        super().__init__()
        self.at = at

    async def is_portal_address(self, address: str) -> bool:
        if self.at == "rcpt":
            raise OSError("database is away")
        return True

    async def receive(self, mail_from: str, recipients: list[str], raw: bytes) -> list[str]:
        raise RuntimeError("unexpected")


@pytest.mark.parametrize("at", ["rcpt", "data"])
async def test_an_unexpected_failure_is_a_451_never_a_bounce(at: str) -> None:
    port = free_port()
    server = await start_listener(Broken(at), _config("lmtp", port))
    try:
        commands = [b"LHLO mx.test", b"MAIL FROM:<bob@example.org>",
                    b"RCPT TO:<a.aaaaaaaaaaaaaaaa@mail.test>"]  # fmt: skip
        if at == "data":
            commands += [b"DATA", MAIL + b"."]
        answers = await _session(port, *commands)
    finally:
        server.close()
        await server.wait_closed()
    assert answers[-1].startswith("451 4.3.0"), answers


async def test_a_sender_the_policy_refuses_is_refused_at_rcpt(
    listener: tuple[Rooms, int],
) -> None:
    """Refused before DATA, with the reason, and without learning which addresses are rooms."""
    rooms, port = listener
    answers = await _session(
        port, b"LHLO client", b"MAIL FROM:<eve@blocked.example>",
        b"RCPT TO:<a.aaaaaaaaaaaaaaaa@mail.test>", b"RCPT TO:<nobody.zzzzzzzzzzzzzzzz@mail.test>",
    )  # fmt: skip
    assert answers[2].startswith("550 5.7.1") and "federation policy" in answers[2]
    assert answers[3] == answers[2], "a stranger cannot probe which addresses exist"
    assert rooms.looked_up == [] and rooms.received == []
