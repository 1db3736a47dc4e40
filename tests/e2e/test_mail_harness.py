"""The mail test harness itself: a real Postfix and Dovecot, and a stand-in for the bridge's LMTP.

The bridge's side is played by aiosmtpd's ``LMTP`` on ``mail_servers.bridge_lmtp_port``. It
sends one reply after DATA, which is right only for one recipient per transaction, so every
message here has one recipient at the bridge's domain.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage, Message

import pytest
import pytest_asyncio
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e.mail import MailServers, mail_servers_missing
from tests.e2e.mail_client import parse_message

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(mail_servers_missing() is not None, reason=str(mail_servers_missing())),
]

_serial = itertools.count()


class BridgeInbox:
    """Records what Postfix delivers to the bridge's domain; answers 451 to the first
    ``defer[address]`` attempts to deliver to an address."""

    def __init__(self) -> None:
        self.defer: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        (rcpt,) = envelope.rcpt_tos
        self.attempts[rcpt] += 1
        if self.attempts[rcpt] <= self.defer[rcpt]:
            return "451 4.3.0 Bridge busy, try again later"
        self.envelopes.append(envelope)
        return "250 2.0.0 Delivered to the bridge"

    async def wait_for(self, match: Callable[[Envelope], bool], timeout: float = 10) -> Envelope:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for envelope in self.envelopes:
                if match(envelope):
                    return envelope
            await asyncio.sleep(0.05)
        raise AssertionError(f"the bridge received no matching mail: {self.envelopes}")


@pytest_asyncio.fixture
async def bridge_inbox(mail_servers: MailServers) -> AsyncIterator[BridgeInbox]:
    inbox = BridgeInbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: LMTP(inbox, loop=loop),
        "127.0.0.1",
        mail_servers.bridge_lmtp_port,
        reuse_address=True,
    )
    try:
        yield inbox
    finally:
        server.close()
        await server.wait_closed()


def _users(mail_servers: MailServers) -> tuple[str, str]:
    n = next(_serial)
    return (
        mail_servers.add_user(f"alice{n}@agency.test", "pw-a"),
        mail_servers.add_user(f"bob{n}@agency.test", "pw-b"),
    )


def _message(sender: str, to: str, subject: str, body: str = "Hello.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def _parsed(envelope: Envelope) -> EmailMessage:
    return parse_message(envelope.original_content or b"")


def _delivery_status(report: EmailMessage) -> dict[str, str]:
    """The per-recipient fields of a DSN (RFC 3464), e.g. {"status": "5.1.1", ...}."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    part = next(p for p in report.iter_parts() if p.get_content_type() == "message/delivery-status")
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    recipient = next(b for b in blocks if isinstance(b, Message) and "Status" in b)
    return {key.lower(): str(value) for key, value in recipient.items()}


async def test_mail_between_agency_users(mail_servers: MailServers) -> None:
    alice, bob = _users(mail_servers)
    subject = "Lunch on Friday? — café at noon"
    refused = await mail_servers.send(
        _message(alice, bob, subject, "See you there.\n"), mail_from=alice, rcpt_to=[bob]
    )
    assert refused == {}
    got = await mail_servers.wait_for_mail(bob, "pw-b")
    assert got["Subject"] == subject
    assert got["From"] == alice
    body = got.get_body(("plain",))
    assert body is not None and body.get_content() == "See you there.\n"
    assert "Received" in got  # it really went through Postfix
    # The same caller does not get the same message twice; all_mail shows everything.
    with pytest.raises(AssertionError, match="no new mail"):
        await mail_servers.wait_for_mail(bob, "pw-b", timeout=0.3)
    assert [m["Subject"] for m in await mail_servers.all_mail(bob, "pw-b")] == [subject]


async def test_unknown_agency_user_bounces_to_sender(mail_servers: MailServers) -> None:
    alice, _bob = _users(mail_servers)
    subject = f"To nobody {next(_serial)}"
    # Accepted at RCPT time: Dovecot rejects the user at LMTP and Postfix sends a DSN.
    refused = await mail_servers.send(
        _message(alice, "nobody@agency.test", subject),
        mail_from=alice,
        rcpt_to=["nobody@agency.test"],
    )
    assert refused == {}
    dsn = await mail_servers.wait_for_mail(
        alice, "pw-a", match=lambda m: m.get_content_type() == "multipart/report"
    )
    status = _delivery_status(dsn)
    assert status["status"] == "5.1.1"
    assert status["action"] == "failed"
    assert "nobody@agency.test" in status["final-recipient"]
    assert subject in dsn.as_string()  # the returned headers of the original


async def test_bridge_domain_goes_to_the_bridge_over_lmtp(
    mail_servers: MailServers, bridge_inbox: BridgeInbox
) -> None:
    alice, _bob = _users(mail_servers)
    rcpt = f"x{next(_serial)}@{mail_servers.bridge_domain}"
    await mail_servers.send(
        _message(alice, rcpt, "For the bridge"), mail_from=alice, rcpt_to=[rcpt]
    )
    envelope = await bridge_inbox.wait_for(lambda e: e.rcpt_tos == [rcpt])
    assert envelope.mail_from == alice
    assert _parsed(envelope)["Subject"] == "For the bridge"


async def test_bridge_4xx_is_retried_and_delivered(
    mail_servers: MailServers, bridge_inbox: BridgeInbox
) -> None:
    alice, _bob = _users(mail_servers)
    rcpt = f"retry{next(_serial)}@{mail_servers.bridge_domain}"
    bridge_inbox.defer[rcpt] = 1
    await mail_servers.send(_message(alice, rcpt, "Try again"), mail_from=alice, rcpt_to=[rcpt])
    # The harness's short backoff makes Postfix retry within seconds; 15 s is only a deadline.
    await bridge_inbox.wait_for(lambda e: e.rcpt_tos == [rcpt], timeout=15)
    assert bridge_inbox.attempts[rcpt] == 2
    for _ in range(40):  # the queue manager removes the message right after the 250
        if not [q for q in mail_servers.queue() if q["sender"] == alice]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"still queued: {mail_servers.queue()}")


async def test_bounce_for_a_bridge_sender_goes_to_the_bridge(
    mail_servers: MailServers, bridge_inbox: BridgeInbox
) -> None:
    sender = f"puppet{next(_serial)}@{mail_servers.bridge_domain}"
    await mail_servers.send(
        _message(sender, "nobody@agency.test", "From the bridge"),
        mail_from=sender,
        rcpt_to=["nobody@agency.test"],
    )
    envelope = await bridge_inbox.wait_for(lambda e: e.rcpt_tos == [sender])
    assert envelope.mail_from == "<>"  # a DSN's null sender, as aiosmtpd spells it
    status = _delivery_status(_parsed(envelope))
    assert status["status"] == "5.1.1"
