"""International addresses out: SMTPUTF8 where the relay offers it, a clear refusal where not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.core import PermanentError
from bridge.email.outbound import NO_SMTPUTF8, Relay
from tests.email.test_relay import SENDER, _config

JUERGEN = "jürgen@xn--mller-kva.example"


class Utf8Relay:
    def __init__(self, smtputf8: bool) -> None:
        self.smtputf8 = smtputf8
        self.mails: list[tuple[str, list[str], list[str], bytes]] = []

    def protocol(self) -> SMTP:
        return SMTP(self, hostname="relay.test", enable_SMTPUTF8=self.smtputf8, decode_data=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.mail_from is not None
        raw = envelope.original_content or b""
        self.mails.append(
            (envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options), raw)
        )
        return "250 OK"


async def _relay_for(smtputf8: bool) -> AsyncIterator[tuple[Utf8Relay, Relay]]:
    fake = Utf8Relay(smtputf8)
    server = await asyncio.get_running_loop().create_server(fake.protocol, "127.0.0.1", 0)
    relay = Relay(_config(server.sockets[0].getsockname()[1]))
    yield fake, relay
    await relay.close()
    server.close()
    await server.wait_closed()


@pytest.fixture
async def utf8_relay() -> AsyncIterator[tuple[Utf8Relay, Relay]]:
    async for pair in _relay_for(True):
        yield pair


@pytest.fixture
async def ascii_relay() -> AsyncIterator[tuple[Utf8Relay, Relay]]:
    async for pair in _relay_for(False):
        yield pair


def _mail(*to: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = SENDER, ", ".join(to), "Grüße"
    mail.set_content("hallo\n")
    return mail


async def test_an_international_recipient_goes_out_with_smtputf8(
    utf8_relay: tuple[Utf8Relay, Relay],
) -> None:
    fake, relay = utf8_relay
    assert await relay.send(_mail(JUERGEN), sender=SENDER, recipients=[JUERGEN]) == {}
    [(_, rcpts, options, raw)] = fake.mails
    assert rcpts == [JUERGEN] and "SMTPUTF8" in options
    assert f"To: {JUERGEN}".encode() in raw  # RFC 6532: the header in UTF-8, not encoded words


async def test_an_international_address_in_the_headers_alone_is_sent_in_utf8(
    utf8_relay: tuple[Utf8Relay, Relay],
) -> None:
    fake, relay = utf8_relay
    await relay.send(
        _mail(JUERGEN, "bob@remote.test"), sender=SENDER, recipients=["bob@remote.test"]
    )
    [(_, _, options, raw)] = fake.mails
    assert "SMTPUTF8" in options and JUERGEN.encode() in raw


async def test_a_relay_without_smtputf8_refuses_only_the_international_recipients(
    ascii_relay: tuple[Utf8Relay, Relay],
) -> None:
    fake, relay = ascii_relay
    refused = await relay.send(
        _mail(JUERGEN, "bob@remote.test"), sender=SENDER, recipients=[JUERGEN, "bob@remote.test"]
    )
    assert refused == {JUERGEN: NO_SMTPUTF8}
    assert [rcpts for _, rcpts, _, _ in fake.mails] == [["bob@remote.test"]]


async def test_a_relay_without_smtputf8_and_only_international_recipients_is_a_clear_error(
    ascii_relay: tuple[Utf8Relay, Relay],
) -> None:
    fake, relay = ascii_relay
    with pytest.raises(PermanentError) as failed:
        await relay.send(_mail(JUERGEN), sender=SENDER, recipients=[JUERGEN])
    assert "SMTPUTF8" in failed.value.user_message and JUERGEN in failed.value.user_message
    assert fake.mails == []
