"""The outgoing relay against a real SMTP server: sessions reused, bounded, expired and closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.core import PermanentError, TransientError
from bridge.email import outbound
from bridge.email.config import EmailConfig
from bridge.email.outbound import MAX_SESSIONS, Relay

SENDER = "room.aaaaaaaaaaaaaaaa@mail.test"


class FakeRelay:
    """aiosmtpd handler that records mails and counts the sessions it serves."""

    def __init__(self) -> None:
        self.port = 0
        self.mails: list[tuple[str, list[str]]] = []
        self.refusals: dict[str, str] = {}  # recipient -> RCPT answer
        self.data_delay = 0.0
        self.connections = 0
        self.open: set[SMTP] = set()
        self.peak = 0
        self.quits = 0
        self.quit_delay = 0.0

    def protocol(self) -> SMTP:
        self.connections += 1
        return _CountedSMTP(self)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if answer := self.refusals.get(address):
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.data_delay)
        assert envelope.mail_from is not None
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        await asyncio.sleep(self.quit_delay)
        return "221 Bye"

    def drop_all(self) -> None:
        """Hang up on every client, as a relay does with idle ones."""
        for server in self.open:
            assert server.transport is not None
            server.transport.close()


class _CountedSMTP(SMTP):
    def __init__(self, fake: FakeRelay) -> None:
        # A fixed hostname: the default looks up this host's FQDN, which can be slow.
        super().__init__(fake, hostname="relay.test", loop=asyncio.get_running_loop())
        self._fake = fake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._fake.open.add(self)
        self._fake.peak = max(self._fake.peak, len(self._fake.open))

    def connection_lost(self, error: Exception | None) -> None:
        self._fake.open.discard(self)
        super().connection_lost(error)


def _config(port: int) -> EmailConfig:
    return EmailConfig.from_section(
        {
            "domain": "mail.test",
            "inbound": {"protocol": "lmtp", "host": "127.0.0.1", "port": 1,
                        "max_message_mib": 1, "max_recipients": 10},
            "outbound": {"host": "127.0.0.1", "port": port, "security": "none",
                         "username": "", "password": "", "timeout": 2},
            "trusted_authserv_id": "mx.test",
            "sender_verification": "dmarc",
            "threads": True,
            "strip_quotes": True,
        }
    )  # fmt: skip


def _mail(subject: str = "hi") -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = SENDER, "bob@remote.test", subject
    mail.set_content("hello\n")
    return mail


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(1):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRelay]:
    fake = FakeRelay()
    server = await asyncio.get_running_loop().create_server(fake.protocol, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    yield fake
    fake.drop_all()
    server.close()
    await server.wait_closed()


@pytest.fixture
async def relay(fake: FakeRelay) -> AsyncIterator[Relay]:
    relay = Relay(_config(fake.port))
    yield relay
    await relay.close()


async def _send(relay: Relay, *recipients: str) -> dict[str, str]:
    return await relay.send(_mail(), sender=SENDER, recipients=list(recipients))


async def test_mails_in_a_row_share_one_session(fake: FakeRelay, relay: Relay) -> None:
    for _ in range(3):
        assert await _send(relay, "bob@remote.test") == {}
    assert fake.mails == [(SENDER, ["bob@remote.test"])] * 3
    assert fake.connections == 1
    assert fake.quits == 0


async def test_a_session_the_relay_dropped_is_replaced(fake: FakeRelay, relay: Relay) -> None:
    await _send(relay, "bob@remote.test")
    fake.drop_all()
    await _send(relay, "carol@remote.test")
    assert fake.mails == [(SENDER, ["bob@remote.test"]), (SENDER, ["carol@remote.test"])]
    assert fake.connections == 2


async def test_a_relay_that_stopped_is_transient_and_used_again_once_back() -> None:
    fake, loop = FakeRelay(), asyncio.get_running_loop()
    server = await loop.create_server(fake.protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = Relay(_config(port))
    try:
        await _send(relay, "bob@remote.test")  # leaves a session open, as before an outage
        server.close()
        fake.drop_all()
        await server.wait_closed()
        for _ in range(2):  # the kept session is gone, then nothing answers a new connection
            with pytest.raises(TransientError, match="not usable"):
                await _send(relay, "carol@remote.test")
        server = await loop.create_server(fake.protocol, "127.0.0.1", port)
        assert await _send(relay, "carol@remote.test") == {}
    finally:
        await relay.close()
        fake.drop_all()
        server.close()
        await server.wait_closed()
    assert fake.mails == [(SENDER, ["bob@remote.test"]), (SENDER, ["carol@remote.test"])]


@pytest.mark.parametrize(
    ("answer", "error"),
    [("550 5.1.1 No such user", PermanentError), ("450 4.2.1 Try later", TransientError)],
)
async def test_refused_recipients_raise_and_keep_the_session(
    fake: FakeRelay, relay: Relay, answer: str, error: type[Exception]
) -> None:
    fake.refusals = {"bob@remote.test": answer, "carol@remote.test": answer}
    with pytest.raises(error, match=answer[:3]):
        await _send(relay, "bob@remote.test", "carol@remote.test")
    await _send(relay, "dave@remote.test")
    assert fake.mails == [(SENDER, ["dave@remote.test"])]
    assert fake.connections == 1


async def test_a_partial_refusal_returns_the_refused_and_delivers_the_rest(
    fake: FakeRelay, relay: Relay
) -> None:
    fake.refusals = {"bob@remote.test": "550 5.1.1 No such user"}
    refused = await _send(relay, "bob@remote.test", "carol@remote.test")
    assert refused == {"bob@remote.test": "550 5.1.1 No such user"}
    assert fake.mails == [(SENDER, ["carol@remote.test"])]


async def test_concurrent_mails_use_at_most_max_sessions(fake: FakeRelay, relay: Relay) -> None:
    fake.data_delay = 0.02
    recipients = [f"user{i}@remote.test" for i in range(10)]
    await asyncio.gather(*(_send(relay, rcpt) for rcpt in recipients))
    assert sorted(rcpts[0] for _, rcpts in fake.mails) == sorted(recipients)
    assert fake.peak == MAX_SESSIONS
    assert fake.connections == MAX_SESSIONS


async def test_close_quits_the_idle_sessions(fake: FakeRelay, relay: Relay) -> None:
    fake.data_delay = 0.01
    await asyncio.gather(_send(relay, "bob@remote.test"), _send(relay, "carol@remote.test"))
    assert len(fake.open) == 2
    await relay.close()
    assert fake.quits == 2
    await _until(lambda: not fake.open)


async def test_an_idle_session_is_quit(
    fake: FakeRelay, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbound, "IDLE_SECONDS", 0.05)
    await _send(relay, "bob@remote.test")
    await _until(lambda: fake.quits == 1 and not fake.open)
    await _send(relay, "carol@remote.test")
    assert fake.connections == 2


async def test_reusing_a_session_restarts_its_idle_time(
    fake: FakeRelay, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbound, "IDLE_SECONDS", 0.5)  # 0.2 s of slack for a loaded machine
    await _send(relay, "bob@remote.test")
    await asyncio.sleep(0.3)
    await _send(relay, "carol@remote.test")
    await asyncio.sleep(0.3)  # past the first mail's timer, within the second's
    assert fake.quits == 0
    await _send(relay, "dave@remote.test")
    assert fake.connections == 1


async def test_close_does_not_wait_long_for_a_relay_that_stopped_answering(
    fake: FakeRelay, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbound, "CLOSE_SECONDS", 0.1)
    await _send(relay, "bob@remote.test")
    fake.quit_delay = 1.5  # within the session timeout (2 s): only CLOSE_SECONDS ends the wait
    loop = asyncio.get_running_loop()
    began = loop.time()
    await relay.close()
    assert loop.time() - began < 1.0
    await _until(lambda: not fake.open)  # the session was closed all the same
